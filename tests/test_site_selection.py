"""Selection and Table 2 at a site other than the decoder MLP: the attention heads' norms become
a relative magnitude that the P-based selectors can contrast, masks say their site, a control
refuses another site's reference, and each site gets its own Table 2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.metrics import self_cross_summary
from culture_neurons.errors import InputError
from culture_neurons.record.aggregate import CultureAggregates, relative_magnitude
from culture_neurons.record.store import create_or_resume, open_store
from culture_neurons.selection import selectors
from culture_neurons.selection.masks import read_masks
from culture_neurons.selection.stability import stability
from culture_neurons.stages.select import select_stage
from culture_neurons.stages.summary import summary_stage

CULTURES = ["AAA", "BBB", "CCC"]


def head_aggregates(mean_norms: np.ndarray, tokens: np.ndarray) -> CultureAggregates:
    """Per-culture sums of heads whose norm is > 0 on every token (fire_count == tokens)."""
    pos = mean_norms * tokens[:, None, None]
    fire = np.broadcast_to(tokens[:, None, None], pos.shape).astype(np.float64)
    n = np.full(len(tokens), 10)
    return CultureAggregates(CULTURES, fire, pos, tokens.astype(float), n, n, True)


def test_relative_magnitude_gives_cas_the_contrast_that_p_of_one_hides():
    # 1 layer x 4 heads; head 2 is twice as strong for BBB as for the others, head 0 slightly
    # stronger for AAA, the others equal across cultures.
    norms = np.array([[[1.2, 1.0, 1.0, 3.0]], [[1.0, 1.0, 2.0, 3.0]], [[1.0, 1.0, 1.0, 3.0]]])
    tokens = np.array([40.0, 55.0, 70.0])
    agg = head_aggregates(norms, tokens)
    # Every P is 1: CAS sees no top culture anywhere.
    assert not selectors.select("cas", agg.fire_count, agg.pos_sum, agg.tokens, ratio=0.25).any()
    rel = relative_magnitude(agg)
    P = rel.fire_count / rel.tokens[:, None, None]
    np.testing.assert_allclose(P[:, 0, 2], [0.5, 1.0, 0.5])
    np.testing.assert_allclose(P.max(axis=0), 1.0)
    np.testing.assert_array_equal(rel.pos_sum, agg.pos_sum)  # M (MAD's input) unchanged
    chosen = selectors.select("cas", rel.fire_count, rel.pos_sum, rel.tokens, ratio=0.25)
    assert chosen[1, 0].tolist() == [False, False, True, False]  # BBB: head 2
    assert chosen[0, 0].tolist() == [True, False, False, False]  # AAA: head 0
    assert not chosen[2].any()  # CCC tops no head


def norm_store(path, *, site: str, statistic: str, n_layers: int = 2, n_units: int = 4):
    """A site store of 3 cultures x 6 items whose culture k has a stronger unit k in layer 0."""
    rng = np.random.default_rng(1)
    cultures = [c for c in CULTURES for _ in range(6)]
    tokens = rng.integers(20, 40, size=len(cultures))
    means = rng.uniform(1.0, 1.1, size=(len(cultures), n_layers, n_units))
    for item, culture in enumerate(cultures):
        means[item, 0, CULTURES.index(culture)] *= 2
    pos = (means * tokens[:, None, None]).astype(np.float32)
    fire = np.broadcast_to(tokens[:, None, None], pos.shape).copy()
    store = create_or_resume(
        path, item_ids=[f"i{k}" for k in range(len(cultures))], cultures=cultures,
        n_layers=n_layers, n_neurons=n_units, chunk_items=4,
        attrs={"model": "toy", "dataset_fingerprint": "fp", "site": site, "statistic": statistic},
    )  # fmt: skip
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        correct = np.ones(rows.stop - rows.start, dtype=np.int8)
        store.write_chunk(chunk, fire[rows], pos[rows], tokens[rows], correct)
    return path


def test_select_on_a_head_store_finds_each_cultures_head_and_says_its_site(tmp_path):
    store = norm_store(tmp_path / "heads.zarr", site="attention_heads", statistic="l2_norm")
    report = select_stage(store, "attention_heads.cas", 1 / 8, tmp_path / "m.zarr",
                          tmp_path / "m.json", params={"method": "cas"})  # fmt: skip
    selected, cultures, attrs = read_masks(tmp_path / "m.zarr")
    assert attrs["site"] == "attention_heads" and attrs["statistic"] == "l2_norm"
    assert report["site"] == "attention_heads"
    assert cultures == CULTURES
    for k in range(len(cultures)):
        assert np.flatnonzero(selected[k].ravel()).tolist() == [k]  # layer 0, head k


def test_a_control_refuses_a_reference_of_another_site(tmp_path):
    heads = norm_store(tmp_path / "heads.zarr", site="attention_heads", statistic="l2_norm")
    vision = norm_store(tmp_path / "vision.zarr", site="vision_mlp", statistic="fires")
    select_stage(vision, "vision_mlp.cas", 1 / 8, tmp_path / "v.zarr", tmp_path / "v.json",
                 params={"method": "cas"})  # fmt: skip
    with pytest.raises(InputError, match="another site"):
        select_stage(heads, "attention_heads.ctl", 1 / 8, tmp_path / "c.zarr", tmp_path / "c.json",
                     params={"method": "rnd_matched", "reference": "vision_mlp.cas", "seed": 0},
                     reference_masks=tmp_path / "v.zarr")  # fmt: skip


def summary_file(path, gaps):
    cultures = [f"C{k}" for k in range(len(gaps))]
    matrix = pd.DataFrame(
        [{"source": s, "target": t, "delta": g if s == t else 0.0, "flip_rate": 5.0}
         for s, g in zip(cultures, gaps, strict=True) for t in cultures]
    )  # fmt: skip
    self_cross_summary(matrix, n_boot=50).to_parquet(path)
    return path


def test_each_site_gets_its_own_table2_and_the_decoders_is_unchanged(tmp_path):
    decoder = {("m", "cas"): summary_file(tmp_path / "a.parquet", [-9.0, -7.0, -8.0])}
    vision = {("m", "vision_mlp.cas"): summary_file(tmp_path / "b.parquet", [-1.0, 0.5, -2.0])}
    for folder in ("alone", "both"):
        (tmp_path / folder).mkdir()
    alone = summary_stage(decoder, tmp_path / "alone" / "table2")
    both = summary_stage({**decoder, **vision}, tmp_path / "both" / "table2")
    names = sorted(p.name for p in both)
    assert names == sorted([p.name for p in alone] + ["table2_vision_mlp.csv",
                            "table2_vision_mlp.md", "table2_vision_mlp.tex"])  # fmt: skip
    for path in alone:
        assert (tmp_path / "both" / path.name).read_bytes() == path.read_bytes()
    site_table = pd.read_csv(tmp_path / "both" / "table2_vision_mlp.csv")
    decoder_table = pd.read_csv(tmp_path / "both" / "table2.csv")
    assert list(site_table.columns) == list(decoder_table.columns)  # CAS, named as the decoder's
    assert not site_table.equals(decoder_table)


def test_stability_resamples_a_head_store_with_the_select_stages_statistic(tmp_path):
    store = norm_store(tmp_path / "heads.zarr", site="attention_heads", statistic="l2_norm")
    select_stage(store, "attention_heads.cas", 1 / 8, tmp_path / "m.zarr", tmp_path / "m.json",
                 params={"method": "cas"})  # fmt: skip
    selected, _, _ = read_masks(tmp_path / "m.zarr")
    result = stability(open_store(store), {"attention_heads.cas": {"method": "cas"}},
                       ratio=1 / 8, n_resamples=4, null_resamples=0, min_items=2)  # fmt: skip
    np.testing.assert_array_equal(result.full["attention_heads.cas"], selected)
    assert selected.any()


def test_dose_response_lines_name_their_site():
    from culture_neurons.analysis.dose_response import line_name

    assert line_name("rnd_matched-s1") == "RND-LM"  # the decoder's, as before
    assert line_name("vision_mlp.rnd-s0") == "RND (vision_mlp)"
    assert line_name("attention_heads.cas") == "CAS (attention_heads)"
