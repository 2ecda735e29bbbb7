"""Stability by resampling the per-item store: sums against brute force, the full replicate
against the select stage's aggregates and masks (every data-driven selector, on a store whose
cultures differ in size, item order, token counts and correctness), identical items -> Jaccard 1,
no signal -> the null, and the summary's interval bounds by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.benchmark.synthetic import write_synthetic_store
from culture_neurons.errors import InputError
from culture_neurons.record.aggregate import aggregate
from culture_neurons.record.store import create_or_resume, open_store
from culture_neurons.selection.masks import read_masks
from culture_neurons.selection.selectors import select
from culture_neurons.selection.stability import (
    BOOTSTRAP,
    FULL,
    NULL,
    NULL_FULL,
    ResamplePlan,
    accumulate,
    jaccard,
    resample_plan,
    stability,
    summarize,
)
from culture_neurons.stages.select import select_stage

SELECTORS = {
    "cas": {"method": "cas"},
    "lap": {"method": "lap", "alpha": 90},
    "rnd-s0": {"method": "rnd", "seed": 0},
    "rnd_matched-s0": {"method": "rnd_matched", "reference": "cas", "seed": 0},
}


@pytest.fixture(scope="module")
def signal_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("stability") / "signal.zarr"
    write_synthetic_store(
        path, n_cultures=4, items_per_culture=30, n_layers=2, n_neurons=150, signal=0.4,
        own_share=0.05, chunk_items=16, seed=1,
    )  # fmt: skip
    return open_store(path)


def test_plan_bootstraps_within_cultures_and_permutes_keeping_sizes():
    cultures = np.repeat([0, 1, 2], [6, 8, 3])
    used = np.ones(17, dtype=bool)
    used[0] = False
    plan = resample_plan(
        cultures, used, ["a", "b", "c"], n_resamples=5, null_resamples=4, seed=0, min_items=4
    )
    assert plan.kinds == [FULL] + [BOOTSTRAP] * 5 + [NULL_FULL, NULL] * 4
    assert plan.reference == [0] * 6 + [6, 6, 8, 8, 10, 10, 12, 12]
    assert plan.items_used.tolist() == [5, 8, 3]
    assert plan.resampled.tolist() == [True, True, False]
    for r in range(1, 6):
        w = plan.weights[r]
        assert w[0] == 0  # the unused item never enters
        assert [w[cultures == c].sum() for c in range(3)] == [5, 8, 3]
        np.testing.assert_array_equal(w[cultures == 2], 1)  # too few items: kept as they are
    for r in range(6, 14):
        labels = plan.labels[r]
        assert labels[0] == -1
        assert np.bincount(labels[labels >= 0]).tolist() == [5, 8, 3]
        # The null's bootstrap resamples within the permuted cultures.
        w = plan.weights[r]
        assert [w[labels == c].sum() for c in range(3)] == [5, 8, 3]
    np.testing.assert_array_equal(plan.weights[6], used)  # its permuted full data
    assert (plan.weights[7] != used).any()
    assert (plan.labels[6:] != plan.labels[0]).any()


def test_accumulated_sums_equal_brute_force_resampled_sums(signal_store):
    group = signal_store.group
    n = signal_store.n_items
    cultures = sorted(set(map(str, group["culture"][:])))
    culture_idx = np.array([cultures.index(str(c)) for c in group["culture"][:]])
    used = group["correct"][:] == 1
    plan = resample_plan(culture_idx, used, cultures, n_resamples=2, null_resamples=2, seed=4)
    fire, pos, tokens = accumulate(signal_store, plan, list(range(plan.n_replicates)))
    counts = group["fire_count"][:].astype(np.float64)
    sums = group["pos_sum"][:].astype(np.float64)
    item_tokens = group["tokens"][:].astype(np.float64)
    for r in range(plan.n_replicates):
        for c in range(len(cultures)):
            w = plan.weights[r] * (plan.labels[r] == c)
            assert w.shape == (n,)
            np.testing.assert_allclose(fire[r, c], np.tensordot(w, counts, 1), rtol=1e-6)
            np.testing.assert_allclose(pos[r, c], np.tensordot(w, sums, 1), rtol=1e-5)
            assert tokens[r, c] == pytest.approx(w @ item_tokens)
    # The full replicate is the select stage's aggregate.
    agg = aggregate(signal_store, only_correct=True)
    np.testing.assert_allclose(fire[0], agg.fire_count, rtol=1e-6)
    np.testing.assert_array_equal(tokens[0], agg.tokens)


def test_resamples_keep_the_full_selection_and_signal_beats_the_null(signal_store):
    result = stability(
        signal_store, SELECTORS, ratio=0.05, n_resamples=12, null_resamples=6, seed=0
    )
    assert sorted(result.frequency) == ["cas", "lap"]  # RND and the control are not resampled
    agg = aggregate(signal_store, only_correct=True)
    expected = select("cas", agg.fire_count, agg.pos_sum, agg.tokens, ratio=0.05)
    np.testing.assert_array_equal(result.full["cas"], expected)
    frequency = result.frequency["cas"]
    assert frequency.shape == expected.shape and frequency.max() <= 1.0
    # Neurons the full selection takes are the ones resamples keep taking.
    assert frequency[expected].mean() > 0.8 > frequency[~expected].mean()
    summary = result.summary.set_index(["selector", "culture", "kind"])
    for culture in result.cultures:
        boot = summary.loc[("cas", culture, BOOTSTRAP), "mean"]
        null = summary.loc[("cas", culture, NULL), "mean"]
        assert boot > 0.7 and boot - null > 0.2, (culture, boot, null)
        assert summary.loc[("cas", culture, BOOTSTRAP), "lo"] <= boot
        assert summary.loc[("cas", culture, BOOTSTRAP), "n_replicates"] == 12


def test_without_culture_signal_resamples_overlap_like_the_null(tmp_path):
    path = tmp_path / "flat.zarr"
    write_synthetic_store(
        path, n_cultures=4, items_per_culture=30, n_layers=2, n_neurons=150, signal=0.0, seed=2
    )
    result = stability(open_store(path), {"cas": {"method": "cas"}}, ratio=0.05,
                       n_resamples=12, null_resamples=12)  # fmt: skip
    means = result.summary.groupby("kind")["mean"].mean()
    assert abs(means[BOOTSTRAP] - means[NULL]) < 0.1, means


def test_identical_items_give_jaccard_one(tmp_path):
    n_layers, n_neurons, per_culture = 2, 40, 8
    rng = np.random.default_rng(0)
    profiles = rng.integers(0, 50, size=(3, n_layers, n_neurons))
    store = create_or_resume(
        tmp_path / "same.zarr", item_ids=[f"i{k}" for k in range(3 * per_culture)],
        cultures=[f"c{k // per_culture}" for k in range(3 * per_culture)], n_layers=n_layers,
        n_neurons=n_neurons, chunk_items=5, attrs={"model": "m"},
    )  # fmt: skip
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        which = np.arange(rows.start, rows.stop) // per_culture
        fire = profiles[which]
        store.write_chunk(chunk, fire, fire * 0.5, np.full(len(which), 60), np.ones(len(which)))
    result = stability(open_store(tmp_path / "same.zarr"), {"cas": {}, "mad": {}}, ratio=0.1,
                       n_resamples=6, null_resamples=3)  # fmt: skip
    boot = result.jaccards[result.jaccards["kind"] == BOOTSTRAP]
    assert (boot["jaccard"] == 1.0).all()
    np.testing.assert_array_equal(np.unique(result.frequency["cas"]), [0.0, 1.0])


def test_groups_of_replicates_give_the_same_result_as_one_pass(signal_store):
    kwargs = dict(ratio=0.05, n_resamples=4, null_resamples=3, seed=5)
    one = stability(signal_store, {"cas": {}}, memory_gb=1.0, **kwargs)
    many = stability(signal_store, {"cas": {}}, memory_gb=1e-5, **kwargs)  # one per pass
    np.testing.assert_array_equal(one.jaccards["jaccard"], many.jaccards["jaccard"])


def test_thin_cultures_are_flagged_and_bad_input_refused(signal_store):
    result = stability(signal_store, {"cas": {}}, ratio=0.05, n_resamples=3, null_resamples=2,
                       min_items=1000)  # fmt: skip
    boot = result.summary[result.summary["kind"] == BOOTSTRAP]
    assert boot["mean"].isna().all() and boot["flag"].str.contains("not resampled").all()
    with pytest.raises(InputError, match="resamples must be at least 1"):
        stability(signal_store, {"cas": {}}, ratio=0.05, n_resamples=0)
    with pytest.raises(InputError, match="data-driven"):
        stability(signal_store, {"rnd-s0": {"method": "rnd"}}, ratio=0.05)
    with pytest.raises(InputError, match="selector 'cass': unknown selector method"):
        stability(signal_store, {"cass": {}}, ratio=0.05)


def test_jaccard_by_hand():
    a = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 0]]], dtype=bool)
    b = np.array([[[1, 0, 1, 0]], [[0, 0, 0, 0]]], dtype=bool)
    out = jaccard(a, b)
    assert out[0] == pytest.approx(1 / 3) and np.isnan(out[1])


def test_stability_stage_writes_tables_frequencies_and_the_figure(signal_store, tmp_path):
    import zarr

    from culture_neurons.stages.stability import stability_stage

    out = tmp_path / "stability"
    report = stability_stage(
        signal_store.path, SELECTORS, 0.05, out / "summary.csv", out / "jaccards.parquet",
        out / "frequency.zarr", tmp_path / "fig", resamples=3, null_resamples=2,
    )  # fmt: skip
    assert report["selectors"] == ["cas", "lap"]
    assert report["skipped"] == ["rnd-s0", "rnd_matched-s0"]
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["kind"]) == {BOOTSTRAP, NULL}  # read back as words, not missing values
    assert len(pd.read_parquet(out / "jaccards.parquet")) == 2 * 4 * (3 + 2)
    group = zarr.open_group(str(out / "frequency.zarr"), mode="r")
    assert list(group["culture"][:]) == sorted(set(map(str, signal_store.group["culture"][:])))
    assert group["cas"].shape == (4, 2, 150) and group.attrs["resamples"] == 3
    assert (tmp_path / "fig.png").stat().st_size > 1000
    xarray = pytest.importorskip("xarray")
    ds = xarray.open_zarr(out / "frequency.zarr", consolidated=False)
    assert ds["cas"].sel(culture="c00").shape == (2, 150)


# Cultures as real stores have them: unequal sizes, items interleaved (the first item's culture
# is not the first in sorted order), token counts that vary per item, one culture answered
# wrongly throughout (unscorable: an empty mask) and one with too few correct items to resample.
VARIED_SIZES = {"zh": 26, "am": 41, "pt": 14, "ko": 9, "sw": 7}
VARIED_CORRECT = {"zh": 0.7, "am": 0.6, "pt": 0.8, "ko": 0.5, "sw": 0.0}  # ko: 4 set below
VARIED_SELECTORS = {
    "cas": {"method": "cas"},
    "cas-gated": {"method": "cas", "alpha": 80},
    "lap": {"method": "lap", "alpha": 90},
    "lape": {"method": "lape", "alpha": 85, "beta": 80, "rho": 0.5},
    "mad": {"method": "mad", "alpha": 90},
    "mad-default": {"method": "mad"},
}


@pytest.fixture(scope="module")
def varied_store(tmp_path_factory):
    """Every statistic is exact in float32 (integer counts, positive sums in eighths far below
    2**24), so the stability pass and the select stage see the same bits and must agree exactly;
    the positive sums are not proportional to the counts (per item and neuron magnitudes, and
    culture-specific magnitude boosts on other neurons than the firing boosts), so MAD ranks
    differently from CAS and LAP."""
    rng = np.random.default_rng(7)
    n_layers, n_neurons = 3, 60
    cells = n_layers * n_neurons
    names = list(VARIED_SIZES)
    item_cultures = rng.permutation(np.repeat(np.arange(len(names)), list(VARIED_SIZES.values())))
    n_items = len(item_cultures)
    base = rng.beta(0.8, 5.0, size=cells)
    fire_boost = rng.random((len(names), cells)) < 0.06
    magnitude_boost = rng.random((len(names), cells)) < 0.08
    tokens = rng.integers(20, 91, size=n_items)
    correct = np.array(
        [rng.random() < VARIED_CORRECT[names[c]] for c in item_cultures], dtype=np.int8
    )
    correct[np.flatnonzero(item_cultures == names.index("ko"))[:4]] = 1
    correct[np.flatnonzero(item_cultures == names.index("ko"))[4:]] = 0  # 4 < 5: not resampled
    path = tmp_path_factory.mktemp("stability") / "varied.zarr"
    store = create_or_resume(
        path, item_ids=[f"it{i:03d}" for i in range(n_items)],
        cultures=[names[c] for c in item_cultures], n_layers=n_layers, n_neurons=n_neurons,
        chunk_items=16, attrs={"model": "varied"},
    )  # fmt: skip
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        c = item_cultures[rows]
        prob = np.minimum(base[None, :] + 0.35 * fire_boost[c], 1.0)
        fire = rng.binomial(tokens[rows][:, None], prob)
        eighths = rng.integers(1, 12, size=fire.shape) + 24 * magnitude_boost[c]
        pos = fire * eighths / 8.0
        shape = (len(c), n_layers, n_neurons)
        store.write_chunk(
            chunk, fire.reshape(shape), pos.reshape(shape), tokens[rows], correct[rows]
        )
    return open_store(path)


def test_full_reselection_of_every_selector_equals_the_select_stage_masks(varied_store, tmp_path):
    result = stability(varied_store, VARIED_SELECTORS, ratio=0.05, n_resamples=3,
                       null_resamples=1, seed=0)  # fmt: skip
    assert sorted(result.full) == sorted(VARIED_SELECTORS)
    assert result.cultures == sorted(VARIED_SIZES)
    for name, params in VARIED_SELECTORS.items():
        out = tmp_path / f"{name}.zarr"
        select_stage(varied_store.path, name, 0.05, out, tmp_path / f"{name}.json",
                     params=params)  # fmt: skip
        selected, cultures, _ = read_masks(out)
        assert cultures == result.cultures, name
        assert selected[cultures.index("sw")].sum() == 0  # unscorable: empty on both sides
        np.testing.assert_array_equal(result.full[name], selected, err_msg=name)
    # The selectors really differ here, so each comparison checks its own statistics.
    full = {name: result.full[name].tobytes() for name in VARIED_SELECTORS}
    assert len(set(full.values())) == len(full)
    # The thin culture keeps its full statistics in every bootstrap and is flagged.
    boot = result.summary[(result.summary["kind"] == BOOTSTRAP)].set_index(["selector", "culture"])
    assert boot.loc[("mad", "ko"), "flag"] == "only 4 used items: not resampled"
    assert boot.loc[("mad", "sw"), "flag"] == "no used items: empty selection"


def _plan(cultures: list[str], items_used: list[int], resampled: list[bool]) -> ResamplePlan:
    return ResamplePlan(
        cultures, [FULL], [0], np.zeros((1, 1), dtype=int), np.ones((1, 1), dtype=np.float32),
        np.array(resampled), np.array(items_used),
    )  # fmt: skip


def test_summary_interval_is_the_central_95_percent_of_the_replicates():
    # 201 evenly spaced Jaccards (shuffled, with two empty-selection NaNs): the 2.5th and 97.5th
    # percentiles are exactly 0.025 and 0.975, the 5th and 95th would be 0.05 and 0.95.
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.permutation(np.linspace(0.0, 1.0, 201)), [np.nan, np.nan]])
    jaccards = pd.DataFrame(
        {"selector": "mad", "culture": "b", "kind": BOOTSTRAP, "replicate": np.arange(203),
         "jaccard": values}
    )  # fmt: skip
    thin = jaccards.iloc[:10].assign(culture="a")
    summary = summarize(pd.concat([jaccards, thin]), _plan(["a", "b"], [3, 50], [False, True]))
    row = summary.set_index("culture").loc["b"]
    assert row["lo"] == pytest.approx(0.025) and row["hi"] == pytest.approx(0.975)
    assert row["mean"] == pytest.approx(0.5)
    assert row["n_replicates"] == 203 and row["items_used"] == 50 and row["flag"] == ""
    thin_row = summary.set_index("culture").loc["a"]
    assert np.isnan(thin_row["hi"]) and thin_row["flag"] == "only 3 used items: not resampled"
