"""The package layout mirrors the DAG: every subcommand calls one stage function, defined in the
stages module of its name, whose parameters are the subcommand's options; the domain packages
never import the stages; the old public imports keep working."""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
import typing
from pathlib import Path

import pytest

from culture_neurons import cli

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "culture_neurons"
GLOBAL_DESTS = {"help", "verbose", "threads", "command"}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def stage_of(sub: argparse.ArgumentParser):
    module, _, name = sub.get_default("stage").partition(":")
    return importlib.import_module(module), getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("command", sorted(subcommands()))
def test_a_subcommand_calls_one_stage_function_with_its_options(command):
    sub = subcommands()[command]
    module, stage = stage_of(sub)
    # rule = subcommand = stage module: the function is defined there, not re-exported.
    expected = f"culture_neurons.stages.{command.replace('-', '_')}"
    assert module.__name__ == expected, f"{command}: stage in {module.__name__}, not {expected}"
    assert stage.__module__ == expected, f"{command}: {stage.__qualname__} defined elsewhere"
    options = {a.dest for a in sub._actions} - GLOBAL_DESTS - {"stage"}
    params = inspect.signature(stage).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind is not p.VAR_KEYWORD}
    assert named <= options, f"{command}: the CLI cannot pass {named - options}"
    assert accepts_any or options <= named, f"{command}: {options - named} reach no parameter"
    assert stage.__doc__, f"{stage.__qualname__} has no docstring"
    hints = typing.get_type_hints(stage)
    assert "return" in hints and set(named) <= set(hints), f"{stage.__qualname__} lacks hints"


def test_the_stages_package_holds_one_module_per_subcommand_and_nothing_else():
    modules = {p.stem for p in (PACKAGE / "stages").glob("*.py")} - {"__init__"}
    assert modules == {c.replace("-", "_") for c in subcommands()}
    assert not [p for p in (PACKAGE / "stages").iterdir() if p.is_dir() and p.name != "__pycache__"]


def imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def domain_modules() -> list[Path]:
    return [
        p
        for p in sorted(PACKAGE.rglob("*.py"))
        if p.relative_to(PACKAGE).parts[0] not in {"stages", "cli.py"}
    ]


def test_domain_modules_never_import_the_stages():
    assert len(domain_modules()) > 50  # the walk found the package
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(m for m in imported_modules(path) if "stages" in m)
        for path in domain_modules()
        if any(m == "culture_neurons.stages" or m.startswith("culture_neurons.stages.")
               for m in imported_modules(path))
    }  # fmt: skip
    assert not offenders, offenders


def test_selection_does_not_import_analysis():
    # analysis reads selection's conventions; the way back would make an import cycle.
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in sorted((PACKAGE / "selection").glob("*.py"))
        if any(m.startswith("culture_neurons.analysis") for m in imported_modules(path))
    ]
    assert not offenders, offenders


def test_prepare_stage_takes_exactly_the_dataset_config_fields():
    from culture_neurons.data.prepare import DatasetConfig

    sub = subcommands()["prepare-data"]
    options = {a.dest for a in sub._actions} - GLOBAL_DESTS - {"stage", "out_dir"}
    assert options == set(DatasetConfig.__dataclass_fields__)


def test_the_cli_module_defines_no_stage_logic():
    functions = [n for n, f in vars(cli).items() if inspect.isfunction(f)]
    stage_like = [n for n in functions if n.startswith("cmd_")]
    assert not stage_like
    # About 20 lines per subcommand parser and no more: logic that creeps in shows up here.
    lines = len((PACKAGE / "cli.py").read_text().splitlines())
    assert lines < 24 * len(cli.SUBCOMMANDS), lines


def test_at_most_four_modules_sit_directly_under_the_package():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 4, modules


def test_the_old_public_imports_still_work():
    from culture_neurons.selectors import select as select_by_path

    from culture_neurons import answers, selectors

    assert selectors.select is select_by_path
    assert answers.extract_choice("the cat", ["dog", "cat", "bird", "fish"]) == 1
    assert answers.is_correct("the cat", ["dog", "cat", "bird", "fish"], 1)
    import culture_neurons.answers as answers_by_path

    assert answers_by_path is answers


# -- one name per stage: rule = subcommand = stage function ---------------------------------------
WORKFLOW = PACKAGE.parents[1] / "workflow"
# Rules that run no stage of their own.
RULES_WITHOUT_SUBCOMMAND = {"all"}
# Subcommands for a person, not for the DAG.
SUBCOMMANDS_WITHOUT_RULE = {"bench", "estimate"}
# `use rule X as X_intervention`: the same stage for an intervention other than the headline;
# `X_at_site`: for a site other than the decoder MLP.
VARIANT_SUFFIXES = ("_intervention", "_at_site")


def stage_rule(rule: str) -> str:
    """The rule whose stage a `use rule` variant runs (itself for any other rule)."""
    for suffix in VARIANT_SUFFIXES:
        rule = rule.removesuffix(suffix)
    return rule


def workflow_rule_commands() -> dict[str, str | None]:
    """Every rule of the workflow (those made by `use rule ... as` too) -> the subcommand its
    shell runs (a `use rule` variant runs its parent's)."""
    texts = [(WORKFLOW.parent / "Snakefile").read_text()]
    texts += [p.read_text() for p in sorted((WORKFLOW / "rules").glob("*.smk"))]
    rules: dict[str, str | None] = {}
    for text in texts:
        for name, body in re.findall(
            r"^\s*rule (\w+):\n(.*?)(?=^\S|^\s*rule |\Z)", text, re.M | re.S
        ):
            command = re.search(r"culture-neurons (?:--threads \{threads\} )?([a-z-]+)", body)
            rules[name] = command.group(1) if command else None
        for parent, name in re.findall(r"^use rule (\w+) as (\w+) with:", text, re.M):
            rules[name] = rules[parent]
    return rules


def test_every_rule_runs_the_subcommand_of_its_name_and_every_subcommand_has_a_rule():
    rules = workflow_rule_commands()
    assert {
        "record",
        "make_demo",
        "train_demo",
        "prepare_task",
        "ablate_shard_intervention",
    } <= set(rules)
    for rule, command in rules.items():
        if rule in RULES_WITHOUT_SUBCOMMAND:
            assert command is None, rule
            continue
        stage = stage_rule(rule)
        assert command == stage.replace("_", "-"), f"rule {rule} runs culture-neurons {command}"
    staged = {stage_rule(r).replace("_", "-") for r in rules}
    without_rule = set(subcommands()) - staged
    assert without_rule == SUBCOMMANDS_WITHOUT_RULE, without_rule
    # SUBCOMMANDS spells each subcommand as its rule does.
    assert {c.replace("_", "-") for c in cli.SUBCOMMANDS} == set(subcommands())
