"""`culture-neurons`: one subcommand per stage of the workflow's DAG (the rules call these)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from culture_neurons.errors import InputError

log = logging.getLogger("culture_neurons")


def _adaptive_ceiling(args: argparse.Namespace) -> int | None:
    """``--max-batch-size``, checked before a model loads; 0 keeps ``--batch-size`` fixed."""
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.max_batch_size == 0:
        return None
    if args.max_batch_size < args.batch_size:
        raise InputError(
            f"--max-batch-size {args.max_batch_size} is below --batch-size {args.batch_size} "
            "(0 keeps the batch size fixed)"
        )
    return args.max_batch_size


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

    ceiling = _adaptive_ceiling(args)
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
        chunk_items=args.chunk_items,
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
        max_batch_size=ceiling,
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
    from culture_neurons.record import split_rows
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
    evaluation = split_rows(items, EVALUATION)
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


def cmd_select(args: argparse.Namespace) -> None:
    import numpy as np

    from culture_neurons.aggregate import aggregate
    from culture_neurons.masks import ALL_CULTURES, write_masks
    from culture_neurons.selectors import is_culture_independent, select
    from culture_neurons.store import open_store

    store = open_store(args.store)
    params = json.loads(args.params) if args.params else {}
    method = params.pop("method", args.selector.split("-")[0])
    agg = aggregate(store, only_correct=not args.all_items)
    cultures = list(agg.cultures)
    # A culture without correctly answered items has no statistics: it gets an empty mask (its
    # ablation equals the baseline) and is named in the log and the report, never a crash.
    scorable = agg.tokens > 0
    unscorable = [c for c, ok in zip(cultures, scorable, strict=True) if not ok]
    if unscorable:
        log.warning("no correctly answered items for %s: empty masks", ", ".join(unscorable))
    if scorable.sum() < 2 and not is_culture_independent(method):
        raise InputError(
            f"only {int(scorable.sum())} culture(s) have correctly answered items; "
            "a culture-specific selector needs at least two to compare"
        )
    start = time.perf_counter()
    selected = np.zeros(agg.fire_count.shape, dtype=bool)
    if is_culture_independent(method):
        selected[:] = select(
            method, agg.fire_count, agg.pos_sum, np.maximum(agg.tokens, 1), ratio=args.ratio,
            **params,
        )  # fmt: skip
    else:
        selected[scorable] = select(
            method, agg.fire_count[scorable], agg.pos_sum[scorable], agg.tokens[scorable],
            ratio=args.ratio, **params,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    if is_culture_independent(method):
        selected, cultures = selected[:1], [ALL_CULTURES]
    attrs = {
        "selector": args.selector,
        "method": method,
        "params": params,
        "ratio": args.ratio,
        "store_fingerprint": store.group.attrs.get("dataset_fingerprint"),
        "model": store.group.attrs.get("model"),
        "correct_filter": agg.correct_filter,
        "thin_cultures": agg.thin_cultures,
        "unscorable_cultures": unscorable,
    }
    write_masks(args.out, selected, cultures, attrs)
    counts = selected.sum(axis=(1, 2))
    report = {
        **attrs,
        "seconds": round(seconds, 3),
        "selected_per_culture": dict(zip(cultures, counts.tolist(), strict=True)),
        "selected_per_layer": dict(zip(cultures, selected.sum(axis=2).tolist(), strict=True)),
        "items_used": dict(zip(agg.cultures, agg.items_used.tolist(), strict=True)),
        "items_total": dict(zip(agg.cultures, agg.items_total.tolist(), strict=True)),
    }
    Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    log.info(
        "%s: %s neurons per culture in %.2f s (%d layers x %d neurons)",
        args.selector,
        sorted(set(np.asarray(counts).tolist())),
        seconds,
        selected.shape[1],
        selected.shape[2],
    )


def cmd_ablate(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.engine import answer_masked
    from culture_neurons.masks import keep_masks, read_masks
    from culture_neurons.models import load_adapter
    from culture_neurons.record import split_rows
    from culture_neurons.split import EVALUATION

    ceiling = _adaptive_ceiling(args)
    selected, cultures, _ = read_masks(args.masks)
    sources = cultures if args.sources == ["all"] else args.sources
    keep = keep_masks(selected, sources, cultures)
    items = split_rows(pd.read_parquet(args.items), EVALUATION)
    adapter = load_adapter(model_spec_from_config(json.loads(args.model)))
    if keep.shape[1:] != (adapter.n_layers, adapter.n_neurons):
        raise InputError(
            f"mask shape {tuple(keep.shape[1:])} does not fit the model's "
            f"{adapter.n_layers} x {adapter.n_neurons} decoder-MLP neurons"
        )
    tables = answer_masked(
        adapter,
        items,
        keep,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        desc=f"ablate {','.join(sources)}",
        max_batch_size=ceiling,
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, table in zip(sources, tables, strict=True):
        table.insert(0, "source", source)
        table.to_parquet(out_dir / f"{source}.parquet", index=False)
        log.info("%s: %d items answered with its neurons off", source, len(table))


def cmd_matrices(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.metrics import (
        ablation_matrix,
        read_ablations,
        self_cross_summary,
        write_matrix,
        write_summary,
    )

    baseline = pd.read_parquet(args.baseline)
    matrix = ablation_matrix(
        baseline, read_ablations(args.ablations), n_boot=args.n_boot, seed=args.seed
    )
    matrix.insert(0, "selector", args.selector)
    summary = self_cross_summary(matrix, n_boot=args.n_boot, seed=args.seed)
    write_matrix(matrix, args.out)
    write_summary(summary, args.summary_out)
    log.info("%s: %d source x target cells", args.selector, len(matrix))


def cmd_figures(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.figures import plot_ablation_heatmaps, plot_layer_distribution
    from culture_neurons.masks import read_masks

    matrix = pd.read_parquet(args.matrix)
    selected, cultures, attrs = read_masks(args.masks)
    title = f"{args.model}: {args.selector}"
    paths = plot_ablation_heatmaps(matrix, title, args.heatmap_prefix)
    paths += plot_layer_distribution(
        selected, cultures, f"{title} (ratio {attrs.get('ratio')})", args.layers_prefix
    )
    log.info("wrote %s", ", ".join(map(str, paths)))


def cmd_baseline_figure(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.figures import plot_baseline_accuracy
    from culture_neurons.metrics import baseline_accuracy

    tables = []
    for spec in args.baselines:
        model, ident, evaluation = spec.split("=", 1)[0], *spec.split("=", 1)[1].split(",")
        table = baseline_accuracy(pd.read_parquet(ident), pd.read_parquet(evaluation))
        table.insert(0, "model", model)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.table, index=False)
    log.info("wrote %s", ", ".join(map(str, plot_baseline_accuracy(table, args.out_prefix))))


def cmd_bench(args: argparse.Namespace) -> None:
    from culture_neurons.bench import run_bench

    result = run_bench(args.device, Path(args.out), store=Path(args.store) if args.store else None)
    log.info(
        "engine %.2f items/s, naive %.2f (%.1fx), record overhead %.3f, agreement %.4f",
        result["masked_items_per_s"],
        result["naive_items_per_s"],
        result["speedup_vs_naive"],
        result["record_overhead"],
        result["answer_agreement"],
    )
    print((Path(args.out) / "bench.md").read_text())


def cmd_summary(args: argparse.Namespace) -> None:
    import pandas as pd

    from culture_neurons.tables import table2, write_table2

    summaries = {}
    for spec in args.summaries:
        key, path = spec.split("=", 1)
        model, selector = key.split(":", 1)
        summaries[(model, selector)] = pd.read_parquet(path)
    paths = write_table2(table2(summaries), args.out_prefix)
    log.info("wrote %s", ", ".join(map(str, paths)))


def model_spec_from_config(entry: dict) -> dict:
    """A `models:` config entry as the adapter spec (workflow-only keys dropped)."""
    spec = {
        key: entry[key]
        for key in ("family", "path", "revision", "dtype", "device_map", "gpus", "token_scope")
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


def _add_batch_size_args(p: argparse.ArgumentParser) -> None:
    """The batch flags of the subcommands that answer with a model (see `_adaptive_ceiling`)."""
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--max-batch-size",
        type=int,
        default=0,
        help="on CUDA, let batches grow beyond --batch-size up to this many rows as free memory "
        "allows (measured on earlier batches); 0: the batch size stays fixed",
    )


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="baseline answers + activation statistics (identification split)"
    )
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--data-report", required=True, help="its report.json (for the fingerprint)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model", required=True, help="the models: entry as JSON")
    _add_batch_size_args(p)
    p.add_argument("--chunk-batches", type=int, default=4, help="batches per store chunk")
    p.add_argument(
        "--chunk-items",
        type=int,
        default=None,
        help="items per store chunk (default: batch size x chunk batches); the workflow fixes it "
        "so that a retry with a smaller batch resumes the partial store",
    )
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


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="score neurons with one selector -> masks")
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--selector", required=True, help="selector instance name (e.g. lap, rnd-s0)")
    p.add_argument("--params", default="", help="its parameters as JSON (may name a method)")
    p.add_argument("--ratio", type=float, required=True, help="share of all neurons per culture")
    p.add_argument("--all-items", action="store_true", help="no correctness filter")
    p.add_argument("--out", required=True, help="results/{model}/masks/{selector}.zarr")
    p.add_argument("--report", required=True, help="selection summary (JSON)")
    p.set_defaults(func=cmd_select)


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="answer the evaluation split with neurons deactivated")
    p.add_argument("--items", required=True)
    p.add_argument("--model", required=True, help="the models: entry as JSON")
    p.add_argument("--masks", required=True, help="results/{model}/masks/{selector}.zarr")
    p.add_argument("--sources", nargs="+", default=["all"], help="source cultures (or all)")
    _add_batch_size_args(p)
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--out-dir", required=True, help="results/{model}/ablations/{selector}")
    p.set_defaults(func=cmd_ablate)


def _add_matrices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrices", help="source x target accuracy change and flip rate")
    p.add_argument("--baseline", required=True, help="results/{model}/baseline/evaluation.parquet")
    p.add_argument("--ablations", nargs="+", required=True, help="ablations/{selector}/*.parquet")
    p.add_argument("--selector", required=True)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--out", required=True, help="results/{model}/matrices/{selector}.parquet")
    p.add_argument("--summary-out", required=True, help="self / cross / gap table (parquet)")
    p.set_defaults(func=cmd_matrices)


def _add_figures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="heatmaps and layer distribution of one selector")
    p.add_argument("--model", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--matrix", required=True)
    p.add_argument("--masks", required=True)
    p.add_argument("--heatmap-prefix", required=True)
    p.add_argument("--layers-prefix", required=True)
    p.set_defaults(func=cmd_figures)


def _add_baseline_figure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline-figure", help="unmasked accuracy per culture and split")
    p.add_argument(
        "--baselines", nargs="+", required=True, help="MODEL=IDENT.parquet,EVAL.parquet ..."
    )
    p.add_argument("--table", required=True, help="CSV of the plotted values")
    p.add_argument("--out-prefix", required=True)
    p.set_defaults(func=cmd_baseline_figure)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the engine, recording, selectors and store")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    p.add_argument(
        "--store",
        default="results/demo-qwen25vl-tiny/activations.zarr",
        help="activation store whose size to report (the demo's by default)",
    )
    p.set_defaults(func=cmd_bench)


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="the paper's Table 2 over models and selectors")
    p.add_argument(
        "--summaries", nargs="+", required=True, help="MODEL:SELECTOR=summary.parquet ..."
    )
    p.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, .md and .tex")
    p.set_defaults(func=cmd_summary)


PARSER_BUILDERS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_make_demo,
    _add_prepare_data,
    _add_train_demo,
    _add_record,
    _add_select,
    _add_ablate,
    _add_matrices,
    _add_figures,
    _add_baseline_figure,
    _add_summary,
    _add_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culture-neurons", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
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
    if args.threads > 0:
        # Snakemake runs jobs side by side; torch's default of one thread per core each would
        # oversubscribe the CPU, and OpenMP spinning then slows every job several-fold.
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except InputError as err:
        # Known input problems get one clear line, not a traceback; bugs still raise.
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
