"""The workflow's plan without Snakemake (culture_neurons.planning): selector instances, sources,
cultures, shards, targets, the rules' arguments, the results/ layout and the config checks."""

from __future__ import annotations

import copy
import shlex

import pandas as pd
import pytest
from snakemake.utils import validate

from culture_neurons.planning import layout, rule_args
from culture_neurons.planning.config import check_config, check_controls, check_sweeps
from culture_neurons.planning.plan import Plan
from tests.dry_runs import ROOT

SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
GROUPING = ROOT / "resources/demo/culture_groups.tsv"
GROUPING_CULTURES = sorted(
    pd.read_csv(GROUPING, sep="\t")["culture"].unique()
)  # what the plan knows before prepare_data


def config_of(tmp_path, **changes) -> dict:
    """A local CVQA dataset, a hub model and a local one split into 3 ablate shards, seeded
    random selectors, a control matched to CAS, two ratios and an amplification of CAS."""
    weights = tmp_path / "weights"
    weights.mkdir(exist_ok=True)
    config = {
        "dataset": {"name": "toy", "source": "local", "local_dir": str(tmp_path / "source"),
                    "grouping": str(GROUPING)},
        "models": {
            "hub": {"family": "qwen2_5_vl", "path": "org/vlm", "batch_size": 6,
                    "max_batch_size": 20},
            "disk": {"family": "generic", "path": str(weights), "gpus": 0, "ablate_shards": 3},
        },
        "selectors": {"rnd": {"seeds": [3, 7]}, "cas": {}, "ctl": {"method": "rnd_matched",
                      "reference": "cas", "seeds": [0]}},
        "ratio": 0.1,
        "ratios": [0.05, 0.2],
        "interventions": [{"kind": "zero"}, {"kind": "scale", "factor": 2, "selectors": ["cas"]}],
    }  # fmt: skip
    config.update(copy.deepcopy(changes))
    validate(config, SCHEMA)  # fills the defaults, as the workflow does
    return config


def write_items(tmp_path, cultures: list[str]) -> None:
    items = tmp_path / layout.items("toy")
    items.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {"culture": cultures * 2, "split": ["identification", "evaluation"] * len(cultures)}
    ).to_parquet(items)


@pytest.fixture
def plan(tmp_path, monkeypatch) -> Plan:
    monkeypatch.chdir(tmp_path)  # results/ is relative to the working directory
    return Plan(config_of(tmp_path), basedir=ROOT)


def test_selector_instances_expand_seeds_and_keep_their_method(plan):
    assert plan.selectors == {
        "rnd-s3": {"method": "rnd", "seed": 3},
        "rnd-s7": {"method": "rnd", "seed": 7},
        "cas": {"method": "cas"},
        "ctl-s0": {"method": "rnd_matched", "reference": "cas", "seed": 0},
    }
    assert plan.control_reference("ctl-s0") == "cas" and plan.control_reference("cas") is None
    assert plan.culture_specific_selectors == ["cas", "ctl-s0"]
    assert list(plan.data_driven_selectors) == ["cas"]


def test_sources_come_from_the_grouping_file_until_items_parquet_exists(plan, tmp_path):
    assert plan.sources_of("rnd-s3") == ["ALL"]  # culture-independent: one mask
    assert plan.sources_of("cas") == GROUPING_CULTURES
    # prepare_data ran and kept three cultures: the plan follows the file, unsorted input.
    write_items(tmp_path, ["ZZZ", "AAA", "MMM"])
    assert plan.sources_of("cas") == ["AAA", "MMM", "ZZZ"]
    assert plan.item_counts().identification == 3


def test_interventions_ratios_and_sweep_folders(plan):
    assert plan.ratios == [0.05, 0.1, 0.2] and plan.other_ratios == [0.05, 0.2]
    assert plan.sweep_runs() == [
        ("rnd-s3", "zero"), ("rnd-s7", "zero"), ("cas", "zero"), ("ctl-s0", "zero"),
        ("cas", "scale-x2"),
    ]  # fmt: skip
    assert plan.sweep_dirs("hub", "cas", "scale-x2") == [
        "results/hub/interventions/scale-x2/ablations_sweep/cas/r0.05",
        "results/hub/interventions/scale-x2/ablations_sweep/cas/r0.2",
    ]
    assert rule_args.ratios(plan) == "0.05 0.1 0.2"


def test_models_weights_and_downloads(plan, tmp_path):
    assert plan.hub_model_names == ["hub"]
    assert plan.model_input("hub") == ["results/downloads/models/hub.json"]
    assert plan.model_input("disk") == []  # a folder on disk: nothing to wait for
    entry = plan.model_entry_for_jobs("disk")
    assert "ablate_shards" not in entry  # a planning key: changing it reruns nothing
    assert plan.model_entry_for_jobs("hub")["download"] == "results/downloads/models/hub.json"
    assert rule_args.download_model(plan, "hub") == "--repo-id org/vlm --revision main"


def test_ablate_shards_plan_markers_and_a_gathering_job_without_gpu(plan):
    assert plan.shard_markers("hub", "cas", "zero") == []
    assert plan.shard_markers("disk", "cas", "scale-x2") == [
        f"results/disk/interventions/scale-x2/ablations/cas.partial/shard{k}.done" for k in range(3)
    ]
    assert plan.gathers_shards("ablate_intervention", "disk")
    assert not plan.gathers_shards("ablate_shard", "disk")  # a shard answers: it loads the model
    assert not plan.gathers_shards("ablate", "hub")


