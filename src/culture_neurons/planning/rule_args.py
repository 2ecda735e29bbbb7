"""The rules' command-line arguments, formatted from the plan (shell-quoted where free text).

Each function returns the text a rule's ``params`` puts into its ``culture-neurons`` command;
the paths come from `layout`, the values from the validated config (defaults in the schema).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping
from typing import Any

from culture_neurons.planning import layout
from culture_neurons.planning.plan import Plan
from culture_neurons.selection.conventions import ALL_CULTURES


def as_json(value: Any) -> str:
    """A value as one shell word of sorted-key JSON (the rules' --model, --params, ...)."""
    return shlex.quote(json.dumps(value, sort_keys=True))


def named(pairs: Iterable[tuple[str, str]]) -> str:
    """``NAME=PATH`` words of the analysis subcommands."""
    return " ".join(f"{name}={path}" for name, path in pairs)


def prepare_data(plan: Plan, task: str = "") -> str:
    """The dataset section as flags: every value that shapes items.parquet. A task's
    (prepare-task) reads the task's files, with the dataset's other settings and no train
    portion."""
    dataset: Mapping[str, Any] = plan.dataset
    if task:
        dataset = {**dataset, "files": plan.extra_tasks()[task], "train_files": None}
    flags = {
        "name": dataset["name"],
        "kind": dataset["kind"],
        "source": dataset["source"],
        "local-dir": dataset.get("local_dir") or "",
        "files": dataset["files"],
        "train-files": dataset.get("train_files") or "",
        "hub-id": dataset.get("hub_id") or "",
        "revision": dataset.get("revision") or "",
        "hub-config": dataset.get("hub_config") or "",
        "hub-split": dataset["hub_split"],
        "language": dataset["language"],
        "grouping": dataset.get("grouping") or "",
        "columns": json.dumps(dataset.get("columns") or {}, sort_keys=True),
        "unknown-pair": dataset["unknown_pair"],
        "split-seed": dataset["split_seed"],
        "labels-file": dataset.get("labels_file") or "",
    }
    return " ".join(f"--{key} {shlex.quote(str(value))}" for key, value in flags.items())


def make_demo(plan: Plan) -> str:
    demo = plan.dataset["demo"]
    return (
        f"--spec {demo['spec']} --seed {demo['seed']} "
        f"--test-items-per-pair {demo['test_items_per_pair']} "
        f"--train-items-per-pair {demo['train_items_per_pair']} "
        f"--image-size {demo['image_size']} "
        f"--control-test-items-per-pair {demo['control_test_items_per_pair']} "
        f"--control-train-items-per-pair {demo['control_train_items_per_pair']}"
    )


def prepare_checkpoint(plan: Plan, model: str) -> str:
    source = plan.model(model)["gguf"]
    if source.get("file"):
        return f"--file {shlex.quote(source['file'])}"
    return f"--package {shlex.quote(source['package'])}"


def download_model(plan: Plan, model: str) -> str:
    entry = plan.model(model)
    return (
        f"--repo-id {shlex.quote(str(entry['path']))}"
        f" --revision {shlex.quote(str(entry.get('revision') or 'main'))}"
    )


def download_dataset(plan: Plan) -> str:
    """The dataset's repo at its revision; its split is cached for offline compute nodes."""
    dataset = plan.dataset
    split = "test" if dataset["kind"] == "cvqa" else dataset["hub_split"]
    args = (
        f"--repo-id {shlex.quote(dataset['hub_id'])}"
        f" --revision {shlex.quote(str(dataset.get('revision') or 'main'))}"
        f" --split {shlex.quote(split)}"
    )
    if dataset.get("hub_config"):
        args += f" --hub-config {shlex.quote(dataset['hub_config'])}"
    return args


def attribute_tasks(tasks: Mapping[str, str]) -> str:
    """``--control-items PATH --exclusion-items PATH`` of the tasks among ``tasks``' keys (a
    rule's named input: ``in`` on it would look at its values)."""
    given = tasks.keys()
    return " ".join(f"--{t}-items {tasks[t]}" for t in ("control", "exclusion") if t in given)


def control_effect(plan: Plan, masks: list[str], ablations: list[str]) -> str:
    selectors = plan.control_effect_selectors
    tables = [f"{path}/{ALL_CULTURES}.parquet" for path in ablations]
    masks_arg = named(zip(selectors, masks, strict=True))
    return f"--masks {masks_arg} --ablations {named(zip(selectors, tables, strict=True))}"


def overlap(plan: Plan, masks: list[str], matrices: list[str]) -> str:
    return (
        f"--masks {named(zip(plan.decoder_selectors, masks, strict=True))}"
        f" --matrices {named(zip(plan.culture_specific_selectors, matrices, strict=True))}"
    )


def atlas(plan: Plan, masks: list[str], summaries: list[str]) -> str:
    """The atlas's selectors' mask stores and matrices summaries, as NAME=PATH arguments."""
    selectors = plan.atlas_selectors
    return (
        f"--masks {named(zip(selectors, masks, strict=True))}"
        f" --summaries {named(zip(selectors, summaries, strict=True))}"
    )


def ratios(plan: Plan) -> str:
    return " ".join(f"{r:g}" for r in plan.ratios)


def ablation_tables(plan: Plan, selector: str, folder: str) -> str:
    """The ablate job of a model x selector writes one table per source culture."""
    return " ".join(f"{folder}/{source}.parquet" for source in plan.sources_of(selector))


def sweep_tables(plan: Plan, selector: str, folders: list[str]) -> str:
    """The ablate job's tables at the ratios other than the headline."""
    return " ".join(
        f"{folder}/{source}.parquet" for folder in folders for source in plan.sources_of(selector)
    )


def baselines(plan: Plan) -> str:
    return " ".join(
        f"{m}={layout.baseline(m, 'identification')},{layout.baseline(m, 'evaluation')}"
        for m in plan.model_names
    )


def summary_specs(plan: Plan, kind: str) -> str:
    """``MODEL:SELECTOR=PATH`` of the headline tables (summary, significance)."""
    return " ".join(f"{m}:{s}={path}" for (m, s), path in plan.summary_paths(kind).items())


def sweep_specs(plan: Plan, kind: str) -> str:
    """``MODEL:SELECTOR=PATH`` of the every-ratio tables (summary, significance)."""
    return " ".join(f"{m}:{s}={path}" for (m, s, _), path in plan.sweep_paths(kind).items())
