"""Resumable, splittable ablate jobs: a job stopped half way answers only its missing chunks on the
rerun, shards + gather equal one job, and every way equals one uninterrupted `answer_masked`."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from culture_neurons.ablation import work
from culture_neurons.ablation.chunks import (
    DEFAULT_CHUNK_ITEMS,
    chunk_bounds,
    chunk_size,
    shard_chunks,
)
from culture_neurons.ablation.partial import partial_dir
from culture_neurons.data.split import split_rows
from culture_neurons.errors import InputError
from culture_neurons.inference.engine import answer_masked, items_per_window
from culture_neurons.selection.masks import write_masks
from culture_neurons.stages.ablate import ablate_stage
from culture_neurons.stages.ablate_shard import ablate_shard_stage
from tests.cvqa_fixture import prepare_fixture

pytest_plugins = ["tests.tiny_models"]

BATCH = 2
TOKENS = 3
RATIOS = [0.05, 0.2]  # the headline 0.2 and one swept ratio: 2 x 3 cultures = 6 masks


class Stopped(RuntimeError):
    """What a walltime kill is to the stage: it ends between two chunks' answers."""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("resume")
    out = prepare_fixture(root / "cvqa")
    items = pd.read_parquet(out / "items.parquet")
    cultures = sorted(items["culture"].unique())
    from culture_neurons.models import load_adapter

    spec = {"family": "qwen2_5_vl", "path": str(tiny_checkpoint("qwen2_5_vl")), "dtype": "float32"}
    adapter = load_adapter({**spec, "device_map": "cpu"})
    shape = (len(cultures), adapter.n_layers, adapter.n_neurons)
    rng = np.random.default_rng(1)
    ranks = np.stack([rng.permutation(shape[1] * shape[2]) for _ in cultures])
    ranks = ranks.reshape(shape).astype(np.int32)
    from culture_neurons.selection.masks import masks_at_ratio

    write_masks(root / "m.zarr", masks_at_ratio(ranks, 0.2), cultures, {"ratio": 0.2}, ranks=ranks)
    return {"root": root, "items": out / "items.parquet", "spec": spec, "masks": root / "m.zarr",
            "adapter": adapter, "ranks": ranks, "cultures": cultures}  # fmt: skip


def run(setup, out_dir: Path, **overrides):
    kwargs = {"ratios": RATIOS, "batch_size": BATCH, "max_new_tokens": TOKENS, "chunk_items": 4}
    return ablate_stage(setup["items"], setup["spec"], setup["masks"], out_dir, **{
        **kwargs, **overrides})  # fmt: skip


def tables_of(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes() for p in sorted(out_dir.rglob("*.parquet"))}


@pytest.fixture(scope="module")
def uninterrupted(setup, one_torch_thread):
    out = setup["root"] / "uninterrupted"
    run(setup, out)
    return tables_of(out)


def count_chunks(monkeypatch, stop_after: int | None = None) -> list[int]:
    """Count the stage's `answer_masked` calls (one per chunk); raise `Stopped` after
    ``stop_after`` of them, as a kill between chunks would."""
    calls: list[int] = []

    def counted(adapter, rows, *args, **kwargs):
        if stop_after is not None and len(calls) == stop_after:
            raise Stopped
        calls.append(len(rows))
        return answer_masked(adapter, rows, *args, **kwargs)

    monkeypatch.setattr(work, "answer_masked", counted)
    return calls


def test_chunk_arithmetic():
    assert chunk_size(240, 20) == 240 and chunk_size(5, 4) == 8 and chunk_size(1, 7) == 7
    bounds = chunk_bounds(17, 8)
    assert bounds == [(0, 8), (8, 16), (16, 17)] and chunk_bounds(0, 8) == []
    for shards in (1, 2, 3, 7):
        every = sorted(c for k in range(shards) for c in shard_chunks(22, k, shards))
        assert every == list(range(22))
    with pytest.raises(ValueError, match="shard 2 of 2"):
        shard_chunks(5, 2, 2)
    # The paper's windows (25 masks, batch ceilings 8..64) divide the default: no rounding.
    for largest in (8, 16, 32, 64):
        assert DEFAULT_CHUNK_ITEMS % items_per_window(25, largest) == 0


