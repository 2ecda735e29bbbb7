"""Model inputs stream: loaded ahead in a background thread, a bounded number held at once, so a
model job's memory does not grow with its number of items."""

from __future__ import annotations

import threading
import time
import weakref

import pandas as pd
import pytest
import torch
from PIL import Image

from culture_neurons.data.split import split_rows
from culture_neurons.inference import engine
from culture_neurons.inference.inputs import InputStats, stream
from culture_neurons.models import load_adapter
from culture_neurons.record import recording
from tests.cvqa_fixture import prepare_fixture

DEMO_MODEL = {"family": "qwen2_5_vl", "path": "resources/demo/model", "dtype": "float32",
              "device_map": "cpu"}  # fmt: skip


def test_stream_yields_in_order_and_holds_at_most_ahead_plus_one() -> None:
    started: list[int] = []

    def load(chunk: int) -> int:
        started.append(chunk)
        return chunk * 10

    for ahead in (1, 3):
        started.clear()
        seen = []
        for index, (chunk, loaded) in enumerate(stream(range(12), load, ahead=ahead)):
            assert loaded == chunk * 10
            assert len(started) <= index + ahead + 1  # the chunk in use, plus ``ahead``
            seen.append(chunk)
        assert seen == list(range(12))


def test_stream_raises_a_load_error_at_its_chunk_and_stops_loading() -> None:
    started: list[int] = []

    def load(chunk: int) -> int:
        started.append(chunk)
        if chunk == 3:
            raise ValueError("chunk 3 is broken")
        return chunk

    seen = []
    with pytest.raises(ValueError, match="chunk 3 is broken"):
        for chunk, _ in stream(range(10), load):
            seen.append(chunk)
    assert seen == [0, 1, 2]
    assert max(started) <= 4


def test_a_consumer_that_stops_early_leaves_no_loading_behind() -> None:
    started: list[int] = []
    loaded = stream(range(100), lambda chunk: started.append(chunk) or chunk)
    for chunk, _ in loaded:
        if chunk == 2:
            break
    loaded.close()
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count <= 4
    assert not [t for t in threading.enumerate() if t.name.startswith("inputs")]


def test_loading_overlaps_the_consumer() -> None:
    """The model waits for the first chunk only: later ones load while it answers."""
    stats = InputStats()

    def load(chunk: int) -> int:
        time.sleep(0.04)
        return chunk

    start = time.perf_counter()
    for _ in stream(range(10), load, stats=stats, size=lambda chunk: 2):
        time.sleep(0.06)  # the model's work
    elapsed = time.perf_counter() - start
    assert elapsed < 0.85, elapsed  # one after the other: 10 x (0.04 + 0.06) = 1.0 s
    assert stats.items == 20
    assert stats.load_s >= 0.35
    assert stats.wait_s < 0.5 * stats.load_s, stats


# -- the engine and the recording hold a bounded number of images -------------------------------


@pytest.fixture(scope="module")
def demo_adapter():
    return load_adapter(DEMO_MODEL)


@pytest.fixture(scope="module")
def fixture_rows(tmp_path_factory) -> pd.DataFrame:
    out = prepare_fixture(tmp_path_factory.mktemp("cvqa"))
    items = pd.read_parquet(out / "items.parquet")
    return pd.concat([split_rows(items, "evaluation"), split_rows(items, "identification")])


class LiveImages:
    """Stands in for `load_image`: counts the decoded images still alive (not yet freed)."""

    def __init__(self) -> None:
        self.refs: list[weakref.ref] = []
        self.peak = 0
        self.calls = 0

    def load(self, source: str, row: int, bound=None) -> Image.Image:
        self.calls += 1
        image = Image.new("RGB", (16 + row % 5, 12), (row * 9 % 256, 40, 90))
        self.refs.append(weakref.ref(image))
        return image

    def alive(self) -> int:
        return sum(ref() is not None for ref in self.refs)

    def watch(self, function):
        def watched(*args, **kwargs):
            self.peak = max(self.peak, self.alive())
            return function(*args, **kwargs)

        return watched


def test_answer_masked_holds_two_windows_of_images(monkeypatch, demo_adapter, fixture_rows):
    live = LiveImages()
    monkeypatch.setattr(engine, "load_image", live.load)
    monkeypatch.setattr(engine, "capture_prompts", live.watch(engine.capture_prompts))
    keep = torch.ones((2, demo_adapter.n_layers, demo_adapter.n_neurons))
    rows = fixture_rows.head(24)
    # 2 masks, windows of 8 rows: 4 items per window, 6 windows.
    tables = engine.answer_masked(
        demo_adapter, rows, keep, batch_size=2, max_new_tokens=2, window_rows=8
    )
    assert [len(t) for t in tables] == [24, 24]
    assert live.calls == 24
    assert 4 <= live.peak <= 2 * 4, live.peak  # this window and the next, never all 24


def test_record_holds_two_batches_of_images(monkeypatch, tmp_path, demo_adapter, fixture_rows):
    live = LiveImages()
    monkeypatch.setattr(engine, "load_image", live.load)
    monkeypatch.setattr(engine, "capture_prompts", live.watch(engine.capture_prompts))
    rows = fixture_rows.head(24)
    store, _ = recording.record_identification(
        demo_adapter, rows, tmp_path / "a.zarr", batch_size=3, chunk_batches=2,
        max_new_tokens=2, attrs={},
    )  # fmt: skip
    assert store is not None and list(store.group["item_id"][:]) == rows["item_id"].tolist()
    assert live.calls == 24
    assert 3 <= live.peak <= 2 * 3, live.peak


def test_record_stopped_early_loads_no_further_chunk(monkeypatch, tmp_path, demo_adapter,
                                                     fixture_rows):  # fmt: skip
    live = LiveImages()
    monkeypatch.setattr(engine, "load_image", live.load)
    rows = fixture_rows.head(24)
    store, _ = recording.record_identification(
        demo_adapter, rows, tmp_path / "a.zarr", batch_size=3, chunk_batches=2,
        max_new_tokens=2, attrs={}, stop_after_chunks=1,
    )  # fmt: skip
    assert store is None
    assert live.calls == 6  # the one chunk's two batches


def test_a_window_decodes_in_file_order_and_answers_in_row_order(monkeypatch) -> None:
    """Photos sharing a row group are read together, whatever order the split gives them."""
    calls = []

    def load(source: str, row: int, bound=None) -> Image.Image:
        calls.append((source, row))
        return Image.new("RGB", (8, 8), (row, 0, 0))

    monkeypatch.setattr(engine, "load_image", load)
    rows = pd.DataFrame(
        {
            "question": ["q"] * 5,
            "options": [["a", "b", "c", "d"]] * 5,
            "image_source": ["b.parquet", "a.parquet", "b.parquet", "a.parquet", "a.parquet"],
            "image_row": [3, 9, 1, 2, 40],
        }
    )
    items = engine.prompt_items(rows)
    assert calls == sorted(calls)
    assert [item["image"].getpixel((0, 0))[0] for item in items] == [3, 9, 1, 2, 40]
