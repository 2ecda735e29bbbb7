"""The plan of one workflow invocation, built once from the validated config.

Everything the DAG is made of: the models and where their weights come from, the selector
instances and their sources, the interventions and ratios, the extra tasks, the cultures, the
ablate shards, the final targets, and each model job's resources. Plain Python over the config
(its defaults filled in by the schema), so that it is tested without Snakemake; the rules'
input and param functions in workflow/rules/common.smk are thin calls into it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from culture_neurons.ablation.conditions import (
    HEADLINE,
    SEEDED,
    Intervention,
    intervention_selectors,
    parse_interventions,
    parse_ratios,
)
from culture_neurons.data.prepare import planned_cultures
from culture_neurons.demo.shipped import demo_recipe, trains_here
from culture_neurons.planning import layout
from culture_neurons.planning.work import (
    ItemCounts,
    Job,
    Planning,
    base_mem_mb,
    job_seconds,
    mem_mb,
    model_jobs,
    runtime_minutes,
    selector_instances,
    shards_to_fit,
    tokens_per_s,
)
from culture_neurons.selection import registry
from culture_neurons.selection.conventions import ALL_CULTURES, DECODER_MLP, split_site
from culture_neurons.selection.registry import is_culture_independent

log = logging.getLogger(__name__)

# A hub id is "owner/name"; anything that exists on disk is a local folder instead.
HUB_ID_RE = r"[A-Za-z0-9][\w.-]*/[\w.-]+"

# Keys that only plan or split a model's jobs: not in the model JSON, so changing them reruns
# nothing (a chunk size or shard count changes how an ablate job's work is cut, not its tables).
PLANNING_KEYS = ("prompt_tokens", "tokens_per_s", "ablate_shards", "ablate_chunk_items")

# The extra tasks of the attribution selectors, read from dataset.local_dir.
EXTRA_TASKS = ("control", "exclusion")

# The model rules whose work `planning.work.model_jobs` plans; the ablate variants share one
# ablate Job per selector and intervention (its shards included).
ABLATE_RULES = ("ablate", "ablate_intervention")


@functools.cache
def _split_counts(items: str, _mtime: int, control: str, _control_mtime: int) -> ItemCounts:
    """Items per split, read once per file version: every model job's resources ask."""
    splits = pd.read_parquet(items, columns=["split"])["split"].value_counts()
    counts = {"identification": 0, "evaluation": 0, **splits.to_dict()}
    extra = {}
    if control:
        splits = pd.read_parquet(control, columns=["split"])["split"].value_counts()
        extra = {f"control_{k}": int(v) for k, v in splits.items()}
    return ItemCounts(int(counts["identification"]), int(counts["evaluation"]), **extra)


@functools.cache
def _item_cultures(items: str, _mtime: int) -> tuple[str, ...]:
    return tuple(sorted(pd.read_parquet(items, columns=["culture"])["culture"].unique()))


