"""Neuron selectors: pure functions from per-culture aggregates to deactivation masks.

The paper's Step 2 (section 3.2-3.4, appendix B.2). Entry point::

    select(method, fire_count, pos_sum, tokens, *, ratio, **params) -> bool [C, L, D]

``selected[c, l, n]`` is True when neuron ``n`` of decoder layer ``l`` is deactivated for source
culture ``c``. From the per-culture sums ``K = fire_count``, ``S = pos_sum`` ([C, L, D]) and the
valid-token counts ``T = tokens`` ([C]) it derives the activation probability ``P = K / T`` and the
mean positive activation ``M = S / T`` (float64), and the per-culture budget
``k = budget(ratio, L, D)``: the paper's "top r% across all decoder-MLP neurons", per culture.
Every culture gets exactly ``k`` neurons unless the method's filters leave it fewer candidates, in
which case it gets all of them (never padded with non-candidates).

Writing a selector
------------------
A selector is one function and one entry in :data:`METHODS`::

    def my_method(P: np.ndarray, M: np.ndarray, k: int, *, alpha: float = 95) -> np.ndarray: ...

    METHODS["my_method"] = my_method

``P`` and ``M`` are float64 ``[C, L, D]`` (``C >= 2``, ``P`` in [0, 1], ``M >= 0``, all finite),
``k >= 0`` the per-culture budget, and the keyword-only parameters are the method's tunables (their
names are what config entries and :func:`select` accept; anything else is refused). It returns a
bool ``[C, L, D]`` with at most ``k`` True per culture row. :func:`_rank_top_k` does the per-culture
multi-key ranking with the final tie-break by flat neuron index ``l * D + n``; :func:`_top_two`,
:func:`_gate_threshold` and :func:`_sorted_over_cultures` are the shared pieces. A method whose
mask is the same for every culture also goes into :data:`CULTURE_INDEPENDENT` (the workflow then
stores and evaluates it once).

Conventions (where the paper is silent)
---------------------------------------
* Ties that the paper's keys leave are broken by the lower flat neuron index, so results never
  depend on sort stability.
* Nothing depends on the order of the culture axis: permuting cultures permutes the output rows
  the same way. Sums over cultures (LAPE's entropy, MAD's mean of the others) are taken over the
  values sorted along the culture axis, so they are bit-identical under any permutation.
* A neuron whose largest ``P`` is shared by two or more cultures has no top culture: CAS and LAPE
  assign it to none. (Taking the lowest culture index would make the mask depend on culture
  order; such a neuron's CAS margin is 0 anyway.)
* The activity gate keeps ``P >= p_th`` and also requires ``P > 0``. The two differ only when
  ``p_th = 0`` (about ``alpha`` % of all values are 0), where the literal gate would admit neurons
  that never fire.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np

from culture_neurons.selection.attribution import ATTRIBUTION_METHODS, is_attribution
from culture_neurons.selection.attribution import (
    CULTURE_INDEPENDENT as ATTRIBUTION_CULTURE_INDEPENDENT,
)
from culture_neurons.selection.controls import is_control
from culture_neurons.selection.conventions import NOT_RANKED

Selector = Callable[..., np.ndarray]


# -- shared pieces ----------------------------------------------------------------------------


def budget(ratio: float, n_layers: int, n_neurons: int) -> int:
    """Neurons per culture: ``round(ratio * L * D)``, at least 1 when ``ratio > 0``.

    ``round`` is Python's (half to even); ``ratio=0.01`` on 28 x 18,944 neurons gives 5,304.
    """
    if not isinstance(ratio, Real) or not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
    if n_layers < 1 or n_neurons < 1:
        raise ValueError(f"need at least one layer and one neuron, got {n_layers} x {n_neurons}")
    k = round(float(ratio) * n_layers * n_neurons)
    return max(k, 1) if ratio > 0 else 0


def _check_tokens(tokens: np.ndarray, n_cultures: int) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.float64)
    if tokens.shape != (n_cultures,):
        raise ValueError(f"tokens must have shape ({n_cultures},), got {tokens.shape}")
    if not np.isfinite(tokens).all() or (tokens < 0).any():
        raise ValueError(f"tokens must be finite and non-negative, got {tokens.tolist()}")
    empty = np.flatnonzero(tokens == 0).tolist()
    if empty:
        raise ValueError(
            f"cultures at indices {empty} have no valid tokens (no correctly answered items?): "
            "they cannot be scored; drop them before selecting"
        )
    return tokens


def activation_probability(fire_count: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """``P = fire_count / tokens`` per culture, float64 ``[C, L, D]``."""
    fire_count = np.asarray(fire_count)
    if fire_count.ndim != 3:
        raise ValueError(f"fire_count must be [C, L, D], got shape {fire_count.shape}")
    tokens = _check_tokens(tokens, fire_count.shape[0])
    # float64 division straight from the (often float32) input: no full-size float64 copy of it.
    return np.divide(fire_count, tokens[:, None, None], dtype=np.float64)


def _gate_threshold(P: np.ndarray, alpha: float) -> float:
    """p_th: the alpha-percentile over all ``C*L*D`` values of P (order-free)."""
    return float(np.percentile(P, alpha))


def _active(prob: np.ndarray, p_th: float) -> np.ndarray:
    return (prob >= p_th) & (prob > 0)


def _top_two(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Largest value, second largest (with multiplicity) and argmax over axis 0.

    ``first == second`` flags a shared maximum; the argmax is then the lowest index, which callers
    must not use as a culture assignment. A running pass keeps temporaries at one ``[L*D]`` slab.
    """
    first = X[0].copy()
    second = np.full_like(first, -np.inf)
    arg = np.zeros(first.shape, dtype=np.intp)
    for c in range(1, X.shape[0]):
        x = X[c]
        second = np.maximum(second, np.minimum(first, x))
        arg[x > first] = c
        np.maximum(first, x, out=first)
    return first, second, arg


