"""`culture-neurons`: one subcommand per stage of the workflow's DAG (the rules call these)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("culture_neurons")


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def cmd_make_demo(args: argparse.Namespace) -> None:
    from culture_neurons.demo.generate import generate_demo_dataset

    summary = generate_demo_dataset(
        Path(args.spec),
        Path(args.out),
        seed=args.seed,
        test_items_per_pair=args.test_items_per_pair,
        train_items_per_pair=args.train_items_per_pair,
        image_size=args.image_size,
    )
    log.info("demo dataset written to %s: %s", args.out, json.dumps(summary, default=str)[:500])


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from culture_neurons.prepare import DatasetConfig, prepare_dataset

    config = DatasetConfig(
        name=args.name,
        source=args.source,
        local_dir=_none_if_empty(args.local_dir),
        files=args.files,
        train_files=_none_if_empty(args.train_files),
        hub_id=_none_if_empty(args.hub_id),
        revision=_none_if_empty(args.revision),
        language=args.language,
        grouping=args.grouping,
        unknown_pair=args.unknown_pair,
        split_seed=args.split_seed,
        labels_file=_none_if_empty(args.labels_file),
    )
    report = prepare_dataset(config, args.out_dir)
    log.info(
        "%d items in %d cultures; label mode %s; %d rows excluded",
        report["items"],
        len(report["cultures"]),
        report["label_mode"],
        report["excluded_total"],
    )


def _add_make_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-demo", help="generate the synthetic demo dataset (CVQA schema)")
    p.add_argument("--spec", required=True, help="resources/demo/cultures.yaml")
    p.add_argument("--out", required=True, help="output folder (gets data/*.parquet)")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--test-items-per-pair", type=int, default=64)
    p.add_argument("--train-items-per-pair", type=int, default=320)
    p.add_argument("--image-size", type=int, default=112)
    p.set_defaults(func=cmd_make_demo)


def _add_prepare_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare-data", help="CVQA rows -> items.parquet + data report")
    p.add_argument("--name", required=True, help="dataset name (results/data/NAME)")
    p.add_argument("--source", choices=["local", "hub"], required=True)
    p.add_argument("--local-dir", default="", help="folder holding the parquet shards")
    p.add_argument("--files", default="data/test-*.parquet", help="shard glob under --local-dir")
    p.add_argument("--train-files", default="", help="glob of a train portion (demo only)")
    p.add_argument("--hub-id", default="", help="datasets.load_dataset id, e.g. afaji/cvqa")
    p.add_argument("--revision", default="", help="pinned hub revision (commit hash)")
    p.add_argument("--language", choices=["english", "native"], default="english")
    p.add_argument("--grouping", required=True, help="TSV: country, language, culture")
    p.add_argument("--unknown-pair", choices=["error", "own_group"], default="error")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--labels-file", default="", help="item ID -> label (csv/tsv/json)")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_prepare_data)


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_make_demo,
    _add_prepare_data,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culture-neurons", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in PARSER_BUILDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from culture_neurons.errors import InputError

    try:
        args.func(args)
    except InputError as err:
        # Known input problems get one clear line, not a traceback; bugs still raise.
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
