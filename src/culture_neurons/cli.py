"""`culture-neurons`: one subcommand per stage of the workflow's DAG (the rules call these)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from culture_neurons.errors import InputError

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


def cmd_record(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.models import load_adapter
    from culture_neurons.record import (
        baseline_table_from_store,
        evaluation_baseline,
        record_identification,
        split_rows,
        store_attrs,
    )
    from culture_neurons.split import EVALUATION, IDENTIFICATION

    items = pd.read_parquet(args.items)
    fingerprint = json.loads(Path(args.data_report).read_text())["fingerprint"]
    adapter = load_adapter(model_spec_from_config(json.loads(args.model)))
    log.info(
        "loaded %s: %d layers x %d neurons", args.model_name, adapter.n_layers, adapter.n_neurons
    )
    identification = split_rows(items, IDENTIFICATION)
    store, timings = record_identification(
        adapter,
        identification,
        args.store,
        batch_size=args.batch_size,
        chunk_batches=args.chunk_batches,
        max_new_tokens=args.max_new_tokens,
        attrs=store_attrs(adapter, fingerprint, args.model_name),
    )
    baseline_dir = Path(args.baseline_dir)
    baseline_dir.mkdir(parents=True, exist_ok=True)
    baseline_table_from_store(store, identification).to_parquet(
        baseline_dir / f"{IDENTIFICATION}.parquet", index=False
    )
    evaluation = evaluation_baseline(
        adapter,
        split_rows(items, EVALUATION),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
    )
    evaluation.to_parquet(baseline_dir / f"{EVALUATION}.parquet", index=False)
    log.info(
        "recorded %d items (model %.1f s, store writes %.2f s); evaluation baseline %d items",
        len(identification),
        timings["model_s"],
        timings["write_s"],
        len(evaluation),
    )


def cmd_train_demo(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.demo.model import train_demo_model
    from culture_neurons.engine import answer_all
    from culture_neurons.models import load_adapter
    from culture_neurons.split import EVALUATION

    items = pd.read_parquet(args.items)
    train = pd.read_parquet(args.train_items)
    if train.empty:
        raise InputError(f"{args.train_items} has no items: the demo model needs a train portion")
    settings = json.loads(args.settings) if args.settings else {}
    summary = train_demo_model(train, items, args.out, settings)
    log.info("trained in %.1f s (final loss %.3f)", summary["train_s"], summary["final_loss"])
    # Evaluated through the same loading path as any hub model.
    adapter = load_adapter({"family": "qwen2_5_vl", "path": args.out, "dtype": "float32"})
    evaluation = items[items["split"] == EVALUATION].reset_index(drop=True)
    answers = answer_all(adapter, evaluation, batch_size=32, max_new_tokens=8, desc="evaluate")
    summary["evaluation_items"] = len(answers)
    summary["evaluation_accuracy"] = round(float(answers["correct"].mean()), 4)
    summary["evaluation_accuracy_per_culture"] = (
        answers.groupby("culture")["correct"].mean().round(4).to_dict()
    )
    Path(args.report).write_text(json.dumps(summary, indent=2) + "\n")
    log.info(
        "demo model accuracy on the evaluation split: %.1f%% (chance 25%%)",
        100 * summary["evaluation_accuracy"],
    )


def model_spec_from_config(entry: dict) -> dict:
    """A `models:` config entry as the adapter spec (workflow-only keys dropped)."""
    spec = {
        key: entry[key]
        for key in ("family", "path", "revision", "dtype", "device_map", "token_scope")
        if entry.get(key) is not None
    }
    if entry.get("model_class"):
        spec["model_class"] = entry["model_class"]
    if entry.get("processor"):
        spec["processor_kwargs"] = entry["processor"]
    return spec


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


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="baseline answers + activation statistics (identification split)"
    )
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--data-report", required=True, help="its report.json (for the fingerprint)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model", required=True, help="the models: entry as JSON")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-batches", type=int, default=4, help="batches per store chunk")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--baseline-dir", required=True, help="results/{model}/baseline")
    p.set_defaults(func=cmd_record)


def _add_train_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-demo", help="train the demo VLM on the demo's train portion")
    p.add_argument("--items", required=True, help="results/data/demo/items.parquet")
    p.add_argument("--train-items", required=True, help="results/data/demo/train_items.parquet")
    p.add_argument("--settings", default="", help="demo_training settings as JSON")
    p.add_argument("--out", required=True, help="model folder (save_pretrained)")
    p.add_argument("--report", required=True, help="training + evaluation summary (JSON)")
    p.set_defaults(func=cmd_train_demo)


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_make_demo,
    _add_prepare_data,
    _add_train_demo,
    _add_record,
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
    try:
        args.func(args)
    except InputError as err:
        # Known input problems get one clear line, not a traceback; bugs still raise.
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