def _other_max(c: int, first: np.ndarray, second: np.ndarray, arg: np.ndarray) -> np.ndarray:
    """``max_{c' != c} X[c']``: the runner-up where c holds the (first) maximum, else the maximum.

    Correct for a shared maximum too (then ``second == first``), so it is order-free.
    """
    return np.where(arg == c, second, first)


def _sorted_over_cultures(X: np.ndarray) -> np.ndarray:
    """X sorted along the culture axis: sums over it are the same bits for any culture order."""
    return np.sort(X, axis=0)


def _entropy(P: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of ``P / sum_c P`` along axis 0, with ``0 log 0 = 0``.

    ``P`` is ``[C, N]`` with a positive sum in every column.
    """
    Q = _sorted_over_cultures(P)
    Q /= Q.sum(axis=0)
    log_q = np.zeros_like(Q)
    np.log(Q, out=log_q, where=Q > 0)
    Q *= log_q
    return -Q.sum(axis=0)


def _rank_top_k(candidates: np.ndarray, keys: list[np.ndarray], k: int) -> np.ndarray:
    """Positions in ``candidates`` (flat neuron indices) of the ``k`` best, best first.

    ``keys`` are aligned with ``candidates``, most significant first, larger is better; remaining
    ties go to the lower flat index. A partition on the first key cuts the sort down to the
    candidates that can still make the top k.
    """
    n = candidates.size
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    positions = np.arange(n)
    if n > k:
        primary = keys[0]
        kth = np.partition(primary, n - k)[n - k]
        positions = np.flatnonzero(primary >= kth)
    # lexsort sorts ascending with the last key primary: negate the "larger is better" keys.
    order = np.lexsort((candidates[positions], *(-key[positions] for key in reversed(keys))))
    return positions[order[:k]]


def _rank_row(row: np.ndarray, candidates: np.ndarray, keys: list[np.ndarray]) -> None:
    """Write each candidate's rank (0 = best, by ``_rank_top_k``'s order) into ``row``."""
    order = _rank_top_k(candidates, keys, candidates.size)
    row[candidates[order]] = np.arange(order.size, dtype=row.dtype)


def _no_ranks(P: np.ndarray) -> np.ndarray:
    return np.full((P.shape[0], P.shape[1] * P.shape[2]), NOT_RANKED, dtype=np.int32)


def mask_from_ranks(ranks: np.ndarray, k: int) -> np.ndarray:
    """The top ``k`` of a ranking (``[..., L, D]`` int, -1 = not a candidate): bool, same shape.

    Masks of one ranking are nested: ``mask_from_ranks(r, k1) <= mask_from_ranks(r, k2)`` for
    ``k1 <= k2``. A culture with fewer than ``k`` candidates gets all of them.
    """
    ranks = np.asarray(ranks)
    return (ranks >= 0) & (ranks < k)


# -- the methods ------------------------------------------------------------------------------
#
# Each method is a ranking (``rank_<method>``: int32 [C, L, D], each culture's candidates numbered
# 0, 1, ... best first, -1 for the rest) and its top-k mask. The filters (gates, LAPE's pool and
# assignment) do not depend on k, so every method's masks are nested across budgets.


def rank_rnd(P: np.ndarray, M: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """RND (B.2.1): a seeded permutation of all neurons, the same for every culture."""
    n_cultures, n_layers, n_neurons = P.shape
    order = np.random.default_rng(seed).permutation(n_layers * n_neurons)
    row = np.empty(n_layers * n_neurons, dtype=np.int32)
    row[order] = np.arange(order.size, dtype=np.int32)
    return np.repeat(row[None, :], n_cultures, axis=0).reshape(P.shape)


def rnd(P: np.ndarray, M: np.ndarray, k: int, *, seed: int = 0) -> np.ndarray:
    """RND (B.2.1): k neurons uniformly over all layers, the same mask for every culture."""
    return mask_from_ranks(rank_rnd(P, M, seed=seed), k)


def rank_lap(P: np.ndarray, M: np.ndarray, *, alpha: float = 95) -> np.ndarray:
    """LAP (B.2.2): per culture, rank by P[c] among triples that pass the activity gate.

    Gate: keep (l, n, c) with ``P[c] >= p_th`` (alpha-percentile of all P). Rank by P[c]
    descending, ties by the larger margin ``P[c] - max_{c' != c} P[c']``, then flat index.
    """
    p_th = _gate_threshold(P, alpha)
    flat = P.reshape(P.shape[0], -1)
    first, second, arg = _top_two(flat)
    out = _no_ranks(P)
    for c in range(flat.shape[0]):
        cand = np.flatnonzero(_active(flat[c], p_th))
        p_c = flat[c, cand]
        margin = p_c - _other_max(c, first[cand], second[cand], arg[cand])
        _rank_row(out[c], cand, [p_c, margin])
    return out.reshape(P.shape)


def lap(P: np.ndarray, M: np.ndarray, k: int, *, alpha: float = 95) -> np.ndarray:
    """LAP's top k per culture (see `rank_lap`)."""
    return mask_from_ranks(rank_lap(P, M, alpha=alpha), k)


