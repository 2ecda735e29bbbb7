"""Neuron selectors (appendix B.2, section 3.4): gates, tie-breaks, budgets, culture-order freedom.

Hand-made aggregates use 1024 tokens per culture and counts that make every P and M an exact
binary fraction, so each tie below is a true tie in floating point too.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from culture_neurons.selection.registry import FIRING, firing_selector, register, spec
from culture_neurons.selection.registry import methods as registered_methods
from culture_neurons.selection.registry import unregister as unregister_selector
from culture_neurons.selection.selectors import (
    _entropy,
    activation_probability,
    budget,
    has_ranking,
    is_culture_independent,
    mask_from_ranks,
    rank,
    select,
)

TOKENS = 1024


def aggregates(P, M=None):
    """Sums for probabilities ``P`` ([C, D] means one layer, or [C, L, D]) over TOKENS tokens."""
    P = np.asarray(P, dtype=float)
    if P.ndim == 2:
        P = P[:, None, :]
    M = P if M is None else np.asarray(M, dtype=float).reshape(P.shape)
    fire, pos = P * TOKENS, M * TOKENS
    assert (fire == np.round(fire)).all() and (pos == np.round(pos)).all()
    return fire, pos, np.full(P.shape[0], TOKENS)


def pick(method, P, k, M=None, **params):
    """Flat neuron indices selected per culture, with a budget of exactly k."""
    fire, pos, tokens = aggregates(P, M)
    _, n_layers, n_neurons = fire.shape
    selected = select(method, fire, pos, tokens, ratio=k / (n_layers * n_neurons), **params)
    return [np.flatnonzero(row).tolist() for row in selected.reshape(len(selected), -1)]


# -- budget and inputs ------------------------------------------------------------------------


def test_budget_is_rounded_share_of_all_neurons():
    assert budget(0.01, 28, 18944) == 5304
    assert budget(1.0, 2, 3) == 6
    assert budget(0.0, 4, 4) == 0
    assert budget(0.001, 1, 10) == 1  # at least one neuron when ratio > 0
    assert budget(0.5, 1, 3) == 2  # Python's round: half to even


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_budget_refuses_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match="ratio"):
        budget(ratio, 2, 3)


def test_activation_probability_divides_by_culture_tokens():
    fire = np.arange(12, dtype=np.int64).reshape(2, 2, 3)
    P = activation_probability(fire, np.array([10, 20]))
    assert P.dtype == np.float64
    np.testing.assert_array_equal(P[0], fire[0] / 10)
    np.testing.assert_array_equal(P[1], fire[1] / 20)


def test_entropy_of_normalised_probabilities():
    P = np.array([[1.0, 0.5, 0.5, 0.3], [1.0, 0.0, 0.25, 0.3], [1.0, 0.0, 0.25, 0.0]])
    H = _entropy(P)
    np.testing.assert_allclose(H, [np.log(3), 0.0, 1.5 * np.log(2), np.log(2)], rtol=1e-12)
    # Same bits for any culture order: LAPE's pool and tie-break must not depend on it.
    rng = np.random.default_rng(0)
    P = rng.random((5, 200))
    H = _entropy(P)
    for order in itertools.permutations(range(5)):
        assert (_entropy(P[list(order)]) == H).all()


# -- LAP --------------------------------------------------------------------------------------


def test_lap_equal_probability_is_decided_by_margin():
    P = [[0.5, 0.5, 0.125], [0.375, 0.125, 0.125]]
    # Neurons 0 and 1 tie at P=0.5 for culture 0; neuron 1's margin (0.375 vs 0.125) wins.
    assert pick("lap", P, 1, alpha=0) == [[1], [0]]
    assert pick("lap", P, 2, alpha=0) == [[0, 1], [0, 2]]


def test_lap_gate_leaves_fewer_than_the_budget():
    P = [[0.75, 0.5, 0.25, 0.125], [0.125, 0.125, 0.125, 0.125]]
    # p_th = 80th percentile of the 8 values = 0.25 + 0.6 * 0.25 = 0.4
    assert pick("lap", P, 3, alpha=80) == [[0, 1], []]
    # Culture 1's equal probabilities go to the neurons culture 0 fires least on (larger margin).
    assert pick("lap", P, 3, alpha=0) == [[0, 1, 2], [1, 2, 3]]


# -- LAPE -------------------------------------------------------------------------------------


def test_lape_ranks_by_probability_then_lower_entropy():
    P = [
        [0.75, 0.75, 0.875],
        [0.375, 0.5, 0.5],
        [0.375, 0.0, 0.5],
    ]
    # All three go to culture 0. Neuron 2 has the largest P. Neurons 0 and 1 tie at P=0.75; neuron
    # 1 has the lower entropy (0.67 vs 1.04 nats) though neuron 0 has the larger margin.
    assert pick("lape", P, 1, alpha=0, beta=0) == [[2], [], []]
    assert pick("lape", P, 2, alpha=0, beta=0) == [[1, 2], [], []]
    assert pick("lape", P, 3, alpha=0, beta=0) == [[0, 1, 2], [], []]


def test_lape_bar_refuses_weak_top_culture():
    P = [[0.875, 0.125, 0.25], [0.125, 0.25, 0.125]]
    # p_bar = 90th percentile of the 6 values = 0.25 + 0.5 * 0.625 = 0.5625: only neuron 0's
    # top probability reaches it, so neurons 1 and 2 are assigned to no culture.
    assert pick("lape", P, 2, alpha=0, beta=90) == [[0], []]
    assert pick("lape", P, 2, alpha=0, beta=0) == [[0, 2], [1]]


def test_lape_pool_keeps_lowest_entropy():
    P = [[0.875, 0.5], [0.625, 0.0]]
    # Neuron 0 has the higher P but is spread over both cultures; a half pool keeps neuron 1 only.
    assert pick("lape", P, 1, alpha=0, beta=0, rho=1.0) == [[0], []]
    assert pick("lape", P, 1, alpha=0, beta=0, rho=0.5) == [[1], []]


def test_lape_gate_drops_neurons_rare_everywhere():
    P = [[0.875, 0.25, 0.125, 0.125], [0.125, 0.125, 0.125, 0.5]]
    # p_th = 75th percentile of the 8 values = 0.3125: neuron 1's top (0.25) does not reach it.
    assert pick("lape", P, 2, alpha=75, beta=0) == [[0], [3]]
    assert pick("lape", P, 2, alpha=0, beta=0) == [[0, 1], [3]]


def test_lape_and_cas_leave_shared_top_unassigned():
    P = [[0.5, 0.75], [0.5, 0.25]]
    assert pick("lape", P, 2, alpha=0, beta=0) == [[1], []]
    assert pick("cas", P, 2) == [[1], []]


# -- MAD --------------------------------------------------------------------------------------


def test_mad_gate_removes_rare_but_strong_neuron():
    P = [[0.125, 0.875], [0.125, 0.875]]
    M = [[4.0, 1.0], [0.0, 0.5]]
    # Neuron 0 scores 4 for culture 0 against neuron 1's 0.5, but it fires on 12.5% of tokens.
    assert pick("mad", P, 1, M, alpha=0) == [[0], [1]]
    # p_th = median of the 4 values = 0.5
    assert pick("mad", P, 1, M, alpha=50) == [[1], [1]]


def test_mad_equal_score_is_decided_by_probability():
    P = [[0.5, 0.75], [0.5, 0.5], [0.5, 0.5]]
    M = [[1.0, 1.0], [0.5, 0.5], [0.5, 0.5]]
    assert pick("mad", P, 1, M, alpha=0) == [[1], [0], [0]]


def test_mad_equal_score_and_probability_is_decided_by_margin():
    P = [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    # Both neurons score 1 - 0.5 for culture 0; neuron 1's runner-up is 0.5 against neuron 0's 1.
    M = [[1.0, 1.0], [1.0, 0.5], [0.0, 0.5]]
    assert pick("mad", P, 1, M, alpha=0)[0] == [1]


def test_mad_equal_scores_from_different_means_tie_exactly():
    # Both neurons score 17/24 for culture 0 (0.75 - 0.125/3 = 1 - 1.75/3); computed as
    # M - mean(others) the first comes out one ulp higher, and P would no longer decide.
    P = [[0.5, 0.75], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]]
    M = [[0.75, 1.0], [0.0, 0.0], [0.0, 0.0], [0.125, 0.875]]
    assert pick("mad", P, 1, M, alpha=0)[0] == [1]


@pytest.mark.parametrize("seed", range(8))
def test_mad_scores_do_not_depend_on_the_order_of_the_other_cultures(seed):
    # Every neuron holds the same four values for cultures 1..4, each in another order: all tie
    # for culture 0, so the lowest index must win, however float sums round (magnitudes apart,
    # so that they do round).
    rng = np.random.default_rng(seed)
    values = rng.random(4) * 10.0 ** rng.integers(-3, 4, size=4)
    orders = np.array(list(itertools.permutations(range(4))))
    pos = np.empty((5, 1, len(orders)))
    pos[0] = rng.random()
    pos[1:, 0, :] = values[orders].T
    tokens = np.full(5, 7919)  # not a power of two: M = pos / tokens is inexact
    fire = np.ones_like(pos)
    selected = select("mad", fire, pos, tokens, ratio=1 / len(orders), alpha=0)
    assert np.flatnonzero(selected[0]).tolist() == [0]


# -- CAS --------------------------------------------------------------------------------------

CAS_P = [
    [0.75, 0.5, 0.625, 0.5],
    [0.25, 0.625, 0.125, 0.5],
    [0.25, 0.125, 0.0, 0.0],
]


def test_cas_selects_only_neurons_the_source_culture_tops():
    # Neurons 0 and 2 top culture 0 (margin 0.5 each), neuron 1 tops culture 1, neuron 3 is shared
    # by cultures 0 and 1; culture 0 never gets neuron 1 although it fires on half the tokens.
    assert pick("cas", CAS_P, 3) == [[0, 2], [1], []]
    assert pick("cas", CAS_P, 1) == [[0], [1], []]  # equal margins: the lower index


def test_cas_ranks_by_margin():
    P = [[0.75, 0.875, 0.5], [0.5, 0.125, 0.375]]
    assert pick("cas", P, 1) == [[1], []]
    assert pick("cas", P, 2) == [[0, 1], []]


def test_cas_optional_gate():
    # p_th = 95th percentile of the 12 values = 0.625 + 0.45 * 0.125
    assert pick("cas", CAS_P, 2, alpha=95) == [[0], [], []]
    assert pick("cas", CAS_P, 2, alpha=None) == pick("cas", CAS_P, 2)


def test_conact_is_cas():
    assert spec("conact").rank is spec("cas").rank
    fire, pos, tokens = random_aggregates(np.random.default_rng(1), 4, 2, 30)
    np.testing.assert_array_equal(
        select("conact", fire, pos, tokens, ratio=0.1),
        select("cas", fire, pos, tokens, ratio=0.1),
    )


# -- RND --------------------------------------------------------------------------------------


def test_rnd_same_mask_for_every_culture_and_seeded():
    fire, pos, tokens = random_aggregates(np.random.default_rng(2), 3, 2, 50)
    masks = {seed: select("rnd", fire, pos, tokens, ratio=0.1, seed=seed) for seed in (0, 1)}
    for mask in masks.values():
        assert mask.shape == (3, 2, 50) and mask.dtype == bool
        assert (mask == mask[0]).all()
        assert mask[0].sum() == 10
    assert (masks[0] != masks[1]).any()
    np.testing.assert_array_equal(masks[0], select("rnd", fire, pos, tokens, ratio=0.1))
    # The first k of one seeded permutation, so a larger ratio's mask contains a smaller one's.
    expected = np.random.default_rng(7).permutation(100)[:10]
    chosen = select("rnd", fire, pos, tokens, ratio=0.1, seed=7)[0].ravel()
    assert sorted(np.flatnonzero(chosen)) == sorted(expected)


def test_culture_independence_flag():
    assert is_culture_independent("rnd")
    assert not any(is_culture_independent(m) for m in ("lap", "lape", "mad", "cas", "conact"))


# -- errors -----------------------------------------------------------------------------------


def test_unknown_method_lists_the_valid_ones():
    fire, pos, tokens = aggregates([[0.5, 0.5], [0.5, 0.25]])
    with pytest.raises(ValueError, match="'nope'.*cas, conact, lap, lape, mad, rnd"):
        select("nope", fire, pos, tokens, ratio=0.5)
    with pytest.raises(ValueError, match="unknown selector"):
        is_culture_independent("nope")


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("lap", {"beta": 90}, "unknown parameter 'beta' for selector 'lap'; valid: alpha"),
        ("rnd", {"alpha": 95}, "unknown parameter 'alpha'.*valid: seed"),
        ("lape", {"pool": 0.1}, "valid: alpha, beta, rho"),
        ("lap", {"alpha": 101}, "alpha must be a percentile"),
        ("lap", {"alpha": None}, "alpha must be a percentile"),
        ("lape", {"beta": -1}, "beta must be a percentile"),
        ("lape", {"rho": 0}, "rho must be a fraction"),
        ("lape", {"rho": 10}, "rho must be a fraction"),
        ("rnd", {"seed": 1.5}, "seed must be"),
        ("rnd", {"seed": -1}, "seed must be"),
    ],
)
def test_bad_parameters_are_refused(method, params, message):
    fire, pos, tokens = aggregates([[0.5, 0.5], [0.5, 0.25]])
    with pytest.raises(ValueError, match=message):
        select(method, fire, pos, tokens, ratio=0.5, **params)


def test_culture_without_tokens_is_named():
    fire, pos, _ = aggregates([[0.5, 0.5], [0.0, 0.0], [0.5, 0.25]])
    with pytest.raises(ValueError, match=r"indices \[1\] have no valid tokens"):
        select("cas", fire, pos, np.array([10, 0, 10]), ratio=0.5)


def test_inconsistent_inputs_are_refused():
    fire, pos, tokens = aggregates([[0.5, 0.5], [0.5, 0.25]])
    with pytest.raises(ValueError, match="must both be"):
        select("lap", fire, pos[:, :, :1], tokens, ratio=0.5)
    with pytest.raises(ValueError, match="shape"):
        select("lap", fire, pos, tokens[:1], ratio=0.5)
    with pytest.raises(ValueError, match="at most tokens"):
        select("lap", fire * 4, pos, tokens, ratio=0.5)
    with pytest.raises(ValueError, match="non-negative"):
        select("lap", fire, -pos, tokens, ratio=0.5)
    with pytest.raises(ValueError, match="at least 2"):
        select("mad", fire[:1], pos[:1], tokens[:1], ratio=0.5)
    with pytest.raises(ValueError, match="ratio"):
        select("lap", fire, pos, tokens, ratio=2)


# -- properties -------------------------------------------------------------------------------


def random_aggregates(rng, C, L, D, *, levels=None, tokens=None):
    """Counts with deliberate ties (P on a grid of ``levels`` steps); no pos_sum without fire."""
    tokens = rng.integers(1, 1000, size=C) if tokens is None else np.asarray(tokens)
    levels = levels or int(rng.integers(1, 9))
    steps = rng.integers(0, levels + 1, size=(C, L, D))
    fire = steps * tokens[:, None, None] // levels
    pos = fire * rng.integers(0, 4, size=(C, L, D))
    return fire, pos, tokens


@st.composite
def cases(draw, *, dyadic=False):
    """(fire_count, pos_sum, tokens, ratio): small shapes, many ties, int or float arrays."""
    C, L, D = draw(st.integers(2, 5)), draw(st.integers(1, 3)), draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    levels = draw(st.one_of(st.integers(1, 3), st.integers(1, 8)))
    # Power-of-two token counts keep P and M exact, so exact references can compare bit for bit.
    tokens = 2 ** rng.integers(3, 7, size=C) if dyadic else None
    fire, pos, tokens = random_aggregates(rng, C, L, D, levels=levels, tokens=tokens)
    if draw(st.booleans()):
        fire, pos = fire.astype(np.float32), pos.astype(np.float32)
    ratio = draw(st.sampled_from([0.0, 0.05, 0.1, 0.2, 0.34, 0.5, 1.0]))
    return fire, pos, tokens, ratio


@st.composite
def methods(draw):
    """(method, params) with random parameters."""
    # Low percentiles leave many candidates, hence ties at the budget's edge where tie-breaks act.
    percentile = st.one_of(st.sampled_from([0, 10, 50, 95]), st.integers(0, 100))
    method = draw(st.sampled_from(sorted(registered_methods(FIRING))))
    params = {
        "rnd": lambda: {"seed": draw(st.integers(0, 99))},
        "lap": lambda: {"alpha": draw(percentile)},
        "mad": lambda: {"alpha": draw(percentile)},
        "lape": lambda: {
            "alpha": draw(percentile),
            "beta": draw(percentile),
            "rho": draw(st.sampled_from([0.1, 0.25, 0.5, 1.0])),
        },
        "cas": lambda: {"alpha": draw(st.one_of(st.none(), percentile))},
        "conact": lambda: {"alpha": draw(st.one_of(st.none(), percentile))},
    }[method]()
    return method, params


def reference(method, fire, pos, tokens, ratio, **params):
    """Neuron by neuron, exact arithmetic and Python's sort: the appendix read literally.

    It starts from the same float64 P and M as the module (exact when tokens are powers of two)
    and computes margins, MAD means and comparisons with fractions, so ties are true ties.
    """
    C, L, D = fire.shape
    N = L * D
    k = budget(ratio, L, D)
    P_float = np.asarray(fire, dtype=float) / np.asarray(tokens, dtype=float)[:, None, None]
    M_float = np.asarray(pos, dtype=float) / np.asarray(tokens, dtype=float)[:, None, None]
    P = [[Fraction(v) for v in P_float[c].ravel()] for c in range(C)]
    M = [[Fraction(v) for v in M_float[c].ravel()] for c in range(C)]
    alpha = params.get("alpha", 95)
    p_th = None if alpha is None else float(np.percentile(P_float, alpha))

    def column(X, n):
        return [X[c][n] for c in range(C)]

    def others_max(X, c, n):
        return max(X[d][n] for d in range(C) if d != c)

    def top_culture(n):
        values = column(P, n)
        return values.index(max(values)) if values.count(max(values)) == 1 else None

    ranked: list[list[int]] = [[] for _ in range(C)]
    if method == "lap":
        for c in range(C):
            kept = [n for n in range(N) if P[c][n] >= p_th and P[c][n] > 0]
            ranked[c] = sorted(kept, key=lambda n: (-P[c][n], others_max(P, c, n), n))
    elif method == "mad":
        for c in range(C):
            kept = [n for n in range(N) if P[c][n] >= p_th and P[c][n] > 0]

            def key(n, c=c):
                others = sum(M[d][n] for d in range(C) if d != c) / (C - 1)
                margin = M[c][n] - others_max(M, c, n)
                return (-(M[c][n] - others), -P[c][n], -margin, n)

            ranked[c] = sorted(kept, key=key)
    elif method in ("cas", "conact"):
        for n in range(N):
            c = top_culture(n)
            if c is not None and (p_th is None or P[c][n] >= p_th):
                ranked[c].append(n)
        for c in range(C):
            ranked[c].sort(key=lambda n, c=c: (-(P[c][n] - others_max(P, c, n)), n))
    elif method == "lape":
        p_bar = float(np.percentile(P_float, params["beta"]))
        survivors = [n for n in range(N) if max(column(P, n)) >= p_th and max(column(P, n)) > 0]
        # H is floating point either way; the module's entropy is tested on its own above.
        H = dict(zip(survivors, _entropy(P_float.reshape(C, N)[:, survivors]), strict=True))
        n_pool = max(1, round(params["rho"] * len(survivors))) if survivors else 0
        pool = sorted(survivors, key=lambda n: (H[n], n))[:n_pool]
        for n in pool:
            c = top_culture(n)
            if c is not None and P[c][n] >= p_bar:
                ranked[c].append(n)
        for c in range(C):
            ranked[c].sort(key=lambda n, c=c: (-P[c][n], H[n], others_max(P, c, n), n))
    else:
        raise AssertionError(method)
    expected = np.zeros((C, N), dtype=bool)
    for c in range(C):
        expected[c, ranked[c][:k]] = True
    return expected.reshape(C, L, D)


@settings(max_examples=150, deadline=None)
@given(case=cases(dyadic=True), choice=methods())
def test_matches_literal_reference(case, choice):
    method, params = choice
    if method == "rnd":
        return
    fire, pos, tokens, ratio = case
    params = {"alpha": 95, "beta": 90, "rho": 1.0, **params} if method == "lape" else params
    got = select(method, fire, pos, tokens, ratio=ratio, **params)
    np.testing.assert_array_equal(got, reference(method, fire, pos, tokens, ratio, **params))


@settings(max_examples=150, deadline=None)
@given(case=cases(), choice=methods(), data=st.data())
def test_permuting_cultures_permutes_rows(case, choice, data):
    method, params = choice
    fire, pos, tokens, ratio = case
    order = np.array(data.draw(st.permutations(range(len(tokens)))))
    selected = select(method, fire, pos, tokens, ratio=ratio, **params)
    permuted = select(method, fire[order], pos[order], tokens[order], ratio=ratio, **params)
    np.testing.assert_array_equal(permuted, selected[order])


@settings(max_examples=150, deadline=None)
@given(case=cases(), choice=methods())
def test_exact_budget_unless_fewer_candidates(case, choice):
    method, params = choice
    fire, pos, tokens, ratio = case
    C, L, D = fire.shape
    k = budget(ratio, L, D)
    selected = select(method, fire, pos, tokens, ratio=ratio, **params)
    assert selected.dtype == bool and selected.shape == (C, L, D)
    prob = fire / tokens[:, None, None]
    top, runner_up = np.sort(prob, axis=0)[-1], np.sort(prob, axis=0)[-2]
    alpha = params.get("alpha")
    p_th = np.percentile(prob, alpha) if alpha is not None else -np.inf
    if method == "rnd":
        candidates = np.full(C, L * D)
    elif method in ("lap", "mad"):
        candidates = ((prob >= p_th) & (prob > 0)).sum(axis=(1, 2))
    elif method in ("cas", "conact"):
        # A selected neuron is topped by its source culture alone.
        assert (~selected | (prob == top) & (top > runner_up)).all()
        candidates = ((prob == top) & (top > runner_up) & (top >= p_th)).sum(axis=(1, 2))
    else:
        candidates = reference(method, fire, pos, tokens, 1.0, **params).sum(axis=(1, 2))
    np.testing.assert_array_equal(selected.sum(axis=(1, 2)), np.minimum(k, candidates))


@settings(max_examples=100, deadline=None)
@given(case=cases(dyadic=True), choice=methods())
def test_ranking_gives_every_budgets_mask_nested(case, choice):
    """One ranking serves every ratio: its top k is the literal reference's (RND: ``select``'s)
    mask at budget k, for every k, and each is contained in the next."""
    method, params = choice
    fire, pos, tokens, _ = case
    params = {"alpha": 95, "beta": 90, "rho": 1.0, **params} if method == "lape" else params
    C, L, D = fire.shape
    ranks = rank(method, fire, pos, tokens, **params)
    assert ranks.dtype == np.int32 and ranks.shape == (C, L, D)
    for row in ranks.reshape(C, -1):  # each culture's candidates numbered 0..n-1, once each
        ranked = np.sort(row[row >= 0])
        np.testing.assert_array_equal(ranked, np.arange(ranked.size))
        assert (row[row < 0] == -1).all()
    previous = np.zeros((C, L, D), dtype=bool)
    for k in range(L * D + 1):
        mask = mask_from_ranks(ranks, k)
        ratio = k / (L * D)
        if method == "rnd":
            expected = select(method, fire, pos, tokens, ratio=ratio, **params)
        else:
            expected = reference(method, fire, pos, tokens, ratio, **params)
        np.testing.assert_array_equal(mask, expected)
        assert not (previous & ~mask).any()
        previous = mask


@pytest.fixture
def registered():
    """Register selector specs for one test, and remove them afterwards."""
    names = []

    def add(entry):
        register(entry)
        names.append(entry.name)
        return entry

    yield add
    for name in names:
        unregister_selector(name)


def test_a_method_without_ranking_selects_but_cannot_rank(registered):
    def first_k(P, M, k):
        out = np.zeros(P.shape, dtype=bool)
        out.reshape(P.shape[0], -1)[:, :k] = True
        return out

    registered(firing_selector("first_k", None, mask=first_k))
    fire, pos, tokens = random_aggregates(np.random.default_rng(0), 2, 1, 10)
    assert has_ranking("cas") and has_ranking("conact") and not has_ranking("first_k")
    assert select("first_k", fire, pos, tokens, ratio=0.2).sum() == 4
    with pytest.raises(ValueError, match="'first_k' has no ranking.*ratio sweeps"):
        rank("first_k", fire, pos, tokens)
