"""The work of each model job and the Slurm time and memory it asks for, from the config alone.

One formula for both users of it: the workflow's resource functions (culture_neurons.planning.
plan, `Plan.runtime` and `Plan.mem_mb`) and the replication estimate (`culture-neurons estimate`,
`culture-neurons bench`'s replication_hours).

The cost model is linear in tokens: an answer costs its prompt tokens plus max_new_tokens, at a
rate of ``tokens_per_s`` per job (a model's `tokens_per_s`, or `culture-neurons bench`'s
masked_items_per_s times the bench's tokens per answer). Attention grows faster than linearly
with the prompt, but at 1-3k tokens a 7B decoder's MLPs and projections dominate; the safety
factor covers the rest. Real answers stop after a few tokens, so counting max_new_tokens is an
upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from culture_neurons.ablation.conditions import (
    HEADLINE,
    SEEDED,
    intervention_selectors,
    parse_ratios,
)
from culture_neurons.selection.conventions import DECODER_MLP, site_instance
from culture_neurons.selection.registry import (
    ATTRIBUTION_STORE,
    input_store,
    is_culture_independent,
    spec,
)

#: Prompt tokens per item (image + question + options + template) when a model does not state
#: `prompt_tokens`. Image tokens measured with the processors' own token-count logic on
#: 3000x2000 to 6000x4000 photos (benchmarks/prompt_tokens.py -> benchmarks/replication/
#: prompt_tokens.json), plus TEXT_TOKENS for the text (assumed, not measured on CVQA).
TEXT_TOKENS = 100
FAMILY_PROMPT_TOKENS = {
    # Qwen2.5-VL at the paper config's max_pixels 1003520: 1,225-1,247 image tokens for photos
    # of 3000x2000 and more (999 at 1024x768; measured).
    "qwen2_5_vl": 1250 + TEXT_TOKENS,
    # LLaVA-NeXT anyres, 336-px CLIP tiles: 2,144-2,928 image tokens, 2,340 for 4:3 (measured).
    "llava_next": 2350 + TEXT_TOKENS,
    # Pangea-7B-hf is a LLaVA-NeXT model; its tiles are assumed as LLaVA-NeXT's (not checked
    # offline: its hub config was not at hand).
    "pangea": 2350 + TEXT_TOKENS,
    # A text-only model: the question, options and template (assumed).
    "generic": 2 * TEXT_TOKENS,
}

#: Recording forward / bare forward on the H100 (benchmarks/h100/bench.json record_overhead).
RECORD_OVERHEAD = 1.13
#: An attribution pass is a forward and a backward pass of the prompt: about 3 forwards.
ATTRIBUTION_FORWARDS = 3
#: Host memory per answer row a model job holds until it writes its tables (pandas object rows
#: of item id, culture, answer text, choice; assumed generous).
ANSWER_ROW_BYTES = 1024


@dataclass(frozen=True)
class ItemCounts:
    """Items of each split; the control task's evaluation half when there is one."""

    identification: int
    evaluation: int
    control_identification: int = 0
    control_evaluation: int = 0


@dataclass(frozen=True)
class Planning:
    """The config's `planning` section (defaults in the schema)."""

    safety_factor: float
    load_minutes: float
    min_runtime: int
    max_runtime: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Planning:
        p = config["planning"]
        return cls(
            float(p["safety_factor"]),
            float(p["load_minutes"]),
            int(p["min_runtime"]),
            int(p["max_runtime"]),
        )


@dataclass(frozen=True)
class Job:
    """One model job: its rule, its wildcards (name) and the answers and tokens it processes."""

    rule: str
    model: str
    name: str
    masks: int
    answers: int
    tokens: int
    shards: int = 1


