"""The checks of a workflow config beyond its schema, run once when the workflow is parsed.

The schema (workflow/schemas/config.schema.yaml) checks each value and fills the defaults;
these checks relate values to each other and to files, and raise ValueError naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from culture_neurons.data.labels import HIDDEN_LABELS_HELP
from culture_neurons.planning import layout
from culture_neurons.planning.plan import Plan
from culture_neurons.selection import registry
from culture_neurons.selection.conventions import ATTENTION_HEADS
from culture_neurons.selection.registry import has_ranking, is_control, is_culture_independent


def check_demo_models(plan: Plan, info: Callable[[str], Any]) -> None:
    """Say which demo models are trained here; a GGUF model names one source and its folder."""
    for name in plan.demo_model_names:
        trains, reasons = plan.demo_training_plan(name)
        if trains:
            info(
                f"{name}: rule train_demo trains it into {layout.demo_weights(name)}, not the "
                f"weights at {plan.model(name)['path']}: {'; '.join(reasons)}"
            )
    for name in plan.gguf_model_names:
        source = plan.model(name)["gguf"]
        if bool(source.get("package")) == bool(source.get("file")):
            raise ValueError(
                f"models.{name}.gguf needs exactly one of package (a pip requirement) or file"
            )
        if plan.model(name)["path"] != layout.checkpoint_dir(name):
            raise ValueError(
                f"models.{name}.path must be {layout.checkpoint_dir(name)}: a model with gguf is "
                "converted by the workflow into that folder"
            )


def check_batch_sizes(plan: Plan) -> None:
    for name in plan.model_names:
        batch_size, ceiling = plan.configured_batch_sizes(name)
        if 0 < ceiling < batch_size:
            raise ValueError(
                f"models.{name}.max_batch_size ({ceiling}) is below its batch_size "
                f"({batch_size}); 0 keeps the batch size fixed"
            )


def check_controls(plan: Plan) -> None:
    """A control's reference must be a culture-specific, data-driven selector instance."""
    instances = plan.selectors
    for selector, params in instances.items():
        method = params["method"]
        if not is_control(method):
            continue
        key = registry.spec(method).reference
        reference = params.get(key)
        where = f"selectors.{selector.split('-s')[0]}.{key}"
        if reference is None:
            raise ValueError(f"{where} is missing: name the selector to match")
        if reference not in instances:
            raise ValueError(
                f"{where}: unknown selector {reference!r}; one of {', '.join(sorted(instances))}"
            )
        ref_method = instances[reference]["method"]
        if is_control(ref_method) or is_culture_independent(ref_method):
            raise ValueError(
                f"{where}: {reference!r} ({ref_method}) has no per-culture masks to match; "
                "name a culture-specific selector such as cas"
            )


def check_sweeps(plan: Plan) -> None:
    """Ratios and interventions are valid; a sweep needs every selector to have a ranking."""
    try:
        ratios = plan.ratios
        _ = plan.intervention_runs
    except Exception as error:
        raise ValueError(str(error)) from None
    if len(ratios) > 1:
        for name, params in plan.selectors.items():
            method = params["method"]
            if not is_control(method) and not has_ranking(method):
                raise ValueError(
                    f"selectors.{name}: method {method!r} has no ranking function, so it "
                    "cannot give nested masks for ratios; give its registry entry a ranking "
                    "(docs/selectors-and-attribution.md, 'Adding a selector') or drop ratios"
                )


def check_sites(plan: Plan) -> None:
    """Each site's selectors can run there (`planning.work.selector_instances` refuses the
    others), and no intervention patches a mean into attention heads (their mean output vector
    is not recorded: docs/sites.md)."""
    instances = plan.selectors
    for name, selectors in plan.intervention_runs.items():
        if not plan.interventions[name].needs_means:
            continue
        heads = [s for s in selectors if plan.site_of(s) == ATTENTION_HEADS and s in instances]
        if heads:
            raise ValueError(
                f"interventions: {name} patches identification means, which attention heads do "
                f"not record; give it selectors: without {', '.join(heads)}"
            )


def check_hidden_labels(plan: Plan, warn: Callable[[str], Any]) -> None:
    """Warn at parse time (dry runs included), before any GPU hour is spent."""
    if plan.labels_hidden:
        warn(
            f"dataset {plan.dataset['hub_id']} from the hub with no dataset.labels_file: "
            "the public CVQA has every Label -1 (its card: it 'will always be -1'). "
            f"{HIDDEN_LABELS_HELP}"
        )


def check_config(plan: Plan, info: Callable[[str], Any], warn: Callable[[str], Any]) -> None:
    """Every check, in the order the workflow has always run them."""
    check_demo_models(plan, info)
    check_batch_sizes(plan)
    check_controls(plan)
    check_sweeps(plan)
    check_sites(plan)
    check_hidden_labels(plan, warn)
