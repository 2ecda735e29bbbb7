"""The selector registry: one spec per selector method, which the select stage, the stability
analysis and the plan ask instead of branching on the kind of method.

A spec says what a method ranks (its ``inputs``: the firing statistics of the activation store,
the attribution store's scores, or another selector's masks), whether its mask is the same for
every culture, its ranking function and its parameters with their defaults. Every parameter is
checked by one path (`check_params`), by name, so ``alpha`` means the same thing wherever it
appears.

Adding a selector is one ranking function and one registration beside it::

    def rank_mine(P, M, *, alpha: float = 95) -> np.ndarray: ...   # int32 [C, L, D]

    register(firing_selector("mine", rank_mine))

The built-in selectors register themselves where they are defined (`selectors`, `attribution`,
`controls`); they import this module, so it imports them last (see the bottom of this file).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import numpy as np

#: What a method ranks. FIRING: ``P`` and ``M`` from the activation store's per-culture sums
#: (``rank(P, M, **params)``); ATTRIBUTION_SCORES: the attribution store's aggregates
#: (``rank(cultural, control, exclusion, **params)``); REFERENCE_MASKS: the ranking of the
#: selector its reference parameter names (``rank(reference_ranks, cultures, **params)``).
FIRING = "firing statistics"
ATTRIBUTION_SCORES = "attribution scores"
REFERENCE_MASKS = "reference masks"
INPUTS = (FIRING, ATTRIBUTION_SCORES, REFERENCE_MASKS)

#: The store a select job reads (``results/<model>/<store>.zarr``): a control reads the
#: activation store too (its fingerprint must match its reference's).
ACTIVATION_STORE, ATTRIBUTION_STORE = "activations", "attribution"

#: The default of a parameter that must be given.
REQUIRED = object()

Selector = Callable[..., np.ndarray]


@dataclass(frozen=True)
class SelectorSpec:
    """One selector method (see the module docstring)."""

    name: str
    inputs: str
    #: The full ranking (int32 ``[C, L, D]``, 0 = best, -1 = not ranked); None for a method
    #: that only has a top-k mask (it cannot serve ratio sweeps).
    rank: Selector | None
    #: Parameter -> default (`REQUIRED`: must be given).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Whether every culture gets the same mask (stored and evaluated once, as source "ALL").
    culture_independent: bool = False
    #: A top-k mask ``mask(P, M, k, **params)`` for a FIRING method without a ranking.
    mask: Selector | None = None
    #: For a control: the parameter naming the selector instance it is derived from.
    reference: str | None = None

    def __post_init__(self) -> None:
        if self.inputs not in INPUTS:
            raise ValueError(f"selector {self.name!r}: inputs must be one of {INPUTS}")
        if self.rank is None and (self.mask is None or self.inputs != FIRING):
            raise ValueError(f"selector {self.name!r} needs a ranking (or, on FIRING, a mask)")
        if self.reference is not None and self.inputs != REFERENCE_MASKS:
            raise ValueError(f"selector {self.name!r}: only a REFERENCE_MASKS method has one")

    @property
    def store(self) -> str:
        """The store the select job reads."""
        return ATTRIBUTION_STORE if self.inputs == ATTRIBUTION_SCORES else ACTIVATION_STORE

    @property
    def data_driven(self) -> bool:
        """Selected from the firing statistics per culture: what the stability analysis
        resamples (not RND, not a control, not an attribution selector)."""
        return self.inputs == FIRING and not self.culture_independent


_SPECS: dict[str, SelectorSpec] = {}


def register(spec: SelectorSpec) -> SelectorSpec:
    """Add a selector method; a name is registered once."""
    if spec.name in _SPECS:
        raise ValueError(f"selector method {spec.name!r} is already registered")
    _SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a selector method (tests that register a toy one)."""
    del _SPECS[name]


