"""Sites beyond the decoder MLP in the plan (culture_neurons.planning): each site's selector
instances, the stores they score, the record_site jobs and the per-site tables; a decoder-only
config plans exactly what it planned before sites existed."""

from __future__ import annotations

import pytest

from culture_neurons.planning import layout
from culture_neurons.planning.config import check_config
from culture_neurons.planning.plan import Plan
from culture_neurons.planning.work import ItemCounts, model_jobs, selector_instances
from culture_neurons.selection.conventions import site_instance, split_site
from tests.dry_runs import ROOT
from tests.test_plan import config_of

SITES = {"decoder_mlp": None, "vision_mlp": ["rnd", "cas", "ctl"], "attention_heads": ["cas"]}


@pytest.fixture
def site_plan(tmp_path, monkeypatch) -> Plan:
    monkeypatch.chdir(tmp_path)
    return Plan(config_of(tmp_path, sites=SITES), basedir=ROOT)


def test_site_names_round_trip():
    for site in ("vision_mlp", "attention_heads"):
        assert split_site(site_instance(site, "rnd-s3")) == (site, "rnd-s3")
    assert site_instance("decoder_mlp", "cas") == "cas"
    # A selector whose own name has a dot is no site's.
    assert split_site("my.sel") == ("decoder_mlp", "my.sel")


def test_each_site_gets_its_listed_selectors_and_a_control_matched_at_its_site(site_plan):
    selectors = site_plan.selectors
    assert list(selectors)[:4] == ["rnd-s3", "rnd-s7", "cas", "ctl-s0"]  # the decoder's, as before
    assert {s for s in selectors if s.startswith("vision_mlp.")} == {
        "vision_mlp.rnd-s3", "vision_mlp.rnd-s7", "vision_mlp.cas", "vision_mlp.ctl-s0"
    }  # fmt: skip
    assert [s for s in selectors if s.startswith("attention_heads.")] == ["attention_heads.cas"]
    assert site_plan.control_reference("vision_mlp.ctl-s0") == "vision_mlp.cas"
    assert site_plan.control_reference("ctl-s0") == "cas"
    assert site_plan.extra_sites == ["vision_mlp", "attention_heads"]


def test_a_site_selector_scores_its_sites_store(site_plan):
    assert site_plan.selector_store("m", "cas") == "results/m/activations.zarr"
    assert site_plan.selector_store("m", "vision_mlp.cas") == "results/m/sites/vision_mlp.zarr"
    assert layout.activations("m", "attention_heads") == "results/m/sites/attention_heads.zarr"


def test_analyses_across_selectors_compare_the_decoder_mlp_only(site_plan):
    assert site_plan.decoder_selectors == ["rnd-s3", "rnd-s7", "cas", "ctl-s0"]
    assert site_plan.culture_specific_selectors == ["cas", "ctl-s0"]
    assert list(site_plan.data_driven_selectors) == ["cas"]
    assert site_plan.atlas_selectors == ["cas", "ctl-s0"]


def test_targets_hold_each_sites_store_and_table(site_plan):
    targets = site_plan.final_targets()
    for model in site_plan.model_names:
        for site in ("vision_mlp", "attention_heads"):
            assert layout.activations(model, site) in targets
        assert layout.selector_figure(model, "vision_mlp.cas", "zero", "layers") + ".png" in targets
    for site in ("vision_mlp", "attention_heads"):
        assert layout.summary(f"table2_{site}.csv") in targets
    assert len(targets) == len(set(targets))


def test_a_record_site_job_is_planned_per_model_and_site(site_plan):
    counts = ItemCounts(identification=100, evaluation=100)
    jobs = {(j.rule, j.name): j for j in model_jobs(site_plan.config, "hub", counts, 4)}
    assert {"vision_mlp", "attention_heads"} <= {n for r, n in jobs if r == "record_site"}
    # One prompt forward per identification item, no generated tokens.
    record, site = jobs["record", "hub"], jobs["record_site", "vision_mlp"]
    assert site.tokens < record.tokens
    assert ("ablate", "vision_mlp.cas") in jobs
    assert site_plan.runtime("record_site", "hub", 1, "vision_mlp") >= 1


def test_a_decoder_only_config_plans_what_it_did_before(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = Plan(config_of(tmp_path), basedir=ROOT)
    explicit = Plan(config_of(tmp_path, sites={"decoder_mlp": None}), basedir=ROOT)
    assert default.config["sites"] == {"decoder_mlp": None}  # the schema's default
    assert default.selectors == selector_instances(default.config["selectors"])
    assert default.final_targets() == explicit.final_targets()
    assert not any("sites/" in t or "table2_" in t and "_sweep" not in t and "signif" not in t
                   for t in default.final_targets())  # fmt: skip


@pytest.mark.parametrize(
    ("sites", "message"),
    [
        ({"decoder_mlp": None, "vision_mlp": ["nope"]}, "sites.vision_mlp: unknown selector"),
        ({"decoder_mlp": None, "vision_mlp": ["ctl"]}, "add cas to sites.vision_mlp"),
        ({"decoder_mlp": None, "vision_mlp": ["att"]}, "decoder-MLP neurons only"),
    ],
)
def test_a_site_cannot_run_what_it_cannot_score(tmp_path, monkeypatch, sites, message):
    monkeypatch.chdir(tmp_path)
    config = config_of(tmp_path, sites=sites)
    config["selectors"]["att"] = {"method": "attr"}
    with pytest.raises(ValueError, match=message):
        check_config(Plan(config, basedir=ROOT), print, print)


def test_mean_patching_is_refused_for_attention_heads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_of(
        tmp_path,
        sites={"decoder_mlp": None, "attention_heads": ["cas"]},
        interventions=[{"kind": "zero"}, {"kind": "mean"}],
    )
    with pytest.raises(ValueError, match="attention heads do not record"):
        check_config(Plan(config, basedir=ROOT), print, print)
    config["interventions"][1]["selectors"] = ["cas"]  # the decoder's cas only
    check_config(Plan(config, basedir=ROOT), print, print)


def test_each_site_with_a_data_driven_selector_gets_a_stability_job(site_plan):
    assert site_plan.stability_sites == ["vision_mlp", "attention_heads"]
    assert list(site_plan.data_driven_selectors_at("vision_mlp")) == ["vision_mlp.cas"]
    targets = site_plan.final_targets()
    assert layout.stability_figure("hub", "vision_mlp") + ".png" in targets
    assert layout.stability("hub", "summary.csv", "vision_mlp") == (
        "results/hub/sites/vision_mlp/stability/summary.csv"
    )
