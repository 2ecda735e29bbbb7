"""Resources of the model jobs (culture_neurons.planning.plan, which workflow/rules/common.smk
asks): batch sizes and memory per retry, and the Slurm runtime and memory that follow from each
job's work (culture_neurons.planning.work)."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from culture_neurons import cli
from culture_neurons.planning import work
from culture_neurons.planning.config import check_batch_sizes
from culture_neurons.planning.plan import Plan
from tests.dry_runs import dry_run_jobs

ROOT = Path(__file__).resolve().parents[1]


def common(models: dict) -> Plan:
    """The plan of a config with only these models (batch sizes need no more)."""
    return Plan({"models": models}, basedir=ROOT)


def test_batch_size_halves_per_retry_down_to_one():
    f = common({"m": {"batch_size": 8}})
    assert [f.batch_size("m", attempt) for attempt in (1, 2, 3, 4, 5)] == [8, 4, 2, 1, 1]


def test_max_batch_size_halves_per_retry_but_stays_at_least_the_batch_size():
    f = common({"m": {"batch_size": 8, "max_batch_size": 32}})
    sizes = [f.max_batch_size("m", attempt) for attempt in (1, 2, 3, 4)]
    assert sizes == [32, 16, 8, 4]
    batch = [f.batch_size("m", attempt) for attempt in (1, 2, 3, 4)]
    assert all(ceiling >= size for ceiling, size in zip(sizes, batch, strict=True))
    f = common({"m": {"batch_size": 8, "max_batch_size": 10}})
    assert [f.max_batch_size("m", attempt) for attempt in (1, 2)] == [10, 5]


def test_max_batch_size_unset_keeps_the_batch_fixed():
    f = common({"m": {"batch_size": 8}})
    assert [f.max_batch_size("m", attempt) for attempt in (1, 2)] == [0, 0]


def test_a_ceiling_below_the_batch_size_is_a_config_error_naming_the_model():
    f = common(
        {
            "ok": {"batch_size": 4, "max_batch_size": 4},
            "bad": {"batch_size": 16, "max_batch_size": 8},
        }
    )
    with pytest.raises(ValueError, match=r"models\.bad\.max_batch_size \(8\) is below"):
        check_batch_sizes(f)
    check_batch_sizes(common({"m": {"batch_size": 16, "max_batch_size": 0}}))


def test_memory_grows_per_retry_and_defaults_by_gpus():
    models = {"gpu": {}, "cpu": {"gpus": 0}, "set": {"gpus": 0, "mem_mb": 1500}}
    config = validated("configs/paper.yaml")
    config["models"] = {name: {"family": "generic", "path": "x", **m} for name, m in models.items()}
    del config["dataset"]["expected_items"]  # no answer rows known: the base alone
    f = paper_common(config)
    assert [f.mem_mb("record", "gpu", a) for a in (1, 2)] == [32000, 64000]
    assert f.mem_mb("record", "cpu", 1) == 4000
    assert [f.mem_mb("record", "set", a) for a in (1, 3)] == [1500, 4500]


# -- runtime and memory from the work (culture_neurons.planning.work) --------------------------

SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")
H100 = json.loads((ROOT / "benchmarks/h100/bench.json").read_text())
# The H100 bench's tokens per second: 20.16 masked answers/s, prompts of 606-1203 tokens drawn
# uniformly (mean ~904.5) plus its 20 new tokens.
H100_TOKENS_PER_S = H100["masked_items_per_s"] * ((606 + 1203) / 2 + 20)


def validated(name: str, **changes) -> dict:
    """A shipped config with the schema's defaults filled in, top-level keys replaced."""
    config = yaml.safe_load((ROOT / name).read_text())
    config.update(copy.deepcopy(changes))
    validate(config, SCHEMA)
    return config


def paper_common(config: dict) -> Plan:
    """The plan of ``config`` (its grouping file made absolute: the tests run elsewhere); its
    warnings are kept in ``.warnings``."""
    config = copy.deepcopy(config)
    config["dataset"]["grouping"] = str(ROOT / config["dataset"]["grouping"])
    warnings: list[str] = []
    plan = Plan(config, basedir=ROOT, warn=warnings.append)
    plan.warnings = warnings
    return plan


def expected_minutes(answers: float, prompt: int, load: float = 20, safety: float = 1.5) -> int:
    """The runtime formula written out: load + safety x answers x (prompt + 20 new) / rate."""
    return max(10, math.ceil(load + safety * answers * (prompt + 20) / H100_TOKENS_PER_S / 60))


def test_the_paper_plans_178_masks_per_model_and_sweeps_multiply_them():
    paper = validated("configs/paper.yaml")
    # rnd 3 seeds x 1 + rnd_matched 3 seeds x 25 + lap, lape, mad, cas x 25 cultures.
    assert work.planned_masks(paper, 25) == 3 + 75 + 100 == 178
    swept = validated(
        "configs/paper.yaml",
        ratios=[0.005, 0.02],
        interventions=[{"kind": "zero"}, {"kind": "scale", "factor": 2, "selectors": ["cas"]}],
    )
    # Three ratios for every mask, and CAS's 25 masks once more under the amplification.
    assert work.planned_masks(swept, 25) == 178 * 3 + 25 * 3
    assert work.planned_masks(paper, 7) == 3 + 7 * 3 + 4 * 7  # a dataset of 7 cultures