class Plan:
    """The plan of a validated config (``snakemake.utils.validate`` has filled its defaults).

    ``basedir`` is the checkout (relative config paths such as planning.bench are under it);
    ``warn`` receives the dry run's warnings (Snakemake's logger in the workflow).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        basedir: str | Path = ".",
        warn: Callable[[str], Any] = log.warning,
    ) -> None:
        self.config = config
        self.basedir = Path(basedir)
        self.warn = warn
        self._warned: set[str] = set()

    # -- dataset ---------------------------------------------------------------------------
    @property
    def dataset(self) -> Mapping[str, Any]:
        return self.config["dataset"]

    @property
    def dataset_name(self) -> str:
        return self.dataset["name"]

    @property
    def is_demo_dataset(self) -> bool:
        return "demo" in self.dataset

    def demo_shards(self) -> list[str]:
        """The demo source parquet files (rule make_demo writes them)."""
        root = self.dataset["local_dir"]
        return [
            f"{root}/data/test-00000-of-00001.parquet",
            f"{root}/data/train-00000-of-00001.parquet",
            f"{root}/data/control-00000-of-00001.parquet",
        ]

    def items(self, task: str = "") -> str:
        return layout.items(self.dataset_name, task)

    def dataset_sources(self, task: str = "") -> list[str]:
        """What prepare_data (or prepare_task for ``task``) reads."""
        files = self.extra_tasks()[task] if task else self.dataset["files"]
        if self.is_demo_dataset:
            inputs = self.demo_shards()
        elif self.dataset["source"] == "local":
            inputs = sorted(str(p) for p in Path(self.dataset["local_dir"]).glob(files))
        else:
            inputs = [layout.dataset_download_record()]
        if self.dataset.get("grouping"):
            inputs.append(self.dataset["grouping"])
        return inputs

    @property
    def needs_dataset_download(self) -> bool:
        return not self.is_demo_dataset and self.dataset["source"] == "hub"

    @property
    def labels_hidden(self) -> bool:
        """Whether this run reads CVQA from the hub with no labels file: the public CVQA card
        says every Label is -1, so the correctness filter and accuracy have nothing to score."""
        return (
            not self.is_demo_dataset
            and self.dataset["kind"] == "cvqa"
            and self.dataset["source"] == "hub"
            and not self.dataset.get("labels_file")
        )

    def cultures(self) -> list[str]:
        """Culture codes of the dataset: from items.parquet once it exists (read once per file
        version), else planned from the grouping file (CVQA) or the local text table."""
        items = Path(self.items())
        if items.exists():
            return list(_item_cultures(str(items), items.stat().st_mtime_ns))
        return list(self._planned_cultures)

    @functools.cached_property
    def _planned_cultures(self) -> tuple[str, ...]:
        # Once per invocation: every selector's sources ask, and a text table is read whole.
        return tuple(planned_cultures(self.dataset))

    # -- models ----------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.config["models"])

    def model(self, name: str) -> Mapping[str, Any]:
        return self.config["models"][name]

    @property
    def demo_model_names(self) -> list[str]:
        """Models of the embedded demo (a demo_training block): the shipped weights at their
        path, or trained here by rule train_demo."""
        return [n for n in self.model_names if "demo_training" in self.model(n)]

    @functools.cache  # noqa: B019 - one Plan per invocation; the provenance is read once
    def demo_training_plan(self, name: str) -> tuple[bool, list[str]]:
        """Whether train_demo trains this model here, and why; the weights at its path stand
        for it only if their provenance's recipe is this config's."""
        if not self.is_demo_dataset:
            raise ValueError(
                f"models.{name}.demo_training: the demo model learns the embedded demo's data, "
                "so it needs dataset.demo"
            )
        entry = self.model(name)
        training = entry["demo_training"]
        recipe = demo_recipe(self.dataset["demo"], training)
        try:
            return trains_here(training["train"], entry["path"], recipe)
        except Exception as error:
            raise ValueError(f"models.{name}: {error}") from None

    @property
    def trained_demo_model_names(self) -> list[str]:
        return [n for n in self.demo_model_names if self.demo_training_plan(n)[0]]

    @property
    def gguf_model_names(self) -> list[str]:
        """Models whose weights rule prepare_checkpoint converts from a GGUF file."""
        return [n for n in self.model_names if "gguf" in self.model(n)]

    def is_hub_model(self, name: str) -> bool:
        """A model whose weights come from the Hugging Face hub: not the demo's, not a
        converted GGUF file, not a folder on disk."""
        path = str(self.model(name)["path"])
        if name in self.demo_model_names or name in self.gguf_model_names or Path(path).exists():
            return False
        return re.fullmatch(HUB_ID_RE, path) is not None

    @property
    def hub_model_names(self) -> list[str]:
        return [n for n in self.model_names if self.is_hub_model(n)]

    def model_path(self, name: str) -> str:
        """The weights a model's jobs load: a trained demo model's own, else its path."""
        if name in self.trained_demo_model_names:
            return layout.demo_weights(name)
        return self.model(name)["path"]

    def model_input(self, name: str) -> list[str]:
        """Weights the workflow makes (a demo model's training, a GGUF conversion) are inputs,
        also of another model entry that names them (e.g. a blind run); so are the shipped demo
        weights, so that regenerated weights rerun what used them. Hub models wait for their
        download record."""
        trained = self.trained_demo_model_names
        made = {layout.demo_weights(n) for n in trained}
        made |= {layout.checkpoint_dir(n) for n in self.gguf_model_names}
        shipped = {self.model(n)["path"] for n in self.demo_model_names if n not in trained}
        path = self.model_path(name)
        if path in shipped:
            return [f"{path}/model.safetensors"]
        if path in made:
            return [path]
        return [layout.model_download_record(name)] if self.is_hub_model(name) else []

    def model_entry_for_jobs(self, name: str) -> dict[str, Any]:
        """The models: entry a model job gets (as JSON): the weights it loads, no planning keys,
        and for a hub model the download record whose commit it loads."""
        entry = {**self.model(name), "path": self.model_path(name)}
        entry = {k: v for k, v in entry.items() if k not in PLANNING_KEYS}
        if self.is_hub_model(name):
            entry["download"] = layout.model_download_record(name)
        return entry

    # -- selectors -------------------------------------------------------------------------
    @functools.cached_property
    def selectors(self) -> dict[str, dict[str, Any]]:
        """Selector instance name -> parameters (with 'method'); seeds expand to one each."""
        return selector_instances(self.config["selectors"], self.config["sites"])

    @property
    def extra_sites(self) -> list[str]:
        """The configured sites other than the decoder MLP (docs/sites.md), in config order."""
        return [site for site in self.config["sites"] if site != DECODER_MLP]

    def site_of(self, selector: str) -> str:
        return split_site(selector)[0]

    @property
    def decoder_selectors(self) -> list[str]:
        """The instances at the decoder MLP: what the analyses across selectors (overlap,
        stability, the atlas, the control effect) compare, one unit space for all."""
        return [s for s in self.selectors if self.site_of(s) == DECODER_MLP]

    def method(self, selector: str) -> str:
        return self.selectors[selector]["method"]

    def control_reference(self, selector: str) -> str | None:
        """The selector instance a control (rnd_matched) is matched to, or None."""
        key = registry.spec(self.method(selector)).reference
        return self.selectors[selector].get(key) if key else None

    def is_attribution_selector(self, selector: str) -> bool:
        return registry.input_store(self.method(selector)) == registry.ATTRIBUTION_STORE

    def selector_store(self, model: str, selector: str) -> str:
        """The store a selector scores: the attribution store or the activation store."""
        if self.is_attribution_selector(selector):
            return layout.attribution_store(model)
        return layout.activations(model, self.site_of(selector))

    @property
    def attribution_selectors(self) -> list[str]:
        return [s for s in self.selectors if self.is_attribution_selector(s)]

    @property
    def culture_specific_selectors(self) -> list[str]:
        return [s for s in self.decoder_selectors if not is_culture_independent(self.method(s))]

    @property
    def data_driven_selectors(self) -> dict[str, dict[str, Any]]:
        """Instances selected from the firing statistics: not culture-independent (RND), not
        controls, not attribution selectors (they score the attribution store)."""
        return self.data_driven_selectors_at(DECODER_MLP)

    def data_driven_selectors_at(self, site: str) -> dict[str, dict[str, Any]]:
        """`data_driven_selectors` at one site: what its stability job resamples."""
        return {
            name: params
            for name, params in self.selectors.items()
            if registry.is_data_driven(params["method"]) and self.site_of(name) == site
        }

    @property
    def stability_sites(self) -> list[str]:
        """The sites other than the decoder MLP that have a data-driven selector to resample."""
        return [s for s in self.extra_sites if self.data_driven_selectors_at(s)]

    def sources_of(self, selector: str) -> list[str]:
        """The source cultures of a selector's masks (one for a culture-independent one)."""
        if is_culture_independent(self.method(selector)):
            return [ALL_CULTURES]
        return self.cultures()

    @functools.cached_property
    def atlas_selectors(self) -> list[str]:
        """The selector instances the atlas shows: atlas.selectors (config keys or instances;
        ``rnd`` covers ``rnd-s0``, ...) or, when null, every culture-specific one; none when
        atlas.enabled is false."""
        atlas = self.config["atlas"]
        if not atlas["enabled"]:
            return []
        wanted = atlas["selectors"]
        if wanted is None:
            return self.culture_specific_selectors
        chosen: list[str] = []
        for name in wanted:
            matches = [s for s in self.decoder_selectors if s == name or SEEDED.sub("", s) == name]
            if not matches:
                known = ", ".join(self.decoder_selectors)
                raise ValueError(f"atlas.selectors: unknown selector {name!r}; one of {known}")
            independent = [m for m in matches if is_culture_independent(self.method(m))]
            if independent:
                raise ValueError(
                    f"atlas.selectors: {independent[0]} chooses no neurons per culture (it is "
                    "culture-independent): the atlas lists each culture's neurons"
                )
            chosen += [m for m in matches if m not in chosen]
        return chosen

    # -- extra tasks (attribution) ---------------------------------------------------------
    def extra_tasks(self) -> dict[str, str]:
        """The configured extra tasks (control, exclusion) -> their files under local_dir."""
        attribution = self.config["attribution"]
        tasks = {t: attribution[f"{t}_files"] for t in EXTRA_TASKS if attribution.get(f"{t}_files")}
        if tasks and self.dataset["source"] != "local":
            raise ValueError(
                f"attribution.{next(iter(tasks))}_files: task files are read from "
                "dataset.local_dir, so they need dataset.source: local"
            )
        return tasks

    @property
    def control_effect_selectors(self) -> list[str]:
        """Culture-independent selectors whose masks the control task measures."""
        if "control" not in self.extra_tasks():
            return []
        return [s for s in self.decoder_selectors if is_culture_independent(self.method(s))]

    # -- ratios and interventions ----------------------------------------------------------
    @property
    def headline_ratio(self) -> float:
        return float(self.config["ratio"])

    @functools.cached_property
    def ratios(self) -> list[float]:
        """Every swept ratio, ascending, the headline included (config ratio + ratios)."""
        return parse_ratios(self.config["ratio"], self.config.get("ratios"))

    @property
    def other_ratios(self) -> list[float]:
        return [r for r in self.ratios if r != self.headline_ratio]

    @functools.cached_property
    def interventions(self) -> dict[str, Intervention]:
        """Intervention name -> Intervention, zero first."""
        return {i.name: i for i in parse_interventions(self.config.get("interventions"))}

    @functools.cached_property
    def intervention_runs(self) -> dict[str, list[str]]:
        """Intervention name -> the selector instances it runs for."""
        _ = self.interventions  # validates the list first
        return intervention_selectors(self.config.get("interventions"), self.selectors)

    def sweep_runs(self) -> list[tuple[str, str]]:
        """(selector, intervention) of every ablate job of a model."""
        return [(s, name) for name, selectors in self.intervention_runs.items() for s in selectors]

    def sweep_dirs(self, model: str, selector: str, intervention: str) -> list[str]:
        """One folder per swept ratio other than the headline, all written by the selector's
        one ablate job: a ratio added to the config is a missing output, so that job reruns."""
        return [layout.sweep_dir(model, selector, intervention, r) for r in self.other_ratios]

    # -- ablate shards ---------------------------------------------------------------------
    def ablate_shards(self, model: str) -> int:
        """models.<name>.ablate_shards: jobs that share out each ablate job's chunks."""
        return self.model(model)["ablate_shards"]

    def gathers_only(self, model: str) -> bool:
        """Whether model ``model``'s ablate jobs are split into shards and only gather them."""
        return self.ablate_shards(model) > 1

    def shard_markers(self, model: str, selector: str, intervention: str) -> list[str]:
        """The ablate job's shard markers when split; none otherwise (its DAG unchanged)."""
        shards = self.ablate_shards(model)
        if shards == 1:
            return []
        return [layout.ablate_shard_done(model, selector, intervention, k) for k in range(shards)]

    # -- targets ---------------------------------------------------------------------------
    def summary_paths(self, kind: str = "summary") -> dict[tuple[str, str], str]:
        """(model, selector) -> its headline matrices table of ``kind`` (summary,
        significance), the inputs of rule summary."""
        return {
            (m, s): layout.matrix(m, s, HEADLINE, kind)
            for m in self.model_names
            for s in self.selectors
        }

    def sweep_paths(self, kind: str) -> dict[tuple[str, str, str], str]:
        """(model, selector, intervention) -> its every-ratio matrices table of ``kind``."""
        return {
            (m, s, i): layout.sweep_matrix(m, s, i, kind)
            for m in self.model_names
            for s, i in self.sweep_runs()
        }

    def final_targets(self) -> list[str]:
        """What rule all asks for."""
        name = self.dataset_name
        targets = [layout.items(name), layout.data_report(name, ext=".md")]
        for model in self.trained_demo_model_names:
            targets.append(layout.demo_model_report(model))
        for model in self.model_names:
            targets += self.model_targets(model)
        for model in self.model_names:
            if self.attribution_selectors:
                targets.append(layout.attribution_report(model))
            if self.control_effect_selectors:
                targets.append(layout.control_effect(model, ".md"))
        targets += layout.figure_files(layout.baseline_figure())
        targets += [layout.summary(f"table2_sweep{ext}") for ext in (".csv", ".md")]
        targets += [layout.summary(f"table2{ext}") for ext in (".csv", ".md", ".tex")]
        targets.append(layout.summary("table2_significance.csv"))
        for site in self.extra_sites:
            targets += [layout.summary(f"table2_{site}{ext}") for ext in (".csv", ".md", ".tex")]
        return targets

    def model_targets(self, model: str) -> list[str]:
        """One model's final targets: its store, baselines, figures and every sweep folder."""
        targets = [layout.activations(model), layout.baseline(model, "evaluation")]
        targets += [layout.activations(model, site) for site in self.extra_sites]
        for selector in self.selectors:
            for figure in ("ablation", "layers", "significance"):
                targets += layout.figure_files(
                    layout.selector_figure(model, selector, HEADLINE, figure)
                )
        for figure in ("stability", "overlap"):
            targets += layout.figure_files(layout.model_figure(model, figure))
        for site in self.stability_sites:
            targets += layout.figure_files(layout.stability_figure(model, site))
        targets += self.dose_response_figures(model)
        targets.append(layout.dose_response_table(model))
        if self.atlas_selectors:
            targets += [layout.atlas_dir(model), layout.atlas_export(model)]
        # Each ratio's ablations are targets themselves: Snakemake does not rerun a job for a
        # missing intermediate, so without them an added ratio would go unnoticed.
        for selector, intervention in self.sweep_runs():
            targets += self.sweep_dirs(model, selector, intervention)
        for intervention, selectors in self.intervention_runs.items():
            if intervention == HEADLINE:
                continue
            for selector in selectors:
                for figure in ("ablation", "significance"):
                    targets += layout.figure_files(
                        layout.selector_figure(model, selector, intervention, figure)
                    )
        return targets

    def dose_response_figures(self, model: str) -> list[str]:
        """One figure per intervention and site it runs at (the decoder MLP's unprefixed)."""
        paths = []
        for site in self.config["sites"]:
            prefix = "" if site == DECODER_MLP else f"{site}_"
            for name, selectors in self.intervention_runs.items():
                if any(self.site_of(s) == site for s in selectors):
                    figure = layout.model_figure(model, f"{prefix}dose_response_{name}")
                    paths += layout.figure_files(figure)
        return paths

    # -- resources of the model jobs (culture_neurons.planning.work) -----------------------
    def configured_batch_sizes(self, model: str) -> tuple[int, int]:
        """models.<name>'s batch_size and max_batch_size (0: none), before retries."""
        entry = self.model(model)
        # max_batch_size has no schema default on purpose: one would enter every job's model
        # JSON (a param), so adding it would rerun every model job of a finished run.
        return entry["batch_size"], entry.get("max_batch_size", 0)

    def batch_size(self, model: str, attempt: int) -> int:
        """The model's batch size, halved on each retry (a failed GPU job most often ran out
        of memory)."""
        return max(1, self.configured_batch_sizes(model)[0] // 2 ** (attempt - 1))

    def max_batch_size(self, model: str, attempt: int) -> int:
        """The ceiling of adaptive batches (0: a fixed batch size), halved on each retry like
        the batch size and never below that attempt's batch size."""
        ceiling = self.configured_batch_sizes(model)[1]
        if not ceiling:
            return 0
        return max(self.batch_size(model, attempt), ceiling // 2 ** (attempt - 1))

    def chunk_items(self, model: str) -> int:
        """Items per activation-store chunk, from the configured batch size (not the retry's):
        a retried record resumes the partial store only if the chunks keep their size."""
        return 4 * self.configured_batch_sizes(model)[0]

    def gpus(self, model: str) -> int:
        return self.model(model)["gpus"]

    def gathers_shards(self, rulename: str, model: str) -> bool:
        """An ablate job split into shards only gathers their chunks: no model, no GPU."""
        return rulename in ABLATE_RULES and self.gathers_only(model)

    def item_counts(self) -> ItemCounts | None:
        """Items per split: items.parquet's once prepare_data wrote it, else the config's
        dataset.expected_items, else None (unknown). Snakemake evaluates resources again just
        before it submits a job, when items.parquet exists (its upstream prepare_data ran)."""
        items = Path(self.items())
        if items.exists():
            control = Path(self.items("control"))
            return _split_counts(
                str(items),
                items.stat().st_mtime_ns,
                str(control) if control.exists() else "",
                control.stat().st_mtime_ns if control.exists() else 0,
            )
        expected = self.dataset.get("expected_items")
        return ItemCounts(**expected) if expected else None

    @functools.cached_property
    def bench(self) -> dict[str, Any] | None:
        """planning.bench's bench.json (relative to the checkout), or None."""
        path = self.config["planning"]["bench"]
        if not path:
            return None
        path = Path(path) if Path(path).is_absolute() else self.basedir / path
        if not path.exists():
            raise ValueError(f"planning.bench: {path} does not exist")
        return json.loads(path.read_text())

    def job(
        self, rulename: str, model: str, selector: str = "", intervention: str = HEADLINE
    ) -> Job | None:
        """The Job of this rule and wildcards, or None while the item counts are unknown."""
        counts = self.item_counts()
        if counts is None:
            return None
        # ablate, ablate_intervention and a shard of either share one ablate Job (its shards).
        kind, name = rulename, model
        if rulename == "record_site":
            name = selector  # the site (`job_name` in common.smk)
        if rulename.startswith("ablate"):
            kind = "ablate" if intervention == HEADLINE else "ablate_intervention"
            name = selector if intervention == HEADLINE else f"{intervention}/{selector}"
        jobs = model_jobs(self.config, model, counts, len(self.cultures()))
        found = [job for job in jobs if (job.rule, job.name) == (kind, name)]
        if not found:
            raise ValueError(
                f"no runtime for {rulename} of model {model}: "
                f"culture_neurons.planning.work.model_jobs plans no job {kind} {name}"
            )
        return found[0]

    def mem_mb(
        self,
        rulename: str,
        model: str,
        attempt: int,
        selector: str = "",
        intervention: str = HEADLINE,
    ) -> int:
        """Host memory (MB) of a model job: models.<name>.mem_mb (default 32 GB with a GPU and
        4 GB without) plus the answer rows it holds; each retry asks for that much more."""
        entry = self.model(model)
        gathers = self.gathers_shards(rulename, model)
        base = base_mem_mb({**entry, "gpus": 0} if gathers else entry)
        job = self.job(rulename, model, selector, intervention)
        if job is None:
            return base * attempt
        # The gathering job reads every shard's answer rows.
        return mem_mb(base, dataclasses.replace(job, shards=1) if gathers else job, attempt)

    def runtime(
        self,
        rulename: str,
        model: str,
        attempt: int,
        selector: str = "",
        intervention: str = HEADLINE,
    ) -> int:
        """Slurm minutes of a model job: its work at the model's rate, plus the model load,
        times the safety factor (planning.*); at most planning.max_runtime, which an unknown
        item count also gets."""
        planning = Planning.from_config(self.config)
        if self.gathers_shards(rulename, model):
            return runtime_minutes(0, planning, attempt)
        job = self.job(rulename, model, selector, intervention)
        if job is None:
            self._warn_once(
                "the model jobs' runtime is planning.max_runtime until prepare_data has counted "
                "the items: set dataset.expected_items to see it now"
            )
            return planning.max_runtime
        entry = self.model(model)
        # The bench is read only for a model without its own rate.
        rate = tokens_per_s(entry, None if entry.get("tokens_per_s") else self.bench)
        seconds = job_seconds(job, rate)
        shards = shards_to_fit(seconds, planning)
        if shards > job.shards:
            self._warn_once(
                f"{rulename} {job.model} {job.name}: its work does not fit planning.max_runtime "
                f"({planning.max_runtime} min), so it asks for that and may be cut off; "
                f"models.{job.model}.ablate_shards: {shards} would fit"
            )
        return runtime_minutes(seconds, planning, attempt)

    def _warn_once(self, message: str) -> None:
        # Snakemake evaluates resources once per job and again before submitting it.
        if message not in self._warned:
            self._warned.add(message)
            self.warn(message)
