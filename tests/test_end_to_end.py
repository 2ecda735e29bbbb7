"""The whole DAG on a miniature demo, then what a changed or added selector makes Snakemake plan.

Runs the real workflow (every rule, every CLI subcommand) in a copy of the repository with tiny
sizes, so it checks the wiring end to end; about a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
import zarr

ROOT = Path(__file__).resolve().parents[1]
MODEL = "demo-qwen25vl-tiny"


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(
        ["snakemake", "--cores", "2", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def planned(workdir: Path, configfile: str) -> dict[str, int]:
    result = snakemake(workdir, "-n", "--configfile", configfile)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if "Nothing to be done" in result.stdout:
        return {}
    stats = result.stdout.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE))
    return {rule: int(n) for rule, n in counts.items() if rule != "total"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "resources", "envs"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["dataset"]["demo"].update(
        test_items_per_pair=16, train_items_per_pair=16, image_size=56,
        control_test_items_per_pair=8, control_train_items_per_pair=8,
    )  # fmt: skip
    config["models"][MODEL]["batch_size"] = 64
    config["models"][MODEL]["demo_training"] = {
        "seed": 0, "steps": 40, "batch_size": 16, "hidden_size": 32, "layers": 2,
        "intermediate_size": 64, "require_above_chance": False,  # 40 steps: a model at chance
    }  # fmt: skip
    config["ratio"] = 0.05
    config["ratios"] = [0.05, 0.2]
    config["interventions"] = [
        {"kind": "zero"}, {"kind": "mean", "selectors": ["cas"]},
        {"kind": "scale", "factor": 2, "selectors": ["cas"]},
    ]  # fmt: skip
    # A model trained for seconds answers almost nothing right: select from every item.
    config["only_correct"] = False
    config["selectors"] = {
        "rnd": {"seeds": [0]}, "lap": {"alpha": 95}, "cas": {},
        "rnd_matched": {"reference": "cas", "seeds": [0]}, "attr": {}, "attr_general": {},
    }  # fmt: skip
    config["stability"] = {"resamples": 4, "null_resamples": 2}
    config["generation"] = {"max_new_tokens": 3}
    config["bootstrap"] = {"n": 20, "seed": 0}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    result = snakemake(work)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return work


def test_whole_dag_produces_every_artifact(finished_run):
    work = finished_run
    items = pd.read_parquet(work / "results/data/demo/items.parquet")
    cultures = sorted(items["culture"].unique())
    assert len(cultures) == 8
    for source in cultures:
        table = pd.read_parquet(work / f"results/{MODEL}/ablations/cas/{source}.parquet")
        assert len(table) == (items["split"] == "evaluation").sum()
    assert (work / f"results/{MODEL}/ablations/rnd-s0/ALL.parquet").exists()
    matrix = pd.read_parquet(work / f"results/{MODEL}/matrices/lap.parquet")
    assert len(matrix) == len(cultures) ** 2
    table2 = (work / "results/summary/table2.md").read_text()
    assert "Self-Cross Gap" in table2 and "CAS" in table2 and "RND" in table2
    assert "Models loaded: " in table2 and "(a local folder, no hub commit)" in table2
    for figure in ("cas_ablation", "cas_layers", "lap_ablation", "rnd-s0_layers"):
        for ext in (".png", ".pdf"):
            assert (work / f"results/figures/{MODEL}/{figure}{ext}").stat().st_size > 1000
    assert (work / "results/figures/baseline_accuracy.png").stat().st_size > 1000
    assert "demo model accuracy" in (work / f"logs/train_demo/{MODEL}.log").read_text()
    control = f"results/{MODEL}/masks/rnd_matched-s0.zarr"
    reference = f"results/{MODEL}/masks/cas.zarr"

    matched, original = (
        zarr.open_group(work / control)["selected"][:],
        zarr.open_group(work / reference)["selected"][:],
    )
    assert (matched.sum(axis=2) == original.sum(axis=2)).all()
    for name in ("stability", "overlap", "cas_significance"):
        assert (work / f"results/figures/{MODEL}/{name}.png").stat().st_size > 1000
    stability = pd.read_csv(work / f"results/{MODEL}/stability/summary.csv")
    assert set(stability["selector"]) == {"lap", "cas"}
    assert set(stability["kind"]) == {"bootstrap", "permuted"}
    correlation = pd.read_csv(work / f"results/{MODEL}/overlap/correlation.csv")
    assert set(correlation["selector"]) == {"lap", "cas", "rnd_matched-s0", "attr"}
    assert "Sources with sig. Gap" in table2 and "RND-LM" in table2
    significance = pd.read_csv(work / "results/summary/table2_significance.csv")
    assert set(significance["selector"]) == {"lap", "cas", "rnd_matched-s0", "attr"}
    assert planned(work, "config.yaml") == {}


def test_attribution_selectors_and_the_control_task_run_through_the_dag(finished_run):
    work = finished_run
    report = json.loads((work / f"results/{MODEL}/attribution.json").read_text())
    control = pd.read_parquet(work / "results/data/demo/control/items.parquet")
    assert report["items"]["control"] == (control["split"] == "identification").sum() == 32
    assert report["control_task"] == "scored" and report["exclusion_task"] == "none configured"
    masks = json.loads((work / f"results/{MODEL}/masks/attr.json").read_text())
    assert masks["control_subtraction"] == "applied" and masks["scores"] == "attribution"
    general = zarr.open_group(work / f"results/{MODEL}/masks/attr_general.zarr")
    assert general["selected"].shape[0] == 1  # one mask for every culture
    effect = pd.read_parquet(work / f"results/{MODEL}/control_effect.parquet")
    assert set(effect["selector"]) == {"rnd-s0", "attr_general"}
    assert set(effect["task"]) == {"cultural", "control", "cultural - control"}
    rows = effect[effect["task"] == "control"]
    assert set(rows["n_items"]) == {(control["split"] == "evaluation").sum()}
    table2 = (work / "results/summary/table2.md").read_text()
    assert "| ATTR | ATTR-GEN |" in table2
    overlap = pd.read_parquet(work / f"results/{MODEL}/overlap/selectors.parquet")
    pair = overlap[(overlap["selector_a"] == "attr") & (overlap["selector_b"] == "cas")]
    assert len(pair) == 8 and pair["jaccard"].between(0, 1).all()


def test_sweeps_and_interventions_write_every_condition(finished_run):
    work = finished_run
    items = pd.read_parquet(work / "results/data/demo/items.parquet")
    cultures = sorted(items["culture"].unique())
    for source in cultures:
        assert (work / f"results/{MODEL}/ablations_sweep/cas/r0.2/{source}.parquet").exists()
        for name in ("mean", "scale-x2"):
            base = work / f"results/{MODEL}/interventions/{name}"
            assert (base / f"ablations/cas/{source}.parquet").exists()
            assert (base / f"ablations_sweep/cas/r0.2/{source}.parquet").exists()
    sweep = pd.read_parquet(work / f"results/{MODEL}/matrices/sweep/cas.summary.parquet")
    assert sorted(sweep["ratio"].unique()) == [0.05, 0.2] and set(sweep["intervention"]) == {"zero"}
    headline = pd.read_parquet(work / f"results/{MODEL}/matrices/cas.summary.parquet")
    at_headline = sweep[sweep["ratio"] == 0.05].drop(columns=["intervention", "ratio"])
    pd.testing.assert_frame_equal(at_headline.reset_index(drop=True), headline)
    dose = pd.read_csv(work / f"results/{MODEL}/dose_response.csv")
    assert set(dose["intervention"]) == {"zero", "mean", "scale-x2"}
    assert {"CAS", "RND", "RND-LM", "LAP"} <= set(dose["line"])
    for name in ("zero", "mean", "scale-x2"):
        assert (work / f"results/figures/{MODEL}/dose_response_{name}.png").stat().st_size > 1000
    conditions = pd.read_csv(work / "results/summary/table2_sweep.csv")
    assert set(zip(conditions["intervention"], conditions["ratio"], strict=True)) == {
        ("zero", 0.05), ("zero", 0.2), ("mean", 0.05), ("mean", 0.2), ("scale-x2", 0.05),
        ("scale-x2", 0.2),
    }  # fmt: skip
    markdown = (work / "results/summary/table2_sweep.md").read_text()
    assert markdown.startswith("## zero, ratio 0.05") and "## scale-x2, ratio 0.2" in markdown


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda selectors: selectors["lap"].update(alpha=90), id="changed-parameter"),
        pytest.param(lambda selectors: selectors.update(mad={"alpha": 95}), id="added-selector"),
    ],
)
def test_selector_edit_plans_only_its_branch(finished_run, edit):
    work = finished_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    edit(config["selectors"])
    (work / "edited.yaml").write_text(yaml.safe_dump(config))
    counts = planned(work, "edited.yaml")
    # The selector's own branch, and the per-model analyses that read every selector.
    assert counts == {
        "select": 1, "ablate": 1, "matrices": 1, "figures": 1, "stability": 1, "overlap": 1,
        "atlas": 1, "dose_response": 1, "summary": 1, "all": 1,
    }  # fmt: skip


def test_a_changed_reference_replans_its_layer_matched_control(finished_run):
    work = finished_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["selectors"]["cas"] = {"alpha": 90}
    (work / "reference.yaml").write_text(yaml.safe_dump(config))
    counts = planned(work, "reference.yaml")
    # cas and rnd_matched-s0 (its control) each: select, ablate, matrices, figures; and cas's
    # mean and scale runs.
    assert counts == {
        "select": 2, "ablate": 2, "matrices": 2, "figures": 2, "stability": 1, "overlap": 1,
        "atlas": 1, "ablate_intervention": 2, "matrices_intervention": 2, "figures_intervention": 2,
        "dose_response": 1, "summary": 1, "all": 1,
    }  # fmt: skip


def test_added_model_plans_only_its_branch(finished_run):
    work = finished_run
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["models"]["other-tiny"] = {
        **config["models"][MODEL], "path": "results/other-tiny/demo_weights",
    }  # fmt: skip
    (work / "model.yaml").write_text(yaml.safe_dump(config))
    counts = planned(work, "model.yaml")
    # Its own training, recording and attribution pass, 6 selectors x (select, ablate,
    # matrices, figures), its stability, overlap and control effect; the shared baseline
    # figure and summary follow. Nothing of the existing model reruns.
    assert counts == {
        "train_demo": 1, "record": 1, "attribute": 1, "select": 6,
        "ablate": 6, "matrices": 6, "figures": 6, "stability": 1, "overlap": 1, "atlas": 1,
        "control_effect": 1, "baseline_figure": 1, "ablate_intervention": 2,
        "matrices_intervention": 2, "figures_intervention": 2, "dose_response": 1,
        "summary": 1, "all": 1,
    }  # fmt: skip
