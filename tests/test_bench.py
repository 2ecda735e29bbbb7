"""`culture-neurons bench` on small sizes: every key written, and the figures that are not
timings (answer agreement, prompt lengths, mask sizes) hold. Timings are never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from culture_neurons.benchmark.bench import BenchSizes, run_bench
from culture_neurons.planning.estimate import PAPER_CONFIG, load_config
from culture_neurons.planning.work import ItemCounts, model_jobs

COUNTS = ItemCounts(5178, 5196)  # configs/paper.yaml's dataset.expected_items

pytest_plugins = ["tests.tiny_models"]  # one_torch_thread

KEYS = {
    "device",
    "record_overhead",
    "masked_items_per_s",
    "naive_items_per_s",
    "speedup_vs_naive",
    "hf_best_batch_items_per_s",
    "answer_agreement",
    "draft_acceptance",
    "decoder_forwards_per_answer",
    "engine_no_drafts_items_per_s",
    "engine_drafts_items_per_s",
    "engine_prefill_only_items_per_s",
    "engine_vs_prefill_only",
    "replication_hours",
    "selectors_s",
    "store_bytes_per_item_neuron",
}

SMALL = BenchSizes(
    n_items=3,
    n_masks=2,
    prompt_tokens=(150, 300),
    batch_size=4,
    naive_pairs=6,
    hf_batches=(2, 4),
    max_new_tokens=4,
    record_repeats=1,
    engine_repeats=2,
)


def test_bench_writes_every_figure_and_the_engine_answers_as_generate(
    tmp_path: Path, one_torch_thread: None
) -> None:
    result = run_bench("cpu", tmp_path, sizes=SMALL, selector_shape=(3, 2, 200))

    written = json.loads((tmp_path / "bench.json").read_text())
    assert written.keys() >= KEYS
    assert written["device"].startswith("cpu")
    # float32: the batched multi-mask engine answers exactly as generate() one pair at a time.
    assert written["answer_agreement"] == 1.0 == written["choice_agreement"]
    assert written["naive_items_per_s"] > 0 and written["record_overhead"] > 0
    low, high = SMALL.prompt_tokens
    assert low <= written["sizes"]["prompt_tokens_min"] <= written["sizes"]["prompt_tokens_max"]
    assert written["sizes"]["prompt_tokens_max"] <= high
    neurons = written["model"]["decoder_layers"] * written["model"]["mlp_neurons_per_layer"]
    assert written["sizes"]["neurons_off_per_mask"] == round(0.01 * neurons)
    assert {"rnd", "lap", "lape", "mad", "cas"} <= written["selectors_s"].keys()
    # 1% of 3 x 2 x 200 neurons per culture: the selector ran on the shape it was given.
    assert all(s["selected"] == 3 * 4 for s in written["selectors_s"].values())
    assert written["store_bytes_per_item_neuron"] is None
    assert result["masked_items_per_s"] == written["masked_items_per_s"]
    # Drafts change no answer; each answer needs between 1 decoder pass and the token limit
    # (plus its share of the unmasked drafts), and fewer with drafts than without.
    assert written["drafts_change_no_answer"] is True
    assert 0.0 <= written["draft_acceptance"] <= 1.0
    limit = SMALL.max_new_tokens
    assert 1 <= written["decoder_forwards_per_answer_no_drafts"] <= limit
    assert written["decoder_forwards_per_answer_drafts"] <= limit * (1 + 1 / SMALL.n_masks)
    # Off CUDA the engine's default is not to draft: its figures are the no-drafts run's.
    assert written["engine_default"] == "no_drafts"
    assert written["masked_items_per_s"] == written["engine_no_drafts_items_per_s"]
    assert (
        written["decoder_forwards_per_answer"] == written["decoder_forwards_per_answer_no_drafts"]
    )
    # Every configuration timed engine_repeats times (the comparison once), the median reported.
    rates = written["engine_rates"]
    configs = ("prefill_only", "no_drafts", "drafts")
    assert [len(rates[k]) for k in configs] == [2, 2, 2]
    assert min(rates["drafts"]) <= written["engine_drafts_items_per_s"] <= max(rates["drafts"])
    # The ratio pairs each repeat's engine run with the prefill-only run beside it.
    paired = [e / p for e, p in zip(rates["no_drafts"], rates["prefill_only"], strict=True)]
    assert written["engine_vs_prefill_only_runs"] == pytest.approx(paired)
    assert written["engine_vs_prefill_only"] == pytest.approx(sum(paired) / 2)
    # The replication: configs/paper.yaml's planned jobs (3 models x 178 masks) at this device's
    # tokens per second, i.e. its answers per second times its mean prompt plus new tokens.
    lengths = written["sizes"]
    assert lengths["prompt_tokens_min"] <= lengths["prompt_tokens_mean"]
    assert lengths["prompt_tokens_mean"] <= lengths["prompt_tokens_max"]
    rate = written["masked_items_per_s"] * (lengths["prompt_tokens_mean"] + SMALL.max_new_tokens)
    assert written["tokens_per_s"] == pytest.approx(rate)
    plan = written["replication"]
    assert (plan["models"], plan["masks_per_model"]) == (3, 178)
    assert plan["masked_answers"] == 3 * 178 * 5196
    paper = load_config(PAPER_CONFIG)
    tokens = sum(job.tokens for m in paper["models"] for job in model_jobs(paper, m, COUNTS, 25))
    assert written["replication_hours"] * 3600 * rate == pytest.approx(tokens)

    markdown = (tmp_path / "bench.md").read_text()
    for key in ("masked_items_per_s", "record_overhead", "selectors_s.cas", "3x2x200",
                "draft_acceptance", "decoder_forwards_per_answer", "engine_vs_prefill_only",
                "replication_hours"):  # fmt: skip
        assert key in markdown
