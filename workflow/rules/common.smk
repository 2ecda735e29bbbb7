# What the snakemake-workflows anchors keep here: the config read and validated, the plan built
# once (culture_neurons.planning), wildcard constraints and thin input / param functions. The
# planning itself, the checks and every results/ path live in the package, tested without
# Snakemake: planning/plan.py, planning/config.py, planning/layout.py, planning/rule_args.py.
import os
import re

from snakemake.logging import logger
from snakemake.utils import update_config, validate

from culture_neurons.ablation.conditions import HEADLINE
from culture_neurons.planning import layout, rule_args
from culture_neurons.planning.config import check_config
from culture_neurons.planning.plan import Plan

# envs/*.post-deploy.sh install this checkout into each rule kind's conda environment (a
# checkout at another path on the compute nodes can be named by setting the variable).
os.environ.setdefault("CULTURE_NEURONS_CHECKOUT", workflow.basedir)

# A --configfile on the command line replaces config.yaml instead of merging into it: Snakemake
# merges mappings recursively, so the demo's models and dataset keys would leak into
# configs/paper.yaml; --config KEY=VALUE overrides still apply on top.
if workflow.overwrite_configfiles:
    config.clear()
    update_config(config, workflow.config_settings.overwrite_config)

# The schema fills every default: the code below reads config[key] without fallbacks.
validate(config, "../schemas/config.schema.yaml")
PLAN = Plan(config, basedir=workflow.basedir, warn=logger.warning)
check_config(PLAN, info=logger.info, warn=logger.warning)
DATASET = PLAN.dataset_name


wildcard_constraints:
    model="[^/]+",
    selector="[^/]+",
    intervention="[^/]+",


def intervention_of(wildcards):
    return wildcards.get("intervention", HEADLINE)


def one_of(names):
    """A wildcard constraint matching exactly these names (none: nothing)."""
    return "|".join(re.escape(name) for name in names) or "^$"


# -- inputs ------------------------------------------------------------------------------------


def get_dataset_sources(wildcards):
    return PLAN.dataset_sources(wildcards.get("task", ""))


def get_model_input(wildcards):
    return PLAN.model_input(wildcards.model)


def get_attribute_input(wildcards):
    inputs = {
        "item_table": layout.items(DATASET),
        "data_report": layout.data_report(DATASET),
        "model": get_model_input(wildcards),
    }
    inputs.update({task: layout.items(DATASET, task) for task in PLAN.extra_tasks()})
    return inputs


def get_select_input(wildcards):
    inputs = {"store": PLAN.selector_store(wildcards.model, wildcards.selector)}
    reference = PLAN.control_reference(wildcards.selector)
    if reference:
        inputs["reference"] = layout.masks(wildcards.model, reference)
    return inputs


def get_ablate_input(wildcards):
    inputs = {
        "item_table": layout.items(DATASET),
        "masks": layout.masks(wildcards.model, wildcards.selector),
        "model": get_model_input(wildcards),
    }
    if PLAN.interventions[intervention_of(wildcards)].needs_means:
        inputs["store"] = PLAN.selector_store(wildcards.model, wildcards.selector)
    return inputs


def get_ablate_shard_markers(wildcards):
    return PLAN.shard_markers(
        wildcards.model, wildcards.selector, intervention_of(wildcards)
    )


def get_sweep_dirs(wildcards):
    return PLAN.sweep_dirs(
        wildcards.model, wildcards.selector, intervention_of(wildcards)
    )


def get_control_effect_input(wildcards):
    model, selectors = wildcards.model, PLAN.control_effect_selectors
    return {
        "control_items": layout.items(DATASET, "control"),
        "baseline": layout.baseline(model, "evaluation"),
        "masks": [layout.masks(model, s) for s in selectors],
        "ablations": [layout.ablation_dir(model, s, HEADLINE) for s in selectors],
        "model": get_model_input(wildcards),
    }


def get_overlap_input(wildcards):
    model = wildcards.model
    return {
        "masks": [layout.masks(model, s) for s in PLAN.decoder_selectors],
        "matrices": [
            layout.matrix(model, s, HEADLINE) for s in PLAN.culture_specific_selectors
        ],
    }


def get_atlas_input(wildcards):
    model, selectors = wildcards.model, PLAN.atlas_selectors
    return {
        "store": layout.activations(model),
        "item_table": layout.items(DATASET),
        "masks": [layout.masks(model, s) for s in selectors],
        "summaries": [layout.matrix(model, s, HEADLINE, "summary") for s in selectors],
    }


def get_dose_response_input(wildcards):
    return [layout.sweep_matrix(wildcards.model, s, i) for s, i in PLAN.sweep_runs()]


# -- params ------------------------------------------------------------------------------------


def get_model_json(wildcards):
    return rule_args.as_json(PLAN.model_entry_for_jobs(wildcards.model))


def get_intervention_json(wildcards):
    return rule_args.as_json(PLAN.interventions[intervention_of(wildcards)].spec())


def get_selector_json(wildcards):
    return rule_args.as_json(PLAN.selectors[wildcards.selector])


def get_sources(wildcards):
    return " ".join(PLAN.sources_of(wildcards.selector))


def get_store_arg(wildcards, input):
    return f"--store {input.store}" if "store" in input.keys() else ""


def get_reference_args(wildcards, input):
    return f"--reference-masks {input.reference}" if "reference" in input.keys() else ""


def get_sweep_base(wildcards):
    return layout.sweep_base(
        wildcards.model, wildcards.selector, intervention_of(wildcards)
    )


def get_ablate_out_dir(wildcards):
    """The ablate job's output folder, whose partial folder a shard answers into."""
    return layout.ablation_dir(
        wildcards.model, wildcards.selector, intervention_of(wildcards)
    )


def get_ablate_gather_flag(wildcards):
    return "--gather" if PLAN.gathers_only(wildcards.model) else ""


def only_correct_flag():
    return "" if config["only_correct"] else "--all-items"


# -- resources of the model jobs (a resource, not a param: params are rerun triggers, and a
# retry must not make the next invocation rerun a job that succeeded with a smaller batch) -----


def get_batch_size(wildcards, attempt):
    return PLAN.batch_size(wildcards.model, attempt)


def get_max_batch_size(wildcards, attempt):
    return PLAN.max_batch_size(wildcards.model, attempt)


def get_gpus(wildcards):
    """Snakemake's `gpu` resource (`--resources gpu=N` on a workstation), which the Slurm
    executor requests as `--gpus=N` (none for gpus: 0)."""
    return PLAN.gpus(wildcards.model)


def get_ablate_gpus(wildcards):
    """A split ablate job only gathers its shards' chunks: no GPU (its shards hold them)."""
    return 0 if PLAN.gathers_only(wildcards.model) else get_gpus(wildcards)


def job_name(wildcards):
    """What names a model job besides its model: the selector of an ablate job, the site of
    a record_site job."""
    return wildcards.get("selector", wildcards.get("site", ""))


def get_mem_mb(wildcards, attempt, rulename):
    return PLAN.mem_mb(
        rulename,
        wildcards.model,
        attempt,
        job_name(wildcards),
        intervention_of(wildcards),
    )


def get_runtime(wildcards, attempt, rulename):
    return PLAN.runtime(
        rulename,
        wildcards.model,
        attempt,
        job_name(wildcards),
        intervention_of(wildcards),
    )
