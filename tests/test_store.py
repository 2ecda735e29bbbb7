"""The activation store: chunked writes, resume after a kill, refusal to mix inputs, lossless
compression and its size; mask stores of the layout before labelled coordinates still read."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from culture_neurons.errors import InputError
from culture_neurons.record import store as store_module
from culture_neurons.record.store import (
    MAX_COUNT,
    StoreMismatchError,
    create_or_resume,
    identification_means,
    neuron_chunks,
    open_store,
    store_bytes_per_item_neuron,
)
from culture_neurons.selection.masks import read_masks

ITEMS = [f"item{i}" for i in range(10)]
CULTURES = ["A", "B"] * 5
ATTRS = {"model": "tiny", "dataset_fingerprint": "abc", "token_scope": "all"}


def fake_chunk(store, chunk):
    rows = store.chunk_slice(chunk)
    n = rows.stop - rows.start
    rng = np.random.default_rng(chunk)
    return (
        rng.integers(0, 300, size=(n, 2, 8)),
        rng.random((n, 2, 8)).astype(np.float32),
        rng.integers(1, 300, size=n),
        rng.integers(0, 2, size=n),
    )


def make(path):
    return create_or_resume(
        path, item_ids=ITEMS, cultures=CULTURES, n_layers=2, n_neurons=8, chunk_items=4,
        attrs=ATTRS,
    )  # fmt: skip


def fake_act_sum(chunk):
    return np.random.default_rng(100 + chunk).normal(size=(2, 8))


# Replies as a model writes them: a letter, a sentence, nothing, another script; and the option
# extracted from each (-1: none), so every chunk holds answers of different lengths.
REPLIES = ("B", "The answer is C: rice with beans.", "", "東京です。", "D) The lantern festival")


def fake_answers(store, chunk):
    rows = store.chunk_slice(chunk)
    replies = [REPLIES[(i + 2 * chunk) % len(REPLIES)] for i in range(rows.start, rows.stop)]
    choices = [{"": -1, "B": 1, "T": 2, "東": -1, "D": 3}[r[:1]] for r in replies]
    return {"answers": replies, "choices": np.asarray(choices)}


def fill(store, chunks):
    for chunk in chunks:
        store.write_chunk(
            chunk, *fake_chunk(store, chunk), **fake_answers(store, chunk),
            act_sum=fake_act_sum(chunk),
        )  # fmt: skip


def arrays(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in group.array_keys()}, dict(group.attrs)


def test_resumed_store_equals_uninterrupted(tmp_path):
    whole = make(tmp_path / "whole.zarr")
    assert whole.n_chunks == 3 and whole.chunk_slice(2) == slice(8, 10)
    fill(whole, whole.pending_chunks())
    assert whole.complete

    killed = make(tmp_path / "killed.zarr")
    fill(killed, [0])
    # A kill between a chunk's data and its flag: the data is there, the flag is not.
    rows = killed.chunk_slice(1)
    killed.group["fire_count"][rows] = 7
    resumed = make(tmp_path / "killed.zarr")
    assert resumed.pending_chunks() == [1, 2]
    fill(resumed, resumed.pending_chunks())

    (a, attrs_a), (b, attrs_b) = arrays(tmp_path / "whole.zarr"), arrays(tmp_path / "killed.zarr")
    assert attrs_a == attrs_b
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert open_store(tmp_path / "whole.zarr").complete


def test_store_refuses_other_inputs_and_incomplete_reads(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, [0])
    with pytest.raises(StoreMismatchError, match="delete it"):
        create_or_resume(
            tmp_path / "s.zarr", item_ids=ITEMS, cultures=CULTURES, n_layers=2, n_neurons=8,
            chunk_items=4, attrs={**ATTRS, "dataset_fingerprint": "other"},
        )  # fmt: skip
    with pytest.raises(ValueError, match="incomplete"):
        open_store(tmp_path / "s.zarr")


def test_store_schema_is_xarray_friendly(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, store.pending_chunks())
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["fire_count"].metadata.dimension_names == ("item", "layer", "neuron")
    assert group["fire_count"].dtype == np.uint16
    assert list(group["item_id"][:]) == ITEMS
    assert group.attrs["model"] == "tiny"
    # xarray's conventions: index arrays named like their dimension, per-item labels declared
    # as coordinates by the data arrays (tests/test_xarray_coords.py opens it with xarray).
    assert list(group["layer"][:]) == [0, 1] and list(group["neuron"][:]) == list(range(8))
    for name in ("fire_count", "pos_sum", "tokens", "correct", "choice", "answer"):
        assert group[name].attrs["coordinates"] == "item_id culture", name
    assert "coordinates" not in group["chunk_done"].attrs


def test_masks_written_before_labelled_coordinates_still_read(tmp_path):
    # The old layout: names in a "cultures" array, no culture/layer/neuron coordinate arrays.
    selected = np.zeros((2, 2, 3), dtype=bool)
    selected[1, 0, 2] = True
    group = zarr.open_group(str(tmp_path / "old.zarr"), mode="w", zarr_format=3)
    group.create_array(
        "selected", data=selected, chunks=(1, 2, 3), dimension_names=["culture", "layer", "neuron"]
    )
    names = group.create_array("cultures", shape=(2,), dtype=str, dimension_names=["culture"])
    names[:] = np.asarray(["X", "Y"], dtype=str)
    group.attrs.update({"selector": "lap"})
    read, cultures, attrs = read_masks(tmp_path / "old.zarr")
    np.testing.assert_array_equal(read, selected)
    assert cultures == ["X", "Y"] and attrs == {"selector": "lap"}


def test_counts_beyond_uint16_are_refused(tmp_path):
    store = make(tmp_path / "s.zarr")
    count, total, tokens, correct = fake_chunk(store, 0)
    count[0, 0, 0] = 70_000
    with pytest.raises(ValueError, match="exceeds"):
        store.write_chunk(0, count, total, tokens, correct)


def test_counts_and_sums_read_back_bit_for_bit(tmp_path):
    store = make(tmp_path / "s.zarr")
    rng = np.random.default_rng(1)
    shape = (store.n_items, 2, 8)
    count = rng.integers(0, MAX_COUNT + 1, size=shape)
    count[0, 0, :2] = [0, MAX_COUNT]
    # Every float32 bit pattern is fair game: random bits, plus zero, subnormals and extremes.
    total = rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)
    total[0, 1, :5] = [0.0, 1e-45, np.finfo(np.float32).max, np.inf, 1.0 + 2**-23]
    for chunk in range(store.n_chunks):
        rows = store.chunk_slice(chunk)
        n = rows.stop - rows.start
        store.write_chunk(chunk, count[rows], total[rows], np.full(n, 9), np.ones(n))
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["fire_count"].dtype == np.uint16 and group["pos_sum"].dtype == np.float32
    np.testing.assert_array_equal(group["fire_count"][:], count)
    np.testing.assert_array_equal(group["pos_sum"][:].view(np.uint32), total.view(np.uint32))
    codecs = [c["name"] for c in group["pos_sum"].metadata.to_dict()["codecs"]]
    assert codecs == ["transpose", "bytes", "blosc"]


def test_large_models_chunk_over_layers_and_still_resume(tmp_path, monkeypatch):
    # The demo keeps one zarr chunk per store chunk; a 7B model's is split evenly over layers.
    assert neuron_chunks(64, 4, 512) == (64, 4, 512)
    assert neuron_chunks(32, 28, 18944) == (32, 6, 18944)
    assert neuron_chunks(2**20, 2, 18944) == (2**20, 1, 4)
    # 4 items x 2 layers x 8 neurons of float32 is 256 bytes: a cap of 150 gives one layer.
    monkeypatch.setattr(store_module, "MAX_CHUNK_BYTES", 150)
    whole = make(tmp_path / "whole.zarr")
    assert whole.group["pos_sum"].chunks == (4, 1, 8)
    fill(whole, whole.pending_chunks())
    killed = make(tmp_path / "killed.zarr")
    fill(killed, [0])
    killed.group["pos_sum"][killed.chunk_slice(1)] = 7.0
    resumed = make(tmp_path / "killed.zarr")
    fill(resumed, resumed.pending_chunks())
    (a, _), (b, _) = arrays(tmp_path / "whole.zarr"), arrays(tmp_path / "killed.zarr")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(
        a["fire_count"], np.concatenate([fake_chunk(whole, k)[0] for k in range(3)])
    )


def test_store_bytes_per_item_neuron_counts_every_file(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, store.pending_chunks())
    (tmp_path / "s.zarr" / ".snakemake_timestamp").write_text("")
    files = [f for f in (tmp_path / "s.zarr").rglob("*") if f.is_file()]
    expected = sum(f.stat().st_size for f in files) / (len(ITEMS) * 2 * 8)
    assert store_bytes_per_item_neuron(tmp_path / "s.zarr") == pytest.approx(expected)


def realistic_statistics(n_items=128, n_layers=2, n_neurons=512):
    """Firing counts like a model's (a per-neuron rate over 60-120 valid tokens) and float32
    sums of as many positive outputs (a per-neuron scale), zero where nothing fired."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(60, 120, size=n_items)
    rate = rng.beta(2.0, 2.0, size=(n_layers, n_neurons))
    scale = rng.lognormal(-1.0, 1.0, size=(n_layers, n_neurons))
    count = rng.binomial(tokens[:, None, None], rate)
    total = (rng.gamma(np.maximum(count, 1), scale) * (count > 0)).astype(np.float32)
    return count, total, tokens