def test_batch_sizes_halve_per_retry_and_chunks_keep_the_configured_size(plan):
    assert [plan.batch_size("hub", a) for a in (1, 2, 3)] == [6, 3, 1]
    assert [plan.max_batch_size("hub", a) for a in (1, 2, 3)] == [20, 10, 5]
    assert plan.chunk_items("hub") == 24  # 4 batches of the configured size, on every attempt
    assert plan.max_batch_size("disk", 1) == 0  # schema default batch_size 8, no ceiling


def test_final_targets_name_every_branch_once(plan):
    targets = plan.final_targets()
    assert len(targets) == len(set(targets))
    assert targets[:2] == ["results/data/toy/items.parquet", "results/data/toy/report.md"]
    for model in ("hub", "disk"):
        assert f"results/figures/{model}/cas_ablation.pdf" in targets
        assert f"results/figures/{model}/scale-x2/cas_significance.png" in targets
        assert f"results/figures/{model}/dose_response_scale-x2.pdf" in targets
        assert f"results/{model}/ablations_sweep/rnd-s7/r0.2" in targets
    assert "results/figures/hub/scale-x2/rnd-s3_ablation.png" not in targets  # scale-x2: cas only
    assert not [t for t in targets if "attribution" in t or "control_effect" in t]
    assert targets[-1] == "results/summary/table2_significance.csv"


def test_rule_arguments_are_shell_words(plan):
    flags = shlex.split(rule_args.prepare_data(plan))
    assert flags[flags.index("--files") + 1] == "data/test-*.parquet"  # the schema's default
    assert flags[flags.index("--split-seed") + 1] == "0"
    assert flags[flags.index("--columns") + 1] == "{}"
    specs = rule_args.summary_specs(plan, "significance").split()
    assert specs[0] == "hub:rnd-s3=results/hub/matrices/rnd-s3.significance.parquet"
    assert len(specs) == 2 * 4
    sweeps = rule_args.sweep_specs(plan, "summary").split()
    assert (
        "disk:cas=results/disk/interventions/scale-x2/matrices/sweep/cas.summary.parquet" in sweeps
    )


def test_an_extra_task_needs_a_local_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_of(tmp_path, attribution={"control_files": "data/control-*.parquet"})
    plan = Plan(config, basedir=ROOT)
    assert plan.extra_tasks() == {"control": "data/control-*.parquet"}
    assert plan.control_effect_selectors == ["rnd-s3", "rnd-s7"]
    assert "--files 'data/control-*.parquet' --train-files ''" in rule_args.prepare_data(
        plan, "control"
    )
    config["dataset"].update(source="hub", hub_id="org/data", revision="abc")
    with pytest.raises(ValueError, match="attribution.control_files: .* dataset.source: local"):
        Plan(config, basedir=ROOT).extra_tasks()


def test_layout_spells_the_headline_and_the_interventions_apart():
    assert layout.ablation_dir("m", "cas", "zero") == "results/m/ablations/cas"
    assert layout.ablation_dir("m", "cas", "mean") == "results/m/interventions/mean/ablations/cas"
    # The rules pass wildcard patterns through unchanged.
    assert layout.matrix("{model}", "{selector}", "{intervention}", "summary") == (
        "results/{model}/interventions/{intervention}/matrices/{selector}.summary.parquet"
    )
    assert layout.selector_figure("m", "lap", "zero", "layers") == "results/figures/m/lap_layers"


@pytest.mark.parametrize(
    ("selectors", "message"),
    [
        ({"cas": {}, "ctl": {"method": "rnd_matched"}}, "selectors.ctl.reference is missing"),
        ({"cas": {}, "ctl": {"method": "rnd_matched", "reference": "lap"}}, "unknown selector"),
        ({"rnd": {}, "ctl": {"method": "rnd_matched", "reference": "rnd"}}, "no per-culture"),
    ],
)
def test_a_bad_control_reference_is_an_error_naming_the_key(tmp_path, selectors, message):
    plan = Plan(config_of(tmp_path, selectors=selectors, interventions=[{"kind": "zero"}]))
    with pytest.raises(ValueError, match=message):
        check_controls(plan)


def test_a_bad_ratio_fails_the_checks(tmp_path):
    plan = Plan(config_of(tmp_path, ratios=[1.5]))
    with pytest.raises(ValueError, match="1.5"):
        check_sweeps(plan)


def test_checks_pass_a_good_config_and_say_nothing(plan):
    said: list[str] = []
    check_config(plan, info=said.append, warn=said.append)
    assert said == []


def test_atlas_shows_the_culture_specific_selectors_unless_told_otherwise(tmp_path, plan):
    # Default (null): every culture-specific instance, the seeded control included; no rnd.
    assert plan.atlas_selectors == ["cas", "ctl-s0"]
    targets = plan.final_targets()
    for model in ("hub", "disk"):
        assert layout.atlas_dir(model) in targets and layout.atlas_export(model) in targets
    args = shlex.split(rule_args.atlas(plan, ["m/cas.zarr", "m/ctl.zarr"], ["c.pq", "t.pq"]))
    assert args == ["--masks", "cas=m/cas.zarr", "ctl-s0=m/ctl.zarr",
                    "--summaries", "cas=c.pq", "ctl-s0=t.pq"]  # fmt: skip
    chosen = Plan(config_of(tmp_path, atlas={"selectors": ["ctl"], "top_k": 3}), basedir=ROOT)
    assert chosen.atlas_selectors == ["ctl-s0"]  # a config key covers its seeded instances
    off = Plan(config_of(tmp_path, atlas={"enabled": False}), basedir=ROOT)
    assert off.atlas_selectors == []
    assert not [t for t in off.final_targets() if "atlas" in t]
    for wrong, message in ((["rnd"], "culture-independent"), (["nope"], "unknown selector")):
        bad = Plan(config_of(tmp_path, atlas={"selectors": wrong}), basedir=ROOT)
        with pytest.raises(ValueError, match=message):
            _ = bad.atlas_selectors