def test_schema_default_is_the_cli_default():
    schema = yaml.safe_load(Path("workflow/schemas/config.schema.yaml").read_text())
    entry = schema["properties"]["models"]["additionalProperties"]["properties"]
    assert entry["ablate_chunk_items"]["default"] == DEFAULT_CHUNK_ITEMS
    assert entry["ablate_shards"]["default"] == 1


def test_chunked_tables_equal_one_uninterrupted_answer_masked(setup, uninterrupted):
    """Today's code path: one `answer_masked` over all rows and masks, tables written as before."""
    from culture_neurons.selection.masks import masks_at_ratio

    items = pd.read_parquet(setup["items"])
    evaluation = split_rows(items, "evaluation")
    # 16 items in chunks of 4 = 4 chunks of 2 windows each (6 masks, batch 2: windows of 2).
    assert items_per_window(6, BATCH) == 2 and len(evaluation) == 16
    assert len(uninterrupted) == 6
    for ratio in RATIOS:
        keep = torch.from_numpy(np.where(masks_at_ratio(setup["ranks"], ratio), 0.0, 1.0))
        tables = answer_masked(
            setup["adapter"], evaluation, keep.float(), batch_size=BATCH, max_new_tokens=TOKENS
        )
        for source, table in zip(setup["cultures"], tables, strict=True):
            table.insert(0, "source", source)
            table.insert(1, "ratio", ratio)
            table.insert(2, "intervention", "zero")
            # Which model answered: a local folder, so no hub commit.
            table.attrs["model"] = {
                "model_path": setup["spec"]["path"], "revision": None, "commit": None,
            }  # fmt: skip
            name = f"{source}.parquet" if ratio == 0.2 else f"r{ratio:g}/{source}.parquet"
            buffer = io.BytesIO()
            table.to_parquet(buffer, index=False)
            found = pd.read_parquet(io.BytesIO(uninterrupted[name]))
            pd.testing.assert_frame_equal(found, table)
            assert uninterrupted[name] == buffer.getvalue(), name


def test_a_stopped_job_reruns_only_its_missing_chunks(
    setup, uninterrupted, monkeypatch, caplog, tmp_path
):
    out = tmp_path / "ablations" / "sel"
    calls = count_chunks(monkeypatch, stop_after=2)
    with pytest.raises(Stopped):
        run(setup, out)
    assert calls == [4, 4] and not out.exists()
    chunks = sorted(partial_dir(out).glob("work-*/chunk-*.parquet"))
    assert [p.name for p in chunks] == ["chunk-00000.parquet", "chunk-00001.parquet"]
    calls = count_chunks(monkeypatch)
    with caplog.at_level(logging.INFO, logger="culture_neurons"):
        run(setup, out)
    assert calls == [4, 4], "the rerun answers chunks 2 and 3 only"
    assert "resuming" in caplog.text and "2 of 4 chunks done" in caplog.text
    assert tables_of(out) == uninterrupted
    assert not partial_dir(out).exists()


def test_other_work_starts_over_and_says_why(setup, monkeypatch, caplog, tmp_path):
    out = tmp_path / "sel"
    count_chunks(monkeypatch, stop_after=1)
    with pytest.raises(Stopped):
        run(setup, out, max_new_tokens=2)
    calls = count_chunks(monkeypatch)
    with caplog.at_level(logging.INFO, logger="culture_neurons"):
        run(setup, out)
    assert calls == [4] * 4, "nothing of the other work is reused"
    assert "starting over" in caplog.text and "differs in: max_new_tokens" in caplog.text
    # A retry with a halved batch keeps the chunks (windows of 1 divide 4) and resumes.
    count_chunks(monkeypatch, stop_after=3)
    with pytest.raises(Stopped):
        run(setup, tmp_path / "retry")
    calls = count_chunks(monkeypatch)
    run(setup, tmp_path / "retry", batch_size=1)
    assert calls == [4]