# ------------------------------------------------------------------------------- the plan
def selector_instances(
    selectors: Mapping[str, Any], sites: Mapping[str, Sequence[str] | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Selector instance -> parameters with 'method'; seeds expand to one instance each, and
    each site of ``sites`` (site -> config keys, None: all; default the decoder MLP alone) to
    its own instances, named by `site_instance` (the workflow's plan, `Plan.selectors`, is
    this). A control's reference names the instance at the control's own site."""
    per_key: dict[str, dict[str, dict[str, Any]]] = {}
    for name, entry in selectors.items():
        params = dict(entry or {})
        method = params.pop("method", name)
        seeds = params.pop("seeds", None)
        if seeds is None:
            per_key[name] = {name: {"method": method, **params}}
        else:
            per_key[name] = {
                f"{name}-s{seed}": {"method": method, **params, "seed": seed} for seed in seeds
            }
    instances = {}
    for site, names in (sites or {DECODER_MLP: None}).items():
        chosen = list(selectors) if names is None else list(names)
        for name in chosen:
            if name not in per_key:
                raise ValueError(
                    f"sites.{site}: unknown selector {name!r}; configured: {', '.join(selectors)}"
                )
            for instance, params in per_key[name].items():
                instances[site_instance(site, instance)] = _at_site(
                    site, name, params, chosen, per_key
                )
    return instances


def _at_site(
    site: str,
    name: str,
    params: dict[str, Any],
    chosen: Sequence[str],
    per_key: Mapping[str, Any],
) -> dict[str, Any]:
    """One instance's parameters at ``site``, refused where its method cannot run there."""
    if site == DECODER_MLP:
        return params
    method = params["method"]
    if input_store(method) == ATTRIBUTION_STORE:
        raise ValueError(
            f"sites.{site}: {name} scores the attribution store, which holds decoder-MLP "
            "neurons only; list it under decoder_mlp alone"
        )
    reference = spec(method).reference
    if reference is None or reference not in params:
        return params
    target = params[reference]
    key = SEEDED.sub("", target)
    if target not in per_key and key not in per_key:
        return params  # an unknown reference is the select stage's error, as at the decoder
    if (target if target in per_key else key) not in chosen:
        raise ValueError(
            f"sites.{site}: {name} is matched to {target}, which is not selected at {site}; "
            f"add {target} to sites.{site}"
        )
    return {**params, reference: site_instance(site, target)}


def masks_of(method: str, n_cultures: int) -> int:
    """Masks of one selector instance: one for a culture-independent selector, else one per
    culture."""
    return 1 if is_culture_independent(method) else n_cultures


def ablate_runs(config: Mapping[str, Any], n_cultures: int) -> list[tuple[str, str, int]]:
    """(selector instance, intervention, masks) of every ablate job of one model: its masks are
    each source culture's at each swept ratio."""
    instances = selector_instances(config["selectors"], config.get("sites"))
    ratios = parse_ratios(config["ratio"], config.get("ratios"))
    runs = intervention_selectors(config.get("interventions"), instances)
    return [
        (selector, intervention, masks_of(instances[selector]["method"], n_cultures) * len(ratios))
        for intervention, selectors in runs.items()
        for selector in selectors
    ]


def planned_masks(config: Mapping[str, Any], n_cultures: int) -> int:
    """Masks every model answers the evaluation split under, over all its ablate jobs."""
    return sum(masks for _, _, masks in ablate_runs(config, n_cultures))


def prompt_tokens(model: Mapping[str, Any]) -> int:
    """Prompt tokens per item: the model's `prompt_tokens`, else its family's default."""
    if model.get("prompt_tokens"):
        return int(model["prompt_tokens"])
    return FAMILY_PROMPT_TOKENS[model["family"]]


def model_jobs(
    config: Mapping[str, Any], name: str, counts: ItemCounts, n_cultures: int
) -> list[Job]:
    """Every job that loads model ``name``, with its work."""
    model = config["models"][name]
    per_answer = prompt_tokens(model) + max_new_tokens(config)
    jobs = [
        Job(
            "record",
            name,
            name,
            0,
            counts.identification + counts.evaluation,
            round((counts.identification * RECORD_OVERHEAD + counts.evaluation) * per_answer),
        )
    ]
    # A site's recording is one prompt forward per identification item, no generation.
    for site in config.get("sites") or ():
        if site != DECODER_MLP:
            tokens = round(counts.identification * RECORD_OVERHEAD * prompt_tokens(model))
            jobs.append(Job("record_site", name, site, 0, 0, tokens))
    shards = int(model.get("ablate_shards", 1))
    for selector, intervention, masks in ablate_runs(config, n_cultures):
        answers = counts.evaluation * masks
        headline = intervention == HEADLINE
        rule = "ablate" if headline else "ablate_intervention"
        job = selector if headline else f"{intervention}/{selector}"
        jobs.append(Job(rule, name, job, masks, answers, answers * per_answer, shards))
    instances = selector_instances(config["selectors"], config.get("sites"))
    if any(input_store(p["method"]) == ATTRIBUTION_STORE for p in instances.values()):
        scored = counts.identification + counts.control_identification
        tokens = scored * prompt_tokens(model) * ATTRIBUTION_FORWARDS
        jobs.append(Job("attribute", name, name, 0, 0, tokens))
    control = has_control_task(config)
    independent = [
        s for s, p in instances.items() if is_culture_independent(p["method"]) and control
    ]
    if independent:
        answers = counts.control_evaluation * (1 + len(independent))
        jobs.append(
            Job("control_effect", name, name, len(independent), answers, answers * per_answer)
        )
    return jobs


def has_control_task(config: Mapping[str, Any]) -> bool:
    return bool((config.get("attribution") or {}).get("control_files"))


def max_new_tokens(config: Mapping[str, Any]) -> int:
    return int((config.get("generation") or {}).get("max_new_tokens", 20))


# --------------------------------------------------------------------------- time, memory
def job_seconds(job: Job, tokens_per_s: float) -> float:
    """Seconds of one job's (or one shard's) work at the rate, without load or safety."""
    return job.tokens / job.shards / tokens_per_s


def runtime_minutes(seconds: float, planning: Planning, attempt: int = 1) -> int:
    """Slurm minutes for ``seconds`` of work: model load plus the work times the safety factor,
    at least min_runtime, at most max_runtime; each retry asks for that much more."""
    minutes = planning.load_minutes + planning.safety_factor * seconds / 60
    minutes = max(planning.min_runtime, math.ceil(minutes))
    return min(planning.max_runtime, minutes * attempt)


def shards_to_fit(seconds: float, planning: Planning) -> int:
    """How many shards make one job's work fit max_runtime (1: it fits)."""
    room = planning.max_runtime - planning.load_minutes
    if room <= 0:
        raise ValueError(
            f"planning.max_runtime ({planning.max_runtime} min) leaves no time after the model "
            f"load (planning.load_minutes {planning.load_minutes})"
        )
    return max(1, math.ceil(planning.safety_factor * seconds / 60 / room))


def mem_mb(base_mb: int, job: Job, attempt: int = 1) -> int:
    """Host memory: the model's base (weights staged on the host, the input window) plus the
    answer rows the job holds before writing its tables; each retry asks for that much more."""
    rows = math.ceil(job.answers / job.shards)
    return (base_mb + math.ceil(rows * ANSWER_ROW_BYTES / 2**20)) * attempt


def base_mem_mb(model: Mapping[str, Any]) -> int:
    """models.<name>.mem_mb, else 32 GB with GPUs and 4 GB without."""
    if model.get("mem_mb"):
        return int(model["mem_mb"])
    return 32000 if model.get("gpus", 1) else 4000


# ----------------------------------------------------------------------------- the rate
def bench_tokens_per_answer(bench: Mapping[str, Any]) -> float:
    """Tokens one of the bench's answers costs: its mean prompt plus its max_new_tokens (bench
    runs before `prompt_tokens_mean` was written: the middle of its prompt range, whose lengths
    were drawn uniformly)."""
    sizes = bench["sizes"]
    mean = sizes.get("prompt_tokens_mean")
    if mean is None:
        mean = (sizes["prompt_tokens_min"] + sizes["prompt_tokens_max"]) / 2
    return float(mean) + float(sizes["max_new_tokens"])


def bench_tokens_per_s(bench: Mapping[str, Any]) -> float:
    """A job's tokens per second from `culture-neurons bench`'s masked answers per second."""
    return float(bench["masked_items_per_s"]) * bench_tokens_per_answer(bench)


def tokens_per_s(model: Mapping[str, Any], bench: Mapping[str, Any] | None) -> float:
    """The model's stated `tokens_per_s`, else the bench's."""
    if model.get("tokens_per_s"):
        return float(model["tokens_per_s"])
    if bench is None:
        raise ValueError(
            "no rate: give the model tokens_per_s or planning.bench (a bench.json of "
            "`culture-neurons bench`)"
        )
    return bench_tokens_per_s(bench)


# ------------------------------------------------------------------------------ estimate
@dataclass(frozen=True)
class Estimate:
    job: Job
    tokens_per_s: float
    gpus: int
    runtime: int  # minutes asked of Slurm per job (per shard)
    mem_mb: int
    shards_to_fit: int

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.job.tokens / self.tokens_per_s / 3600


def estimate(
    config: Mapping[str, Any],
    counts: ItemCounts,
    n_cultures: int,
    bench: Mapping[str, Any] | None,
) -> list[Estimate]:
    """Every model job of ``config`` with its work, GPU-hours and the resources it asks for."""
    planning = Planning.from_config(config)
    rows = []
    for name, model in config["models"].items():
        rate = tokens_per_s(model, bench)
        for job in model_jobs(config, name, counts, n_cultures):
            seconds = job_seconds(job, rate)
            rows.append(
                Estimate(
                    job,
                    rate,
                    int(model.get("gpus", 1)),
                    runtime_minutes(seconds, planning),
                    mem_mb(base_mem_mb(model), job),
                    shards_to_fit(seconds, planning),
                )
            )
    return rows


def render_estimate(rows: Sequence[Estimate], counts: ItemCounts, n_cultures: int) -> str:
    """Markdown: a summary per model, then every job."""
    lines = [
        f"Items: {counts.identification:,} identification, {counts.evaluation:,} evaluation; "
        f"{n_cultures} cultures.",
        "",
        "| model | prompt + new tokens | tokens/s | masks | masked answers | GPU-hours | "
        "longest job (min) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total_hours, total_answers = 0.0, 0
    for model in dict.fromkeys(r.job.model for r in rows):
        mine = [r for r in rows if r.job.model == model]
        ablate = [r for r in mine if r.job.rule.startswith("ablate")]
        answers = sum(r.job.answers for r in ablate)
        per_answer = ablate[0].job.tokens / ablate[0].job.answers if ablate else 0
        hours = sum(r.gpu_hours for r in mine)
        total_hours += hours
        total_answers += answers
        lines.append(
            f"| {model} | {per_answer:,.0f} | {mine[0].tokens_per_s:,.0f} | "
            f"{sum(r.job.masks for r in ablate)} | {answers:,} | {hours:.1f} | "
            f"{max(r.runtime for r in mine):,} |"
        )
    lines += [
        f"| **total** | | | | {total_answers:,} | {total_hours:.1f} | |",
        "",
        "| job | masks | answers | tokens | GPU-hours | runtime (min) | mem_mb | shards to fit |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {_label(r.job)} | {r.job.masks} | {r.job.answers:,} | "
            f"{r.job.tokens:,} | {r.gpu_hours:.2f} | {r.runtime:,} | {r.mem_mb:,} | "
            f"{r.shards_to_fit} |"
        )
    return "\n".join(lines) + "\n"


def _label(job: Job) -> str:
    """``rule model`` and the selector (``intervention/selector``) of an ablate job."""
    name = "" if job.name == job.model else f" {job.name}"
    return f"{job.rule} {job.model}{name}"