def rank_lape(
    P: np.ndarray,
    M: np.ndarray,
    *,
    alpha: float = 95,
    beta: float = 90,
    rho: float = 1.0,
) -> np.ndarray:
    """LAPE (B.2.3): low-entropy neurons, each assigned to its top culture.

    1. Gate: drop (l, n) with ``max_c P < p_th`` (alpha-percentile of all P).
    2. Pool: of the survivors keep the fraction ``rho`` with the lowest entropy H of
       ``P / sum_c P`` (``round(rho * survivors)``, at least 1; equal H: lower flat index).
    3. Assignment: a pooled neuron goes to ``c* = argmax_c P`` if ``P[c*] >= p_bar``
       (beta-percentile of all P) and no other culture shares that maximum.
    4. Per culture, rank its neurons by P[c] descending, ties by lower H, then by larger margin
       ``P[c] - max_{c' != c} P[c']``, then flat index; keep the top k.

    Default ``rho = 1.0`` (the pool is every survivor). Each neuron goes to at most one culture, so
    the budgets can only all fill when the pool holds at least ``C * k`` neurons: a quarter of all
    ``L * D`` neurons at C=25, ratio=0.01. The pool is ``rho`` times the survivors, and the
    survivors are at most all neurons (in practice far fewer, as P is strongly correlated across
    cultures), so any ``rho < 0.25`` can never fill the budgets there and every ``rho < 1`` only
    removes candidates from cultures that may already be short. With ``rho = 1`` entropy still
    orders equal-P neurons; give a smaller ``rho`` to make the pool itself entropy-selective, at the
    price of fewer than k neurons for some cultures. (Note that with ``alpha >= beta`` the bar of
    step 3 never refuses a survivor: its top P already passed ``p_th >= p_bar``.)
    """
    p_th, p_bar = (float(v) for v in np.percentile(P, [alpha, beta]))
    flat = P.reshape(P.shape[0], -1)
    first, second, arg = _top_two(flat)
    out = _no_ranks(P)
    survivors = np.flatnonzero(_active(first, p_th))
    if survivors.size == 0:
        return out.reshape(P.shape)
    entropy = _entropy(flat[:, survivors])
    n_pool = max(1, round(rho * survivors.size))
    in_pool = _rank_top_k(survivors, [-entropy], n_pool)
    pool, pool_entropy = survivors[in_pool], entropy[in_pool]
    top, runner_up, owner = first[pool], second[pool], arg[pool]
    assigned = (top >= p_bar) & (top > runner_up)
    for c in range(flat.shape[0]):
        mine = assigned & (owner == c)
        keys = [top[mine], -pool_entropy[mine], top[mine] - runner_up[mine]]
        _rank_row(out[c], pool[mine], keys)
    return out.reshape(P.shape)


