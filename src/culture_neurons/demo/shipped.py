"""The demo model that ships with the repository, and when the workflow trains one instead.

Training the demo VLM on the CPU is floating-point arithmetic compounded over hundreds of steps:
another machine (kernel choice, thread count, summation order) ends with other weights, and so
with other neurons, masks and Table 2. The repository therefore ships one trained model
(``resources/demo/model``), and every machine records, selects and ablates those same weights.

A model's *recipe* is everything its weights were made from: the demo data generator's settings
that shape the train portion (the cultures spec's content, the seed, the train counts, the image
size, the generator version) and the training settings. The shipped folder's ``provenance.json``
holds the recipe it was made from; a config whose recipe differs (another shape, more steps,
another spec) gets its model trained here by rule ``train_demo``. The evaluation portion's
size is not part of the recipe: it comes from its own random stream, so more evaluation items
leave the train portion, and the shipped model, as they are.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from culture_neurons.demo.defaults import DEFAULT_TRAINING
from culture_neurons.demo.generate import GENERATOR_VERSION
from culture_neurons.errors import InputError

SHIPPED_MODEL_DIR = "resources/demo/model"
PROVENANCE_FILE = "provenance.json"
PROVENANCE_CARD = "PROVENANCE.md"
# demo_training keys that say how the workflow gets the model, not what the model is.
NOT_RECIPE = ("train", "require_above_chance")
# dataset.demo keys that shape the train portion (the test and control-test counts do not).
DATA_RECIPE = ("seed", "train_items_per_pair", "control_train_items_per_pair", "image_size")
# The command that regenerates the shipped weights (docs/demo.md; written into their provenance).
REGENERATE_COMMAND = (
    "snakemake --cores 2 results/demo-qwen25vl-tiny/demo_model.json "
    "--configfile config.yaml configs/train-demo.yaml && rm -rf resources/demo/model && "
    "cp -r results/demo-qwen25vl-tiny/demo_weights resources/demo/model"
)


def training_settings(demo_training: Mapping[str, Any] | None) -> dict[str, Any]:
    """The training settings a ``demo_training`` block resolves to (defaults filled in)."""
    given = {k: v for k, v in (demo_training or {}).items() if k not in NOT_RECIPE}
    return {**DEFAULT_TRAINING, **given}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def demo_recipe(
    demo_data: Mapping[str, Any], demo_training: Mapping[str, Any] | None
) -> dict[str, Any]:
    """What a demo model made from this config is made from.

    ``demo_data``: the config's ``dataset.demo`` block with its schema defaults filled in;
    ``demo_training``: the model's ``demo_training`` block.
    """
    missing = [key for key in ("spec", *DATA_RECIPE) if key not in demo_data]
    if missing:
        raise InputError(f"dataset.demo lacks {', '.join(missing)} (schema defaults not applied?)")
    data = {key: demo_data[key] for key in DATA_RECIPE}
    data["spec_sha256"] = file_sha256(demo_data["spec"])
    data["generator_version"] = GENERATOR_VERSION
    return {"data": data, "training": training_settings(demo_training)}


def read_provenance(model_dir: str | Path) -> dict[str, Any] | None:
    """The folder's provenance, or None when it has none (not a demo model the workflow made)."""
    path = Path(model_dir) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        provenance = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(provenance, dict) or "recipe" not in provenance:
        raise InputError(f"{path} has no 'recipe': not a demo model's provenance")
    return provenance


def recipe_differences(wanted: Mapping[str, Any], made: Mapping[str, Any]) -> list[str]:
    """``part.key: wanted X, made with Y`` for each setting where the two recipes differ."""
    differences = []
    for part in ("data", "training"):
        want, have = wanted.get(part, {}), made.get(part, {})
        for key in sorted(set(want) | set(have)):
            if want.get(key) != have.get(key):
                differences.append(
                    f"{part}.{key}: wanted {want.get(key)!r}, made with {have.get(key)!r}"
                )
    return differences


def shipped_weights_differences(model_dir: str | Path, wanted: Mapping[str, Any]) -> list[str]:
    """Why the weights in ``model_dir`` are not those ``wanted`` describes ([] when they are)."""
    provenance = read_provenance(model_dir)
    if provenance is None:
        return [f"{Path(model_dir) / PROVENANCE_FILE} does not exist"]
    return recipe_differences(wanted, provenance["recipe"])