def keyword_defaults(fn: Selector) -> dict[str, Any]:
    """The keyword-only parameters of ``fn`` and their defaults: a FIRING method's tunables."""
    return {
        name: REQUIRED if p.default is inspect.Parameter.empty else p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def firing_selector(
    name: str,
    rank: Selector | None,
    *,
    mask: Selector | None = None,
    culture_independent: bool = False,
) -> SelectorSpec:
    """The spec of a method on the firing statistics; its parameters are the ranking's (or the
    mask's) keyword-only ones."""
    fn = rank if rank is not None else mask
    assert fn is not None, f"selector {name!r} needs a ranking or a mask"
    return SelectorSpec(
        name, FIRING, rank, keyword_defaults(fn), culture_independent=culture_independent, mask=mask
    )


def methods(inputs: str | None = None) -> list[str]:
    """The registered method names (those ranking ``inputs`` only, when given), in the order
    they were registered."""
    return [name for name, s in _SPECS.items() if inputs is None or s.inputs == inputs]


def spec(method: str) -> SelectorSpec:
    """The spec of ``method``; an unknown one is refused with the valid names."""
    try:
        return _SPECS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selector method {method!r}; valid: {', '.join(sorted(methods()))}"
        ) from None


def is_culture_independent(method: str) -> bool:
    """Whether ``method`` gives every culture the same mask (aliases included); a control
    derived from a reference's masks (``rnd_matched``) is culture-specific."""
    return spec(method).culture_independent


def has_ranking(method: str) -> bool:
    """Whether ``method`` has a full ranking, so it can serve ratio sweeps."""
    return spec(method).rank is not None


def is_control(method: str) -> bool:
    """Whether ``method`` is derived from a reference selector's masks (unknown: False)."""
    return method in _SPECS and _SPECS[method].reference is not None


def input_store(method: str) -> str:
    """The store a select job of ``method`` reads: ``activations`` or ``attribution``."""
    return spec(method).store


def is_data_driven(method: str) -> bool:
    """Whether ``method`` is selected per culture from the firing statistics (see
    `SelectorSpec.data_driven`)."""
    return spec(method).data_driven


# -- parameters ---------------------------------------------------------------------------------


def _real(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, Real)


def _percentile(method: str, name: str, value: Any) -> Any:
    if not _real(value) or not 0 <= value <= 100:
        raise ValueError(f"{method}: {name} must be a percentile in [0, 100], got {value!r}")
    return value


def _fraction(method: str, name: str, value: Any) -> Any:
    if not _real(value) or not 0 < value <= 1:
        raise ValueError(f"{method}: {name} must be a fraction in (0, 1], got {value!r}")
    return value


def _seed(method: str, name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{method}: {name} must be a non-negative integer, got {value!r}")
    return value


def _number(method: str, name: str, value: Any) -> float:
    if not _real(value) or not np.isfinite(value):
        raise ValueError(f"{method}: {name} must be a number, got {value!r}")
    return float(value)


def _share(method: str, name: str, value: Any) -> float:
    value = _number(method, name, value)
    if not 0 <= value < 1:
        raise ValueError(f"{method}: {name} must be in [0, 1), got {value!r}")
    return value


def _selector_name(method: str, name: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{method}: {name} must name a selector instance, got {value!r}")
    return value


#: Parameter name -> its check (returns the value to use). One meaning per name in every
#: selector; a parameter not listed here is passed through unchecked.
PARAMETER_CHECKS: dict[str, Callable[[str, str, Any], Any]] = {
    "alpha": _percentile,
    "beta": _percentile,
    "rho": _fraction,
    "seed": _seed,
    "z_threshold": _number,
    "exclusion_ratio": _share,
    "reference": _selector_name,
}


def check_params(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over ``method``'s defaults, each checked; raises ValueError naming an unknown
    method, an unknown or missing parameter, or a bad value. A parameter whose default is None
    may be given as None (it switches the feature off, e.g. CAS's gate)."""
    entry = spec(method)
    for name in params:
        if name not in entry.params:
            listed = ", ".join(sorted(entry.params)) or "none"
            raise ValueError(f"unknown parameter {name!r} for selector {method!r}; valid: {listed}")
    merged = {**entry.params, **params}
    missing = [name for name, value in merged.items() if value is REQUIRED]
    if missing:
        raise ValueError(f"selector {method!r} needs the parameter(s) {missing}")
    checked = {}
    for name, value in merged.items():
        check = PARAMETER_CHECKS.get(name)
        if check is None or (value is None and entry.params[name] is None):
            checked[name] = value
        else:
            checked[name] = check(method, name, value)
    return checked


# The built-in selectors register themselves on import; they import this module, so they come
# last (whichever module is imported first, every lookup sees them).
from culture_neurons.selection import attribution, controls, selectors  # noqa: E402, F401, I001