def lape(
    P: np.ndarray,
    M: np.ndarray,
    k: int,
    *,
    alpha: float = 95,
    beta: float = 90,
    rho: float = 1.0,
) -> np.ndarray:
    """LAPE's top k per culture (see `rank_lape`)."""
    return mask_from_ranks(rank_lape(P, M, alpha=alpha, beta=beta, rho=rho), k)


def rank_mad(P: np.ndarray, M: np.ndarray, *, alpha: float = 95) -> np.ndarray:
    """MAD (B.2.4): per culture, rank by ``M[c] - mean_{c' != c} M[c']`` among active triples.

    Gate: keep (l, n, c) with ``P[c] >= p_th`` (alpha-percentile of all P). Rank by the score
    descending, ties by larger P[c], then by larger margin ``M[c] - max_{c' != c} M[c']``, then
    flat index. The score is computed as ``(C * M[c] - sum_c' M[c']) / (C - 1)``, the same value,
    so that equal scores come out as equal floats wherever the numerator is exact.
    """
    n_cultures = P.shape[0]
    p_th = _gate_threshold(P, alpha)
    p_flat = P.reshape(n_cultures, -1)
    m_flat = M.reshape(n_cultures, -1)
    total = _sorted_over_cultures(m_flat).sum(axis=0)
    first, second, arg = _top_two(m_flat)
    out = _no_ranks(P)
    for c in range(n_cultures):
        cand = np.flatnonzero(_active(p_flat[c], p_th))
        m_c = m_flat[c, cand]
        score = (n_cultures * m_c - total[cand]) / (n_cultures - 1)
        margin = m_c - _other_max(c, first[cand], second[cand], arg[cand])
        _rank_row(out[c], cand, [score, p_flat[c, cand], margin])
    return out.reshape(P.shape)


def mad(P: np.ndarray, M: np.ndarray, k: int, *, alpha: float = 95) -> np.ndarray:
    """MAD's top k per culture (see `rank_mad`)."""
    return mask_from_ranks(rank_mad(P, M, alpha=alpha), k)