def test_store_is_smaller_than_plain_zstd_on_realistic_statistics(tmp_path):
    count, total, tokens = realistic_statistics()
    n_items, n_layers, n_neurons = count.shape
    store = create_or_resume(
        tmp_path / "s.zarr", item_ids=[f"i{k}" for k in range(n_items)],
        cultures=["A"] * n_items, n_layers=n_layers, n_neurons=n_neurons, chunk_items=32,
        attrs=ATTRS,
    )  # fmt: skip
    for chunk in store.pending_chunks():
        rows = store.chunk_slice(chunk)
        store.write_chunk(chunk, count[rows], total[rows], tokens[rows], np.ones(len(tokens[rows])))
    # The same two arrays alone under zarr's default codec (zstd), as the store once was.
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3)
    for name, values in (("fire_count", count.astype(np.uint16)), ("pos_sum", total)):
        plain.create_array(name, data=values, chunks=(32, n_layers, n_neurons))
    new_size = store_bytes_per_item_neuron(tmp_path / "s.zarr")
    plain_size = store_bytes_per_item_neuron(tmp_path / "plain.zarr")
    # About 4.05 against 4.6: the sums' float32 mantissas are nearly incompressible either way.
    assert new_size < 4.3 < plain_size


def test_identification_means_are_the_summed_outputs_over_all_valid_tokens(tmp_path):
    store = make(tmp_path / "s.zarr")
    fill(store, store.pending_chunks())
    opened = open_store(tmp_path / "s.zarr")
    tokens = opened.group["tokens"][:].sum()
    expected = sum(fake_act_sum(chunk) for chunk in range(3)) / tokens
    np.testing.assert_allclose(identification_means(opened), expected, rtol=1e-12)