def test_runtime_follows_items_masks_prompt_tokens_and_the_rate():
    paper = validated("configs/paper.yaml")
    f = paper_common(paper)
    runtime = f.runtime
    qwen, llava = "qwen2.5-vl-7b", "llava-v1.6-mistral-7b"
    # CAS: 5,196 evaluation items x 25 cultures' masks, at each family's prompt length.
    assert runtime("ablate", qwen, 1, "cas") == expected_minutes(5196 * 25, 1350)
    assert runtime("ablate", llava, 1, "cas") == expected_minutes(5196 * 25, 2450)
    assert runtime("ablate", qwen, 1, "rnd-s0") == expected_minutes(5196, 1350)
    # The recording job answers both splits, the identification half with the recording hooks.
    record = runtime("record", qwen, 1)
    assert record == expected_minutes(5178 * work.RECORD_OVERHEAD + 5196, 1350)
    # A retry asks for twice the time.
    assert runtime("ablate", qwen, 2, "cas") == 2 * expected_minutes(5196 * 25, 1350)
    # A stated prompt length and rate replace the family's and the bench's.
    paper["models"][qwen].update(prompt_tokens=3000, tokens_per_s=H100_TOKENS_PER_S / 2)
    f = paper_common(paper)
    slow = f.runtime("ablate", qwen, 1, "cas")
    assert slow == max(10, math.ceil(20 + 1.5 * 5196 * 25 * 3020 / (H100_TOKENS_PER_S / 2) / 60))
    # Memory: the base plus 1 KB per answer row the job holds.
    assert f.mem_mb("ablate", qwen, 1, "cas") == 32000 + math.ceil(5196 * 25 * 1024 / 2**20)


def test_items_parquet_replaces_the_expected_counts_once_prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = paper_common(validated("configs/paper.yaml"))
    qwen = "qwen2.5-vl-7b"
    before = f.runtime("ablate", qwen, 1, "cas")
    assert before == expected_minutes(5196 * 25, 1350)
    # prepare_data ran: 4 cultures, 900 identification and 2,000 evaluation items.
    items = tmp_path / "results/data/cvqa/items.parquet"
    items.parent.mkdir(parents=True)
    cultures = ["Brazil", "Chile", "Egypt", "India"]
    pd.DataFrame(
        {
            "split": ["identification"] * 900 + ["evaluation"] * 2000,
            "culture": [cultures[i % 4] for i in range(2900)],
        }
    ).to_parquet(items)
    after = f.runtime("ablate", qwen, 1, "cas")
    assert after == expected_minutes(2000 * 4, 1350) < before
    assert f.runtime("record", qwen, 1) == expected_minutes(900 * work.RECORD_OVERHEAD + 2000, 1350)


def test_unknown_item_counts_plan_the_longest_walltime_and_say_why():
    config = validated("configs/paper.yaml")
    del config["dataset"]["expected_items"]
    f = paper_common(config)
    assert f.runtime("ablate", "pangea-7b", 1, "cas") == 2880
    assert "dataset.expected_items" in f.warnings[0]


def test_work_beyond_the_walltime_is_capped_and_the_dry_run_names_the_shards_that_fit():
    config = validated("configs/paper.yaml", planning={"max_runtime": 120})
    f = paper_common(config)
    llava = "llava-v1.6-mistral-7b"
    assert f.runtime("ablate", llava, 1, "cas") == 120
    # 1.5 x 4.8 h of work into jobs of 120 - 20 minutes of work each.
    needed = math.ceil(1.5 * 5196 * 25 * 2470 / H100_TOKENS_PER_S / 60 / 100)
    assert needed == 5
    assert f.warnings == [
        f"ablate {llava} cas: its work does not fit planning.max_runtime (120 min), so it asks "
        f"for that and may be cut off; models.{llava}.ablate_shards: {needed} would fit"
    ]
    # Split into that many shard jobs (a colleague's ablate_shards), each fits.
    config["models"][llava]["ablate_shards"] = needed
    f = paper_common(config)
    shard = f.runtime("ablate_shard", llava, 1, "cas")
    assert shard == expected_minutes(5196 * 25 / needed, 2450) <= 120
    assert f.warnings == []


def test_the_demo_model_keeps_small_runtimes():
    config = validated("config.yaml")
    model = "demo-qwen25vl-tiny"
    f = paper_common(config)
    for rule, selector in [("record", ""), ("ablate", "cas"), ("attribute", ""),
                           ("control_effect", "")]:  # fmt: skip
        assert f.runtime(rule, model, 1, selector) == 10, rule  # planning.min_runtime
        assert f.mem_mb(rule, model, 1, selector) < 4100, rule