def rank_cas(P: np.ndarray, M: np.ndarray, *, alpha: float | None = None) -> np.ndarray:
    """CAS / ConAct (section 3.4): the margin between a neuron's top two cultures.

    ``score(c) = P1 - P2`` for the neuron's top culture ``c = argmax P`` and ``-inf`` otherwise;
    per culture, the neurons it tops by score (ties: flat index). A shared maximum is no top
    culture (see the module notes). The paper applies no activity gate; ``alpha`` adds the LAP
    gate, which for a top culture reads ``max_c P >= p_th``.
    """
    flat = P.reshape(P.shape[0], -1)
    first, second, arg = _top_two(flat)
    eligible = first > second
    if alpha is not None:
        eligible &= _active(first, _gate_threshold(P, alpha))
    margin = first - second
    out = _no_ranks(P)
    for c in range(flat.shape[0]):
        cand = np.flatnonzero(eligible & (arg == c))
        _rank_row(out[c], cand, [margin[cand]])
    return out.reshape(P.shape)


def cas(P: np.ndarray, M: np.ndarray, k: int, *, alpha: float | None = None) -> np.ndarray:
    """CAS's top k per culture (see `rank_cas`)."""
    return mask_from_ranks(rank_cas(P, M, alpha=alpha), k)


#: Selector name -> function. ``conact`` is the paper's v2 name of CAS.
METHODS: dict[str, Selector] = {
    "rnd": rnd,
    "lap": lap,
    "lape": lape,
    "mad": mad,
    "cas": cas,
    "conact": cas,
}

#: Selector name -> its full ranking, for methods that have one (ratio sweeps need it). A method
#: registered in METHODS only still selects at the headline ratio.
RANKINGS: dict[str, Selector] = {
    "rnd": rank_rnd,
    "lap": rank_lap,
    "lape": rank_lape,
    "mad": rank_mad,
    "cas": rank_cas,
    "conact": rank_cas,
}

#: Methods whose mask is the same for every culture row.
CULTURE_INDEPENDENT: set[str] = {"rnd"}


# -- the entry point --------------------------------------------------------------------------


def _method(name: str) -> Selector:
    if isinstance(name, str) and is_attribution(name):
        raise ValueError(
            f"selector method {name!r} scores the attribution store, not the firing statistics: "
            "see culture_neurons.selection.attribution"
        )
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        valid = sorted([*METHODS, *ATTRIBUTION_METHODS])
        raise ValueError(f"unknown selector method {name!r}; valid: {', '.join(valid)}") from None


def is_culture_independent(method: str) -> bool:
    """Whether ``method`` gives every culture the same mask (aliases included); a control
    derived from a reference's masks (``rnd_matched``) is culture-specific."""
    if is_control(method):
        return False
    if is_attribution(method):
        return method in ATTRIBUTION_CULTURE_INDEPENDENT
    fn = _method(method)
    return any(METHODS[name] is fn for name in CULTURE_INDEPENDENT)