def test_a_store_without_act_sum_is_refused_for_the_mean_not_zero_filled(tmp_path):
    store = make(tmp_path / "gap.zarr")
    fill(store, [0, 2])
    store.write_chunk(1, *fake_chunk(store, 1))  # a writer that did not pass act_sum
    with pytest.raises(InputError, match=r"chunks \[1\] written without act_sum.*rerun"):
        identification_means(open_store(tmp_path / "gap.zarr"))

    old = make(tmp_path / "old.zarr")
    fill(old, old.pending_chunks())
    del zarr.open_group(str(tmp_path / "old.zarr"), mode="r+")["act_sum"]  # an older layout
    with pytest.raises(InputError, match=r"old.zarr \(model 'tiny'\) predates the act_sum.*"
                       "delete the store and rerun record"):  # fmt: skip
        identification_means(open_store(tmp_path / "old.zarr"))


def test_a_partial_store_of_the_layout_before_act_sum_is_not_resumed(tmp_path):
    store = make(tmp_path / "p.zarr")
    fill(store, [0])
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="r+")
    del group.attrs["statistics"]
    with pytest.raises(StoreMismatchError, match="delete it to start over"):
        make(tmp_path / "p.zarr")


# ------------------------------------------------------------------ damaged stores (checksums)
def complete_store(path):
    store = make(path)
    fill(store, store.pending_chunks())
    return path


def chunk_file(path, array, chunk):
    """The file of one zarr chunk of ``array`` (v3's default "c/" key encoding): ``c/k`` for a
    1-d array, ``c/k/0/0`` for the 3-d ones, whose chunks span every layer and neuron here."""
    one_d = path / array / "c" / str(chunk)
    return one_d if one_d.is_file() else one_d / "0" / "0"


def flip_byte(file):
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    file.write_bytes(bytes(data))


def assert_same_store(a_path, b_path):
    (a, attrs_a), (b, attrs_b) = arrays(a_path), arrays(b_path)
    assert attrs_a == attrs_b and a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete"])