def trains_here(
    train: bool | str, model_dir: str | Path, wanted: Mapping[str, Any]
) -> tuple[bool, list[str]]:
    """Whether the workflow trains the demo model itself, and why not the shipped weights.

    ``train``: ``demo_training.train``: True trains always; ``"auto"`` uses the weights in
    ``model_dir`` when their recipe is ``wanted``; False uses them or fails, naming the
    differences (a config that must not train, such as the Slurm test's).
    """
    if train is True:
        return True, ["demo_training.train is true"]
    differences = shipped_weights_differences(model_dir, wanted)
    if train == "auto":
        return bool(differences), differences
    if train is False:
        if differences:
            raise InputError(
                f"demo_training.train is false, but the weights in {model_dir} were not made "
                "from this config: " + "; ".join(differences)
            )
        return False, []
    raise InputError(f"demo_training.train must be true, false or auto, got {train!r}")


def provenance_record(
    recipe: Mapping[str, Any], summary: Mapping[str, Any], threads: int
) -> dict[str, Any]:
    """The provenance written beside a trained demo model (``summary``: train_demo_stage's)."""
    import torch
    import transformers

    keys = ("initial_loss", "final_loss", "train_s", "parameters", "vocabulary", "train_items")
    return {
        "recipe": dict(recipe),
        "training": {key: summary[key] for key in keys},
        "evaluation": {
            key: summary[key]
            for key in (
                "evaluation_items",
                "evaluation_accuracy",
                "evaluation_accuracy_per_culture",
                "chance_p_value",
            )
        },
        "made_with": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": threads,
        },
        "regenerate": REGENERATE_COMMAND,
    }


def provenance_card(provenance: Mapping[str, Any]) -> str:
    """PROVENANCE.md: the same facts as provenance.json, for a person."""
    recipe, training = provenance["recipe"], provenance["training"]
    evaluation, made_with = provenance["evaluation"], provenance["made_with"]
    settings = recipe["training"]
    per_culture = ", ".join(
        f"{culture} {100 * accuracy:.1f}%"
        for culture, accuracy in sorted(evaluation["evaluation_accuracy_per_culture"].items())
    )
    data = ", ".join(f"{key} {value}" for key, value in recipe["data"].items())
    return "\n".join(
        [
            "# The demo model's provenance",
            "",
            "Written by `culture-neurons train-demo` (rule `train_demo`) beside the weights; "
            "`provenance.json` holds the same facts, and its `recipe` is what the workflow "
            "compares with the config to decide whether these weights are the config's model.",
            "",
            f"- Architecture: Qwen2_5_VLForConditionalGeneration, {settings['layers']} decoder "
            f"layers x {settings['intermediate_size']} MLP neurons, hidden size "
            f"{settings['hidden_size']}; {training['parameters']:,} parameters, vocabulary "
            f"{training['vocabulary']}.",
            f"- Training: {settings['steps']} steps of batch {settings['batch_size']}, AdamW with "
            f"a one-cycle learning rate peaking at {settings['learning_rate']}, seed "
            f"{settings['seed']}, on {training['train_items']} train items; loss "
            f"{training['initial_loss']} (first 5 steps) -> {training['final_loss']} (last 20), "
            f"{training['train_s']} s.",
            f"- Data: {data}.",
            f"- Evaluation split: {100 * evaluation['evaluation_accuracy']:.1f}% of "
            f"{evaluation['evaluation_items']} items correct (chance 25%, one-sided binomial "
            f"p = {evaluation['chance_p_value']:.2g}); per culture: {per_culture}.",
            f"- Made with torch {made_with['torch']}, transformers {made_with['transformers']}, "
            f"Python {made_with['python']} on {made_with['machine']}, {made_with['threads']} "
            "threads.",
            "",
            "Regenerate (trains, evaluates, and replaces this folder):",
            "",
            "```bash",
            provenance["regenerate"].replace(" && ", " \\\n  && "),
            "```",
            "",
        ]
    )


def write_provenance(model_dir: str | Path, provenance: Mapping[str, Any]) -> None:
    model_dir = Path(model_dir)
    (model_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    (model_dir / PROVENANCE_CARD).write_text(provenance_card(provenance))
