"""The shipped demo model: its recipe decides when the workflow trains one instead, and the
weights in resources/demo/model are the demo config's model and answer the demo's questions."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.data.split import EVALUATION, split_rows
from culture_neurons.demo.generate import GENERATOR_VERSION, generate_demo_dataset
from culture_neurons.demo.model import DEFAULT_TRAINING
from culture_neurons.demo.shipped import (
    PROVENANCE_CARD,
    PROVENANCE_FILE,
    SHIPPED_MODEL_DIR,
    demo_recipe,
    read_provenance,
    recipe_differences,
    training_settings,
    trains_here,
    write_provenance,
)
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_all
from culture_neurons.models import load_adapter

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")
MODEL = "demo-qwen25vl-tiny"


@pytest.fixture(scope="module")
def demo_config() -> dict:
    """config.yaml with the schema's defaults filled in, as the workflow sees it."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    validate(config, SCHEMA)
    return config


def recipe_of(config: dict) -> dict:
    return demo_recipe(config["dataset"]["demo"], config["models"][MODEL]["demo_training"])


def test_the_shipped_weights_are_the_demo_configs_model(demo_config):
    assert demo_config["models"][MODEL]["path"] == SHIPPED_MODEL_DIR
    provenance = read_provenance(ROOT / SHIPPED_MODEL_DIR)
    # A config change that alters the recipe without regenerating the weights fails here.
    assert recipe_differences(recipe_of(demo_config), provenance["recipe"]) == []
    assert provenance["evaluation"]["evaluation_accuracy"] > 0.9
    for name in ("model.safetensors", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (ROOT / SHIPPED_MODEL_DIR / name).is_file(), name
    # Its card says the same as its JSON.
    card = (ROOT / SHIPPED_MODEL_DIR / PROVENANCE_CARD).read_text()
    assert f"{provenance['recipe']['training']['steps']} steps" in card
    assert provenance["regenerate"].split(" && ")[0] in card


@pytest.fixture(scope="module")
def demo_items(tmp_path_factory, demo_config) -> pd.DataFrame:
    """A fresh sample of the demo config's cultures: other test items than the shipped model's
    own evaluation (another seed), the same cultures, styles and names."""
    demo = demo_config["dataset"]["demo"]
    root = tmp_path_factory.mktemp("shipped")
    generate_demo_dataset(
        ROOT / demo["spec"], root / "src", seed=demo["seed"] + 1, test_items_per_pair=6,
        train_items_per_pair=2, image_size=demo["image_size"], control_test_items_per_pair=2,
        control_train_items_per_pair=2,
    )  # fmt: skip
    config = DatasetConfig(
        name="demo", source="local", local_dir=str(root / "src"),
        grouping=str(ROOT / "resources/demo/culture_groups.tsv"),
    )  # fmt: skip
    prepare_dataset(config, root / "data")
    return pd.read_parquet(root / "data" / "items.parquet")


def test_the_shipped_weights_load_and_answer_the_demo_above_chance(demo_items):
    adapter = load_adapter(
        {"family": "qwen2_5_vl", "path": str(ROOT / SHIPPED_MODEL_DIR), "dtype": "float32"}
    )
    assert (adapter.n_layers, adapter.n_neurons) == (
        DEFAULT_TRAINING["layers"], DEFAULT_TRAINING["intermediate_size"],
    )  # fmt: skip
    evaluation = split_rows(demo_items, EVALUATION)
    answers = answer_all(adapter, evaluation, batch_size=16, max_new_tokens=8, desc="shipped")
    assert len(answers) == len(evaluation) >= 24
    # Trained to 98.8% on its own evaluation split; a broken tokenizer or processor gives ~0.
    assert answers["correct"].mean() > 0.8


def test_recipe_fills_training_defaults_and_hashes_the_spec(demo_config, tmp_path):
    recipe = recipe_of(demo_config)
    assert recipe["training"] == {**DEFAULT_TRAINING, "seed": 0, "steps": 750}
    assert "train" not in recipe["training"] and "require_above_chance" not in recipe["training"]
    assert recipe["data"]["generator_version"] == GENERATOR_VERSION
    assert "test_items_per_pair" not in recipe["data"]  # the evaluation portion's own stream
    # The spec's content, not its path, is the recipe: an edited spec is another model.
    spec = tmp_path / "cultures.yaml"
    spec.write_bytes((ROOT / "resources/demo/cultures.yaml").read_bytes())
    demo = {**demo_config["dataset"]["demo"], "spec": str(spec)}
    assert demo_recipe(demo, {})["data"] == recipe["data"]
    spec.write_text(spec.read_text() + "\n# edited\n")
    assert demo_recipe(demo, {})["data"]["spec_sha256"] != recipe["data"]["spec_sha256"]
    with pytest.raises(InputError, match="dataset.demo lacks seed"):
        demo_recipe({"spec": str(spec)}, {})


def test_training_settings_ignore_how_the_model_is_obtained():
    settings = training_settings({"train": True, "require_above_chance": False, "steps": 5})
    assert settings == {**DEFAULT_TRAINING, "steps": 5}


def test_recipe_differences_name_each_setting_both_ways():
    made = {"data": {"seed": 1}, "training": {"steps": 750, "layers": 4}}
    wanted = copy.deepcopy(made)
    assert recipe_differences(wanted, made) == []
    wanted["training"]["steps"] = 300
    wanted["data"]["extra"] = 1
    assert recipe_differences(wanted, made) == [
        "data.extra: wanted 1, made with None",
        "training.steps: wanted 300, made with 750",
    ]


def write_weights(folder: Path, recipe: dict) -> Path:
    folder.mkdir()
    (folder / PROVENANCE_FILE).write_text(json.dumps({"recipe": recipe}))
    return folder


def test_trains_here_in_each_mode(tmp_path):
    recipe = {"data": {"seed": 1}, "training": {"steps": 750}}
    other = {"data": {"seed": 1}, "training": {"steps": 300}}
    shipped = write_weights(tmp_path / "shipped", recipe)
    assert trains_here("auto", shipped, recipe) == (False, [])
    assert trains_here("auto", shipped, other) == (
        True, ["training.steps: wanted 300, made with 750"],
    )  # fmt: skip
    assert trains_here(True, shipped, recipe) == (True, ["demo_training.train is true"])
    assert trains_here(False, shipped, recipe) == (False, [])
    with pytest.raises(InputError, match="train is false.*training.steps: wanted 300"):
        trains_here(False, shipped, other)
    # No provenance: not weights this workflow made, so auto trains and false refuses.
    trains, reasons = trains_here("auto", tmp_path / "absent", recipe)
    assert trains and "provenance.json does not exist" in reasons[0]
    with pytest.raises(InputError, match="does not exist"):
        trains_here(False, tmp_path / "absent", recipe)
    with pytest.raises(InputError, match="true, false or auto"):
        trains_here("yes", shipped, recipe)


def test_unreadable_provenance_is_an_error_naming_the_file(tmp_path):
    (tmp_path / PROVENANCE_FILE).write_text("{not json")
    with pytest.raises(InputError, match=f"{PROVENANCE_FILE} is not valid JSON"):
        read_provenance(tmp_path)
    (tmp_path / PROVENANCE_FILE).write_text('{"weights": 1}')
    with pytest.raises(InputError, match="has no 'recipe'"):
        read_provenance(tmp_path)


def test_written_provenance_reads_back(tmp_path):
    provenance = json.loads((ROOT / SHIPPED_MODEL_DIR / PROVENANCE_FILE).read_text())
    write_provenance(tmp_path, provenance)
    assert read_provenance(tmp_path) == provenance
    assert (tmp_path / PROVENANCE_CARD).read_text() == (
        ROOT / SHIPPED_MODEL_DIR / PROVENANCE_CARD
    ).read_text()