def test_bench_rate_is_its_answers_per_second_times_its_tokens_per_answer():
    assert work.bench_tokens_per_s(H100) == pytest.approx(H100_TOKENS_PER_S)
    newer = {**H100, "sizes": {**H100["sizes"], "prompt_tokens_mean": 1000.0}}
    assert work.bench_tokens_per_s(newer) == pytest.approx(H100["masked_items_per_s"] * 1020)
    with pytest.raises(ValueError, match="tokens_per_s or planning.bench"):
        work.tokens_per_s({"family": "llava_next"}, None)


def test_paper_dry_run_asks_each_job_for_the_estimates_runtime_and_plans_its_masks():
    jobs, _ = dry_run_jobs("--configfile", "configs/paper.yaml")
    paper = validated("configs/paper.yaml")
    estimate = {
        (r.job.model, r.job.rule, r.job.name): r
        for r in work.estimate(paper, work.ItemCounts(5178, 5196), 25, H100)
    }
    masks: dict[str, int] = {}
    checked = 0
    for j in jobs:
        if j.rule not in ("ablate", "record"):
            continue
        model = j.wildcards["model"]
        name = j.wildcards.get("selector", model)
        planned = estimate[(model, j.rule, name)]
        assert int(j.resources["runtime"]) == planned.runtime
        assert int(j.resources["mem_mb"]) == planned.mem_mb
        checked += 1
        if j.rule == "ablate":
            sources = re.search(r"--sources (.*?) --ratios (.*?) --", j.shell)
            n = len(sources.group(1).split()) * len(sources.group(2).split())
            assert n == planned.job.masks
            masks[model] = masks.get(model, 0) + n
    assert checked == 3 * (1 + 10)
    # The masks the workflow plans are the ones the estimate counts: 178 per model.
    assert masks == {model: work.planned_masks(paper, 25) for model in paper["models"]}
    assert set(masks.values()) == {178}


def test_snakemake_evaluates_a_resource_again_once_its_input_exists(tmp_path):
    """What get_runtime relies on: in a dry run before prepare_data, the resource function sees
    no items.parquet; before it submits the job, Snakemake evaluates it again with the file."""
    (tmp_path / "Snakefile").write_text(
        "from pathlib import Path\n"
        "def minutes(wildcards):\n"
        "    path = Path('items.txt')\n"
        "    return int(path.read_text()) if path.exists() else 1\n"
        "rule all:\n"
        "    input: 'answer.txt'\n"
        "rule prepare:\n"
        "    output: 'items.txt'\n"
        "    shell: 'echo 37 > {output}'\n"
        "rule model_job:\n"
        "    input: 'items.txt'\n"
        "    output: 'answer.txt'\n"
        "    resources: runtime=minutes\n"
        "    shell: 'echo {resources.runtime} > {output}'\n"
    )
    run = ["snakemake", "--cores", "1", "--snakefile", str(tmp_path / "Snakefile")]
    dry = subprocess.run([*run, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "runtime=1" in dry.stdout
    done = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "answer.txt").read_text().strip() == "37"


def test_estimate_prints_every_planned_mask_and_the_gpu_hours(tmp_path, capsys, caplog):
    out = tmp_path / "estimate.md"
    paper = str(ROOT / "configs/paper.yaml")
    assert cli.main(["estimate", "--config", paper, "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    paper = validated("configs/paper.yaml")
    rows = work.estimate(paper, work.ItemCounts(5178, 5196), 25, H100)
    hours = sum(r.gpu_hours for r in rows)
    # Three models x 178 masks x 5,196 items, and the total GPU-hours of every model job.
    assert f"| **total** | | | | {3 * 178 * 5196:,} | {hours:.1f} | |" in text
    assert text.count("| ablate qwen2.5-vl-7b ") == 10
    # A config without expected_items and no items.parquet: one line naming what to give.
    assert cli.main(["estimate", "--config", str(ROOT / "configs/smollm2.yaml")]) == 2
    assert "dataset.expected_items" in caplog.text


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c["planning"].update(safety_factor=0.5), "safety_factor"),
        (lambda c: c["planning"].update(max_runtime=0), "max_runtime"),
        (lambda c: c["planning"].update(walltime=60), "walltime"),
        (lambda c: c["models"]["pangea-7b"].update(prompt_tokens=0), "prompt_tokens"),
        (lambda c: c["models"]["pangea-7b"].update(tokens_per_s=0), "tokens_per_s"),
        (lambda c: c["dataset"]["expected_items"].pop("evaluation"), "evaluation"),
    ],
)
def test_schema_rejects_bad_planning_keys_naming_them(mutate, key):
    from snakemake.exceptions import WorkflowError

    config = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
    config["planning"] = {}
    mutate(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, SCHEMA)
    assert key in str(error.value)


def test_a_rule_without_a_planned_job_is_a_clear_error():
    f = paper_common(validated("configs/paper.yaml"))
    with pytest.raises(ValueError, match="no runtime for attribute .* no job attribute"):
        f.runtime("attribute", "pangea-7b", 1)  # no attribution selector here
