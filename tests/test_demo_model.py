"""The demo VLM: built offline, trained briefly, saved, and loaded back like a hub model."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from culture_neurons.data.prepare import DatasetConfig, prepare_dataset
from culture_neurons.demo.generate import generate_demo_dataset
from culture_neurons.demo.model import build_demo_tokenizer, train_demo_model
from culture_neurons.demo.shipped import demo_recipe, read_provenance
from culture_neurons.demo.train import chance_p_value
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_all
from culture_neurons.models import load_adapter
from culture_neurons.stages.train_demo import train_demo_stage


@pytest.fixture(scope="module")
def demo_items(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    generate_demo_dataset(
        "resources/demo/cultures.yaml", root / "src", seed=3, test_items_per_pair=8,
        train_items_per_pair=24, image_size=56,
    )  # fmt: skip
    config = DatasetConfig(
        name="demo", source="local", local_dir=str(root / "src"),
        train_files="data/train-*.parquet", grouping="resources/demo/culture_groups.tsv",
    )  # fmt: skip
    prepare_dataset(config, root / "data")
    return pd.read_parquet(root / "data" / "items.parquet"), pd.read_parquet(
        root / "data" / "train_items.parquet"
    )


def test_tokenizer_knows_every_demo_syllable(demo_items):
    items, train = demo_items
    tokenizer = build_demo_tokenizer(
        items["question"].tolist() + [" ".join(o) for o in items["options"]]
    )
    for options in items["options"]:
        for name in options:
            ids = tokenizer(name, add_special_tokens=False)["input_ids"]
            assert len(ids) == len(name.split())  # one token per syllable
            assert tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == name


def test_trained_demo_model_saves_and_loads_through_the_adapter(demo_items, tmp_path):
    items, train = demo_items
    summary = train_demo_model(
        train, items, tmp_path / "model",
        {"steps": 12, "batch_size": 8, "hidden_size": 32, "layers": 2, "intermediate_size": 64},
    )  # fmt: skip
    assert summary["train_items"] == len(train)
    assert summary["final_loss"] < summary["initial_loss"]  # it learns something
    saved = json.loads((tmp_path / "model" / "training.json").read_text())
    assert saved["mlp_neurons_per_layer"] == 64 and saved["synthetic"] is True

    adapter = load_adapter(
        {"family": "qwen2_5_vl", "path": str(tmp_path / "model"), "dtype": "float32"}
    )
    assert (adapter.n_layers, adapter.n_neurons) == (2, 64)
    evaluation = items[items["split"] == "evaluation"].head(8).reset_index(drop=True)
    answers = answer_all(adapter, evaluation, batch_size=4, max_new_tokens=3, desc="eval")
    assert len(answers) == 8
    assert set(answers["correct"]) <= {0, 1}


def test_chance_p_value_is_the_binomial_upper_tail():
    assert chance_p_value(0, 10) == pytest.approx(1.0)
    assert chance_p_value(1, 1) == pytest.approx(0.25)
    assert chance_p_value(3, 3) == pytest.approx(0.25**3)
    # P(X >= 2 | 3, 1/4) = 3 * (1/4)^2 * (3/4) + (1/4)^3
    assert chance_p_value(2, 3) == pytest.approx(3 * 0.25**2 * 0.75 + 0.25**3)
    # 256 evaluation items (the demo's at 64 test items per pair): 80 correct (31.3%) is not
    # enough, 81 (31.6%) is (p < 0.01); at 512, 151 is not and 152 (29.7%) is.
    assert chance_p_value(80, 256) > 0.01 > chance_p_value(81, 256)
    assert chance_p_value(151, 512) > 0.01 > chance_p_value(152, 512)
    # Large n (too large for float combinations): the normal approximation, continuity-corrected.
    z = (2600 - 0.5 - 2500) / math.sqrt(10_000 * 0.25 * 0.75)
    normal = 0.5 * math.erfc(z / math.sqrt(2))
    assert chance_p_value(2600, 10_000) == pytest.approx(normal, abs=1e-3)
    with pytest.raises(ValueError, match="must lie in"):
        chance_p_value(5, 4)


def test_a_demo_model_at_chance_stops_the_stage_unless_allowed(demo_items, tmp_path):
    items, train = demo_items
    items.to_parquet(tmp_path / "items.parquet")
    train.to_parquet(tmp_path / "train.parquet")
    # Learning rate 0: the model stays at its random init, at chance on any machine (a few
    # steps of real training could land on either side of the threshold by arithmetic alone).
    settings = {"steps": 4, "batch_size": 8, "hidden_size": 32, "layers": 2,
                "intermediate_size": 64, "learning_rate": 0.0}  # fmt: skip
    args = (tmp_path / "items.parquet", tmp_path / "train.parquet", tmp_path / "model")
    with pytest.raises(InputError, match=r"not above chance .*require_above_chance: false"):
        train_demo_stage(*args, tmp_path / "report.json", settings)
    summary = train_demo_stage(
        *args, tmp_path / "kept.json", {**settings, "require_above_chance": False}
    )
    assert summary["above_chance"] is False and summary["chance_p_value"] > 0.01
    assert json.loads((tmp_path / "kept.json").read_text())["above_chance"] is False
    assert "require_above_chance" not in summary["settings"]  # not a training setting


def test_the_stage_writes_the_recipe_it_trained_from_beside_the_weights(demo_items, tmp_path):
    items, train = demo_items
    items.to_parquet(tmp_path / "items.parquet")
    train.to_parquet(tmp_path / "train.parquet")
    demo_data = {"spec": "resources/demo/cultures.yaml", "seed": 3, "image_size": 56,
                 "train_items_per_pair": 24, "control_train_items_per_pair": 80}  # fmt: skip
    settings = {"steps": 4, "batch_size": 8, "hidden_size": 32, "layers": 2,
                "intermediate_size": 64, "train": True, "require_above_chance": False}  # fmt: skip
    summary = train_demo_stage(
        tmp_path / "items.parquet", tmp_path / "train.parquet", tmp_path / "model",
        tmp_path / "report.json", settings, demo_data,
    )  # fmt: skip
    provenance = read_provenance(tmp_path / "model")
    assert provenance["recipe"] == demo_recipe(demo_data, settings)
    assert provenance["training"]["final_loss"] == summary["final_loss"]
    assert provenance["evaluation"]["evaluation_items"] == summary["evaluation_items"]
    assert provenance["made_with"]["threads"] >= 1
    # The recipe's training part is what was trained (train is not a training setting).
    assert provenance["recipe"]["training"] == summary["settings"]