def test_a_damaged_neuron_chunk_is_refused_on_read_and_recomputed_on_resume(tmp_path, damage):
    from culture_neurons.record.aggregate import aggregate
    from culture_neurons.record.store import CorruptStoreError

    whole = complete_store(tmp_path / "whole.zarr")
    damaged = complete_store(tmp_path / "damaged.zarr")
    file = chunk_file(damaged, "fire_count", 1)
    if damage == "flip a byte":
        flip_byte(file)
    elif damage == "truncate":
        file.write_bytes(file.read_bytes()[:10])
    else:
        file.unlink()  # zarr alone would read the chunk back as zeros
    store = open_store(damaged)  # the per-item arrays are intact
    with pytest.raises(CorruptStoreError) as err:
        aggregate(store, only_correct=False)
    message = str(err.value)
    assert "chunk 1 (items 4-7)" in message and f"Delete {damaged}" in message
    assert "model 'tiny'" in message
    # A resumed recording rewrites that chunk only, and ends identical to the undamaged store.
    resumed = make(damaged)
    assert resumed.pending_chunks() == [1]
    fill(resumed, resumed.pending_chunks())
    assert_same_store(whole, damaged)


def test_a_missing_chunk_done_entry_means_recompute_never_read(tmp_path):
    path = complete_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(path), mode="r+")
    group["chunk_done"][1] = False
    with pytest.raises(InputError, match=r"chunk\(s\) \[1\] not flagged as written"):
        open_store(path)
    assert make(path).pending_chunks() == [1]
    chunk_file(path, "chunk_done", 0).unlink()  # the flags file itself is gone: all unflagged
    with pytest.raises(InputError, match=r"chunk\(s\) \[0, 1, 2\]"):
        open_store(path)
    assert make(path).pending_chunks() == [0, 1, 2]


def test_damaged_item_arrays_act_sums_and_checksums_are_named(tmp_path):
    from culture_neurons.record.store import CorruptStoreError

    path = complete_store(tmp_path / "items.zarr")
    chunk_file(path, "tokens", 2).unlink()
    with pytest.raises(CorruptStoreError, match=r"chunk 2 \(items 8-9\) items data differ"):
        open_store(path)

    path = complete_store(tmp_path / "act.zarr")
    chunk_file(path, "act_sum", 0).unlink()
    with pytest.raises(CorruptStoreError, match="chunk 0 .* act_sum data differ"):
        identification_means(open_store(path))

    path = complete_store(tmp_path / "digest.zarr")
    chunk_file(path, "chunk_digest", 0).unlink()
    with pytest.raises(CorruptStoreError, match="chunk 0 .* has no checksum"):
        open_store(path)
    assert make(path).pending_chunks() == [0, 1, 2]  # nothing unverifiable is kept


# The arrays of each checksummed part other than the neuron statistics (those are damaged above).
ITEM_AND_ACT_SUM_ARRAYS = ("tokens", "correct", "choice", "answer", "act_sum")


def damage(path, array, chunk, how):
    """Damage chunk ``chunk`` of ``array``: delete its file (zarr reads back fill values) or
    overwrite one value through zarr (a valid file holding a different value)."""
    if how == "delete":
        chunk_file(path, array, chunk).unlink()
        return
    group = zarr.open_group(str(path), mode="r+")
    if array == "act_sum":
        group[array][chunk, 0, 0] = group[array][chunk, 0, 0] + 1.0
        return
    row = group.attrs["chunk_items"] * chunk + 1
    old = group[array][row]
    group[array][row] = (old + "!") if array == "answer" else (0 if old != 0 else 1)


@pytest.mark.parametrize("how", ["delete", "overwrite"])
@pytest.mark.parametrize("array", ITEM_AND_ACT_SUM_ARRAYS)
def test_damage_to_any_part_is_refused_on_read_and_recomputed_on_resume(tmp_path, array, how):
    """Not only the neuron statistics: a changed reply, token count, correctness, extracted option
    or act_sum slab fails the chunk's checksum, a reader refuses it, a resume rewrites it."""
    from culture_neurons.record.store import CorruptStoreError

    whole = complete_store(tmp_path / "whole.zarr")
    damaged = complete_store(tmp_path / "damaged.zarr")
    damage(damaged, array, 1, how)
    part = "act_sum" if array == "act_sum" else "items"
    with pytest.raises(CorruptStoreError, match=rf"chunk 1 \(items 4-7\) {part} data differ"):
        identification_means(open_store(damaged))
    resumed = make(damaged)
    assert resumed.pending_chunks() == [1]
    fill(resumed, resumed.pending_chunks())
    assert_same_store(whole, damaged)
    assert open_store(damaged).complete


def test_the_stored_replies_are_those_written(tmp_path):
    # The fixture's replies differ in length and script, and read back unchanged.
    path = complete_store(tmp_path / "s.zarr")
    group = zarr.open_group(str(path), mode="r")
    store = open_store(path)
    expected = [a for k in range(store.n_chunks) for a in fake_answers(store, k)["answers"]]
    assert list(group["answer"][:]) == expected
    assert len({len(a) for a in expected}) == len(REPLIES)
    assert sorted(set(group["choice"][:].tolist())) == [-1, 1, 2, 3]
