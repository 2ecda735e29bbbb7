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
A selector is one ranking function and one registry entry (`culture_neurons.selection.registry`)::

    def rank_mine(P: np.ndarray, M: np.ndarray, *, alpha: float = 95) -> np.ndarray: ...

    register(firing_selector("mine", rank_mine))

``P`` and ``M`` are float64 ``[C, L, D]`` (``C >= 2``, ``P`` in [0, 1], ``M >= 0``, all finite)
and the keyword-only parameters are the method's tunables (their names are what config entries
and :func:`select` accept; anything else is refused, and each name is checked the same way in
every selector: `registry.PARAMETER_CHECKS`). It returns int32 ``[C, L, D]``: each culture's
candidates numbered 0, 1, ... best first, -1 (`NOT_RANKED`) for the rest; the mask at budget
``k`` is its top ``k`` (:func:`mask_from_ranks`). :func:`_rank_row` does the per-culture
multi-key ranking with the final tie-break by flat neuron index ``l * D + n``; :func:`_top_two`,
:func:`_gate_threshold` and :func:`_sorted_over_cultures` are the shared pieces. A method whose
mask is the same for every culture registers with ``culture_independent=True`` (the workflow then
stores and evaluates it once). A method with only a top-k mask ``fn(P, M, k, **params)``
registers ``firing_selector(name, None, mask=fn)``; it cannot serve ratio sweeps.

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

from numbers import Real

import numpy as np

from culture_neurons.selection.conventions import NOT_RANKED
from culture_neurons.selection.registry import (
    ATTRIBUTION_SCORES,
    FIRING,
    Selector,
    SelectorSpec,
    check_params,
    firing_selector,
    has_ranking,  # noqa: F401 (re-exported: callers ask it with select and rank)
    is_culture_independent,
    register,
    spec,
)

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


# -- the entry points -------------------------------------------------------------------------


def _firing_spec(method: str) -> SelectorSpec:
    """The spec of a method on the firing statistics; other methods are refused, naming what
    they rank instead."""
    entry = spec(method)
    if entry.inputs == ATTRIBUTION_SCORES:
        raise ValueError(
            f"selector method {method!r} scores the attribution store, not the firing statistics: "
            "see culture_neurons.selection.attribution"
        )
    if entry.inputs != FIRING:
        raise ValueError(
            f"selector method {method!r} is drawn from another selector's masks ({entry.inputs}), "
            "not from the firing statistics: see culture_neurons.selection.controls"
        )
    return entry


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
    fn = method_function(method, params)
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
    entry = _firing_spec(method)
    check_params(method, params)
    if entry.rank is None:
        raise ValueError(
            f"selector method {method!r} has no ranking (only a top-k mask): it cannot serve "
            "ratio sweeps; register a ranking with it or use a single ratio"
        )
    P, M = _probabilities(method, fire_count, pos_sum, tokens)
    ranks = entry.rank(P, M, **params)
    _checked_output(method, ranks, P.shape, "ranking")
    return ranks.astype(np.int32, copy=False)


def method_function(method: str, params: dict[str, object]) -> Selector:
    """The top-k mask function ``fn(P, M, k, **params)`` of ``method`` with ``params`` checked,
    for callers that derive ``P`` and ``M`` themselves and call it many times (resampling);
    ``select`` is the checked entry point."""
    entry = _firing_spec(method)
    check_params(method, params)
    if entry.mask is not None:
        return entry.mask
    ranking = entry.rank

    def top_k(P: np.ndarray, M: np.ndarray, k: int, **kwargs: object) -> np.ndarray:
        return mask_from_ranks(ranking(P, M, **kwargs), k)

    return top_k


# -- the registry entries ----------------------------------------------------------------------
# ``conact`` is the paper's v2 name of CAS.
register(firing_selector("rnd", rank_rnd, culture_independent=True))
register(firing_selector("lap", rank_lap))
register(firing_selector("lape", rank_lape))
register(firing_selector("mad", rank_mad))
register(firing_selector("cas", rank_cas))
register(firing_selector("conact", rank_cas))
