"""What an ablation run does to the selected neurons: the share of neurons (``ratio``, swept over
``ratios``) and the intervention kind applied to their ``act_fn`` output.

Kinds (config ``interventions:``, default ``[{kind: zero}]``, the paper's):

* ``zero``: the output is multiplied by 0 (the paper's deactivation);
* ``mean``: replaced by the neuron's mean over the identification split's valid prompt tokens
  (all recorded items; the activation store's ``act_sum`` / ``tokens``);
* ``scale`` with ``factor: k``: multiplied by ``k`` (``k > 1`` amplifies, ``0 < k < 1`` damps).

A row of a batch carries one (mask, kind) pair as a factor bank and an offset bank
(``output * factor + offset``), so one batch mixes masks and kinds freely.

Pure functions: config values in, validated values or banks out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from culture_neurons.errors import InputError

KINDS = ("zero", "mean", "scale")
# A seeded instance (rnd-s0) of a config key (rnd), as planning.work.selector_instances names it.
SEEDED = re.compile(r"-s\d+$")  # a seeded instance ("rnd-s0") of a config key ("rnd")
HEADLINE = "zero"


@dataclass(frozen=True)
class Intervention:
    kind: str
    factor: float | None = None

    @property
    def name(self) -> str:
        """The key in paths, tables and figures: ``zero``, ``mean``, ``scale-x2``."""
        return self.kind if self.kind != "scale" else f"scale-x{self.factor:g}"

    @property
    def needs_means(self) -> bool:
        return self.kind == "mean"

    def spec(self) -> dict[str, Any]:
        return (
            {"kind": self.kind}
            if self.factor is None
            else {"kind": self.kind, "factor": self.factor}
        )


def parse_intervention(entry: Mapping[str, Any], where: str = "interventions") -> Intervention:
    """One ``interventions:`` entry (its ``selectors`` key aside) as an Intervention."""
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected a mapping like {{kind: zero}}, got {entry!r}")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise InputError(f"{where}.kind: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    unknown = sorted(set(entry) - {"kind", "factor", "selectors"})
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}")
    factor = entry.get("factor")
    if kind != "scale":
        if factor is not None:
            raise InputError(f"{where}.factor: only kind scale takes a factor ({kind} has none)")
        return Intervention(kind)
    if isinstance(factor, bool) or not isinstance(factor, Real):
        raise InputError(f"{where}.factor: kind scale needs a number, got {factor!r}")
    if not factor > 0:
        raise InputError(f"{where}.factor must be > 0 (got {factor}); use kind zero to deactivate")
    if factor == 1:
        raise InputError(f"{where}.factor 1 leaves every neuron unchanged")
    return Intervention("scale", float(factor))


def parse_interventions(entries: Sequence[Mapping[str, Any]] | None) -> list[Intervention]:
    """The configured interventions, ``zero`` first; duplicates and a missing ``zero`` (the
    headline Table 2) are refused."""
    entries = list(entries) if entries is not None else [{"kind": HEADLINE}]
    parsed = [parse_intervention(e, f"interventions[{i}]") for i, e in enumerate(entries)]
    names = [p.name for p in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"interventions: {', '.join(repeated)} listed more than once")
    if HEADLINE not in names:
        raise InputError("interventions: must include {kind: zero}, the headline Table 2")
    zero = entries[names.index(HEADLINE)]
    if zero.get("selectors") is not None:
        raise InputError("interventions: {kind: zero} runs for every selector; drop its selectors")
    return sorted(parsed, key=lambda p: p.name != HEADLINE)


def parse_ratios(ratio: Any, ratios: Sequence[Any] | None) -> list[float]:
    """The swept shares of neurons, ascending, the headline ``ratio`` included; each must be in
    (0, 1] and listed once."""
    for where, value in [("ratio", ratio)] + [
        (f"ratios[{i}]", r) for i, r in enumerate(ratios or [])
    ]:
        if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
            raise InputError(f"{where} must be a share of neurons in (0, 1], got {value!r}")
    listed = [float(r) for r in ratios or []]
    repeated = sorted({r for r in listed if listed.count(r) > 1})
    if repeated:
        raise InputError(f"ratios: {', '.join(f'{r:g}' for r in repeated)} listed more than once")
    return sorted(set(listed) | {float(ratio)})


def ratio_label(ratio: float) -> str:
    """``r0.05``: a ratio's folder name in an ablation directory."""
    return f"r{ratio:g}"


def banks(
    selected: np.ndarray, intervention: Intervention, means: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Factor and offset banks (float32 ``[M, L, D]``; offset None when it is all zero) that apply
    ``intervention`` to the neurons of each mask row of ``selected`` (bool ``[M, L, D]``) and
    leave every other neuron as it is. ``means`` (``[L, D]``) is needed for ``mean``."""
    selected = np.asarray(selected, dtype=bool)
    if intervention.kind == "zero":
        return (~selected).astype(np.float32), None
    if intervention.kind == "scale":
        return np.where(selected, np.float32(intervention.factor), np.float32(1)), None
    if means is None:
        raise InputError("the mean intervention needs the identification means (act_sum)")
    means = np.asarray(means)
    if means.shape != selected.shape[1:]:
        raise InputError(f"means of shape {means.shape} do not fit masks {selected.shape[1:]}")
    offset = np.where(selected, means[None].astype(np.float32), np.float32(0))
    return (~selected).astype(np.float32), offset


def intervention_selectors(
    entries: Sequence[Mapping[str, Any]] | None, instances: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Intervention name -> the selector instances it runs for. An entry's ``selectors`` names
    config keys (``rnd`` covers ``rnd-s0``, ``rnd-s1``, ...) or instances; default: all."""
    result = {}
    for i, entry in enumerate(entries if entries is not None else [{"kind": HEADLINE}]):
        intervention = parse_intervention(entry, f"interventions[{i}]")
        wanted = entry.get("selectors")
        if wanted is None:
            result[intervention.name] = list(instances)
            continue
        chosen = []
        for name in wanted:
            matches = [s for s in instances if s == name or SEEDED.sub("", s) == name]
            if not matches:
                raise InputError(
                    f"interventions[{i}].selectors: unknown selector {name!r}; "
                    f"one of {', '.join(instances)}"
                )
            chosen += [m for m in matches if m not in chosen]
        result[intervention.name] = chosen
    return result