def test_shards_and_gather_equal_one_job(setup, uninterrupted, monkeypatch, tmp_path):
    out = tmp_path / "sel"
    common = {"ratios": RATIOS, "batch_size": BATCH, "max_new_tokens": TOKENS, "chunk_items": 4}
    args = (setup["items"], setup["spec"], setup["masks"], out)
    done = partial_dir(out) / "shard1.done"
    calls = count_chunks(monkeypatch)
    assert ablate_shard_stage(*args, shard=1, shards=2, done=done, **common) == [1, 3]
    assert done.exists() and calls == [4, 4]

    def no_model(*args, **kwargs):
        raise AssertionError("gathering loads no model")

    monkeypatch.setattr(work, "load_adapter_for_masks", no_model)
    with pytest.raises(InputError, match=r"chunk\(s\) \[0, 2\] missing.*rerun its ablate_shard"):
        run(setup, out, gather=True)
    assert not out.exists() and partial_dir(out).exists(), "a failed gather keeps the chunks"
    monkeypatch.undo()
    assert ablate_shard_stage(*args, shard=0, shards=2, done=partial_dir(out) / "s0", **common)
    monkeypatch.setattr(work, "load_adapter_for_masks", no_model)
    run(setup, out, gather=True)
    assert tables_of(out) == uninterrupted
    assert not partial_dir(out).exists()
    with pytest.raises(InputError, match="need 0 <= shard < shards"):
        ablate_shard_stage(*args, shard=2, shards=2, done=done, **common)


def test_split_ablate_jobs_plan_shards_and_a_gpu_less_gather(tmp_path):
    import os
    import re
    import subprocess

    def plan(*configs: str) -> str:
        result = subprocess.run(
            ["snakemake", "-n", "-p", "--forceall", "--cores", "1", "--configfile", *configs],
            env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    def counts(out: str) -> dict[str, int]:
        stats = out.split("Job stats:", 1)[1].split("\n\n", 1)[0]
        return {r: int(n) for r, n in re.findall(r"^(\w+)\s+(\d+)$", stats, flags=re.M)}

    def jobs(out: str, rule: str) -> list[str]:
        return [j for j in out.split("\n\n") if re.search(f"^rule {rule}:", j, flags=re.M)]

    overlay = tmp_path / "shards.yaml"
    model = {"ablate_shards": 2, "gpus": 1, "device_map": "cpu"}
    overlay.write_text(yaml.safe_dump({"models": {"demo-qwen25vl-tiny": model}}))
    one, two = plan("config.yaml"), plan("config.yaml", str(overlay))
    assert "ablate_shard" not in counts(one) and "ablate_shard_intervention" not in counts(one)
    assert "--gather" not in one
    split = counts(two)
    assert split["ablate"] == counts(one)["ablate"] and split["ablate_shard"] == 2 * split["ablate"]
    assert split["ablate_shard_intervention"] == 2 * split["ablate_intervention"]
    lap = [j for j in jobs(two, "ablate") if "selector=lap\n" in j]
    assert len(lap) == 1 and "--gather" in lap[0] and "gpu=0" in lap[0]
    assert "ablations/lap.partial/shard0.done" in lap[0] and "lap.partial/shard1.done" in lap[0]
    shards = [j for j in jobs(two, "ablate_shard") if "selector=lap," in j]
    assert sorted(re.search(r"--shard (\d) --shards 2", j).group(1) for j in shards) == ["0", "1"]
    assert all("gpu=1" in j and "--out-dir results/demo-qwen25vl-tiny/ablations/lap " in j
               for j in shards)  # fmt: skip
    scale = jobs(two, "ablate_shard_intervention")[0]
    assert "/interventions/" in scale and ".partial/shard" in scale