def _parameters(fn: Selector) -> dict[str, inspect.Parameter]:
    return {
        name: p
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def _check_params(method: str, fn: Selector, params: dict[str, object]) -> None:
    valid = _parameters(fn)
    for name, value in params.items():
        if name not in valid:
            listed = ", ".join(sorted(valid)) or "none"
            raise ValueError(f"unknown parameter {name!r} for selector {method!r}; valid: {listed}")
        if name in ("alpha", "beta"):
            if value is None and name == "alpha" and valid[name].default is None:
                continue
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 100:
                raise ValueError(
                    f"{method}: {name} must be a percentile in [0, 100], got {value!r}"
                )
        elif name == "rho":
            if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
                raise ValueError(f"{method}: rho must be a fraction in (0, 1], got {value!r}")
        elif name == "seed" and (
            isinstance(value, bool) or not isinstance(value, Integral) or value < 0
        ):
            raise ValueError(f"{method}: seed must be a non-negative integer, got {value!r}")


def has_ranking(method: str) -> bool:
    """Whether ``method`` (aliases included) has a full ranking, so it can serve ratio sweeps."""
    if is_attribution(method):
        return True
    return _method(method) in {METHODS[name] for name in RANKINGS}


def _probabilities(
    method: str, fire_count: np.ndarray, pos_sum: np.ndarray, tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``P`` and ``M`` (float64 ``[C, L, D]``) from the per-culture sums."""
    fire_count = np.asarray(fire_count)
    pos_sum = np.asarray(pos_sum)
    if fire_count.ndim != 3 or pos_sum.shape != fire_count.shape:
        raise ValueError(
            "fire_count and pos_sum must both be [C, L, D], "
            f"got {fire_count.shape} and {pos_sum.shape}"
        )
    n_cultures = fire_count.shape[0]
    if n_cultures < 2 and not is_culture_independent(method):
        raise ValueError(f"{method} compares cultures: needs at least 2, got {n_cultures}")
    tokens = _check_tokens(tokens, n_cultures)
    P = activation_probability(fire_count, tokens)
    # The slack lets float32 counts above 2**24 round past their token count.
    if not (np.isfinite(P).all() and (P >= 0).all() and (P <= 1 + 1e-6).all()):
        raise ValueError("fire_count must be finite, non-negative and at most tokens")
    M = np.divide(pos_sum, tokens[:, None, None], dtype=np.float64)
    if not (np.isfinite(M).all() and (M >= 0).all()):
        raise ValueError("pos_sum must be finite and non-negative")
    return P, M


def _checked_output(method: str, out: np.ndarray, shape: tuple[int, ...], kind: str) -> None:
    # A selector bug must not reach the masks silently.
    wrong = out.dtype != bool if kind == "mask" else out.dtype.kind not in "iu"
    if wrong or out.shape != shape:
        raise RuntimeError(f"{method} returned {out.dtype} {out.shape}, not a {kind} of {shape}")


def select(
    method: str,
    fire_count: np.ndarray,
    pos_sum: np.ndarray,
    tokens: np.ndarray,
    *,
    ratio: float,
    **params: object,
) -> np.ndarray:
    """Select each culture's neurons to deactivate: bool ``[C, L, D]``.

    ``fire_count`` and ``pos_sum`` are per-culture sums over items (``[C, L, D]``, int or float),
    ``tokens`` the valid tokens per culture (``[C]``); ``params`` are the method's keyword
    parameters. Raises ValueError for an unknown method or parameter, a culture without tokens,
    mismatched shapes or impossible values.
    """
    fn = _method(method)
    _check_params(method, fn, params)
    k = budget(ratio, *np.shape(fire_count)[1:]) if np.ndim(fire_count) == 3 else 0
    P, M = _probabilities(method, fire_count, pos_sum, tokens)
    selected = fn(P, M, k, **params)
    _checked_output(method, selected, P.shape, "mask")
    return selected


def rank(
    method: str,
    fire_count: np.ndarray,
    pos_sum: np.ndarray,
    tokens: np.ndarray,
    **params: object,
) -> np.ndarray:
    """Each culture's full ranking of its candidate neurons: int32 ``[C, L, D]``, 0 = best,
    -1 = not a candidate. ``select(..., ratio=r)`` equals
    ``mask_from_ranks(rank(...), budget(r, L, D))``. Same inputs and errors as `select`; a
    method without a ranking (see `has_ranking`) is refused."""
    fn = _method(method)
    _check_params(method, fn, params)
    if not has_ranking(method):
        raise ValueError(
            f"selector method {method!r} has no ranking (only a top-k mask): it cannot serve "
            "ratio sweeps; register a ranking in RANKINGS or use a single ratio"
        )
    P, M = _probabilities(method, fire_count, pos_sum, tokens)
    ranking = next(RANKINGS[name] for name in RANKINGS if METHODS[name] is fn)
    ranks = ranking(P, M, **params)
    _checked_output(method, ranks, P.shape, "ranking")
    return ranks.astype(np.int32, copy=False)


def method_function(method: str, params: dict[str, object]) -> Selector:
    """The function behind ``method`` with ``params`` checked, for callers that derive ``P`` and
    ``M`` themselves and call it many times (resampling); ``select`` is the checked entry point."""
    fn = _method(method)
    _check_params(method, fn, params)
    return fn
