"""`culture-neurons bench`: how fast masked evaluation, recording and selection run here.

Sizes: on the CPU a mid-size random-init Qwen2.5-VL (hidden 512, 8 decoder layers of 2,048 MLP
neurons, a small vision tower, prompts of about 150-300 tokens); on CUDA the Qwen2.5-7B decoder
shape (random init, bf16, text prompts of 600-1,200 tokens). Every figure is measured in one
run against the plain alternative on the same items and masks; `bench.json` holds them and
`bench.md` says what each is.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import transformers
from tqdm import tqdm

from culture_neurons.inference.decoding import (
    DecodeStats,
    GreedySettings,
    capture_prompts,
    greedy_decode,
)
from culture_neurons.inference.engine import answer_masked, prompt_items, reference_answers
from culture_neurons.models import apply_keep_masks, load_adapter, record_activation_stats
from culture_neurons.models.base import ModelAdapter
from culture_neurons.models.compat import OutOfMemoryError
from culture_neurons.planning.estimate import replication
from culture_neurons.planning.work import bench_tokens_per_s

log = logging.getLogger(__name__)

WORDS = [
    "what",
    "which",
    "where",
    "festival",
    "food",
    "dress",
    "dance",
    "city",
    "country",
    "market",
    "temple",
    "river",
    "dish",
    "the",
    "a",
    "of",
    "in",
    "on",
    "is",
    "are",
    "who",
    "picture",
    "shown",
    "traditional",
    "famous",
    "local",
    "people",
    "region",
]


@dataclass(frozen=True)
class BenchSizes:
    n_items: int
    n_masks: int
    prompt_tokens: tuple[int, int]
    batch_size: int
    naive_pairs: int  # (item, mask) pairs the batch-1 generate loop answers
    hf_batches: tuple[int, ...]
    max_new_tokens: int = 20
    off_ratio: float = 0.01  # share of all decoder-MLP neurons each mask turns off
    record_repeats: int = 5
    engine_repeats: int = 1  # timings of each engine configuration, interleaved; the median


CPU_SIZES = BenchSizes(
    n_items=16, n_masks=8, prompt_tokens=(150, 300), batch_size=32, naive_pairs=128,
    hf_batches=(8, 16, 32), engine_repeats=5,
)  # fmt: skip
CUDA_SIZES = BenchSizes(
    n_items=128, n_masks=8, prompt_tokens=(600, 1200), batch_size=128, naive_pairs=48,
    hf_batches=(32, 64, 128),
)  # fmt: skip
SELECTOR_SHAPE = (25, 28, 18944)


# ------------------------------------------------------------------------------------- models
def cpu_model(workdir: Path) -> ModelAdapter:
    from culture_neurons.models.tiny import build_tiny_model

    path = build_tiny_model(
        "qwen2_5_vl",
        workdir / "bench-qwen25vl",
        text_sizes={
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 8,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "max_position_embeddings": 4096,
            "initializer_range": 0.1,
        },
        vision_sizes={"depth": 4, "hidden_size": 256, "intermediate_size": 1024, "num_heads": 4},
        longest_edge=224,
    )
    return load_adapter({"family": "qwen2_5_vl", "path": str(path), "dtype": "float32"})


def cuda_model() -> ModelAdapter:
    """The Qwen2.5-7B decoder shape (random init, bf16) with a word-per-token tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from culture_neurons.models.generic import GenericAdapter

    vocab = 152064
    words = {f"w{i}": i for i in range(vocab - 2)}
    words.update({"<|endoftext|>": vocab - 2, "<|im_end|>": vocab - 1})
    tok = Tokenizer(models.WordLevel(words, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
        num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
        rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False,
        eos_token_id=vocab - 1, pad_token_id=vocab - 2, attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    return GenericAdapter(model, tokenizer)


# -------------------------------------------------------------------------------------- items
def bench_items(adapter: ModelAdapter, sizes: BenchSizes, seed: int = 0) -> pd.DataFrame:
    """Multiple-choice items whose prompts spread over ``sizes.prompt_tokens``."""
    rng = np.random.default_rng(seed)
    low, high = sizes.prompt_tokens
    # Text prompts: one token per word, so the question fills what the template leaves.
    template_tokens = len(
        adapter.tokenizer(adapter.render_prompt("", ["a", "b", "c", "d"]))["input_ids"]
    )
    rows = []
    for i in range(sizes.n_items):
        target = int(rng.integers(low, high + 1))
        options = [" ".join(rng.choice(WORDS, size=2)) for _ in range(4)]
        if adapter.takes_images:
            side = int(rng.choice([112, 168, 224]))
            image = _random_image(side, int(rng.choice([112, 168, 224])), seed + i)
            words = list(rng.choice(WORDS, size=high))
            question = _question_to_fit(adapter, image, words, options, target)
        else:
            image = None
            question = " ".join(
                f"w{t}"
                for t in rng.integers(
                    0,
                    min(150000, len(adapter.tokenizer) - 2),
                    size=max(1, target - template_tokens),
                )
            )
        rows.append(
            {
                "item_id": f"bench-{i}",
                "culture": "BENCH",
                "subset": "bench",
                "label": int(rng.integers(0, 4)),
                "question": question,
                "options": options,
                "image": image,
            }
        )
    return pd.DataFrame(rows)


def _question_to_fit(
    adapter: ModelAdapter, image: Any, words: list[str], options: list[str], target: int
) -> str:
    """As many of ``words`` as bring the whole prompt (template, image tokens) to ``target``
    tokens; a word may take several tokens, so the count is measured, by bisection."""

    def length(n: int) -> int:
        item = {"question": " ".join(words[:n]), "options": options, "image": image}
        return int(adapter.build_batch([item])["attention_mask"].sum())

    low, high = 1, len(words)
    if length(low) > target:
        log.warning("a prompt of %d tokens cannot be made: its image alone takes more", target)
    while low < high:
        middle = (low + high + 1) // 2
        if length(middle) <= target:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _random_image(height: int, width: int, seed: int):
    from culture_neurons.models.tiny import random_image

    return random_image(height, width, seed)


def random_masks(adapter: ModelAdapter, sizes: BenchSizes, seed: int = 0) -> torch.Tensor:
    """``n_masks`` keep masks, each turning off ``off_ratio`` of all decoder-MLP neurons."""
    generator = torch.Generator().manual_seed(seed)
    total = adapter.n_layers * adapter.n_neurons
    off = max(1, round(sizes.off_ratio * total))
    keep = torch.ones(sizes.n_masks, total)
    for m in range(sizes.n_masks):
        keep[m, torch.randperm(total, generator=generator)[:off]] = 0
    return keep.view(sizes.n_masks, adapter.n_layers, adapter.n_neurons)


# ------------------------------------------------------------------------------------ timings
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def measure_record_overhead(
    adapter: ModelAdapter, items: pd.DataFrame, sizes: BenchSizes, device: str
) -> dict[str, float]:
    """Prefill forward with the recording hooks ÷ without, same batches, alternating."""
    batches = []
    item_list = prompt_items(items)
    for start in range(0, len(item_list), sizes.batch_size):
        batch = adapter.build_batch(item_list[start : start + sizes.batch_size])
        batches.append((batch, capture_prompts(adapter, batch)))
    settings = GreedySettings.from_model(adapter.model)
    modules = adapter.act_fn_modules()

    def bare() -> None:
        for _, prompts in batches:
            greedy_decode(adapter, prompts, max_new_tokens=1, settings=settings)

    def recorded() -> None:
        for batch, prompts in batches:
            with record_activation_stats(modules, adapter.valid_token_mask(batch)):
                greedy_decode(adapter, prompts, max_new_tokens=1, settings=settings)

    bare(), recorded()  # warm-up
    bare_s, record_s = [], []
    for _ in range(sizes.record_repeats):
        bare_s.append(timed(device, bare)[0])
        record_s.append(timed(device, recorded)[0])
    return {
        "record_overhead": statistics.median(r / b for r, b in zip(record_s, bare_s, strict=True)),
        "bare_forward_items_per_s": len(items) / statistics.median(bare_s),
    }


def measure_hf_best_batch(
    adapter: ModelAdapter, items: pd.DataFrame, keep: torch.Tensor, sizes: BenchSizes, device: str
) -> dict[str, Any]:
    """HF `generate` with one shared mask at each batch size; the best rate wins."""
    item_list = prompt_items(items)
    rates = {}
    for batch_size in sizes.hf_batches:
        if batch_size > len(item_list):
            continue

        def run(bs: int = batch_size) -> None:
            with apply_keep_masks(adapter.act_fn_modules(), keep[:1]):
                for start in range(0, len(item_list), bs):
                    batch = adapter.build_batch(item_list[start : start + bs])
                    adapter.generate(batch, max_new_tokens=sizes.max_new_tokens)

        try:
            seconds, _ = timed(device, run)
        except OutOfMemoryError:
            log.warning("HF generate at batch %d ran out of memory", batch_size)
            torch.cuda.empty_cache()
            continue
        rates[batch_size] = len(item_list) / seconds
    best = max(rates, key=rates.get)
    return {"hf_best_batch_items_per_s": rates[best], "hf_best_batch": best, "hf_rates": rates}


def measure_selectors(shape: tuple[int, int, int] = SELECTOR_SHAPE) -> dict[str, dict[str, float]]:
    """Seconds and peak memory of each selector on full-size aggregates, in its own process."""
    from culture_neurons.selection.registry import FIRING, methods

    results = {}
    for method in methods(FIRING):
        if method == "conact":
            continue  # an alias of cas
        code = _SELECTOR_SCRIPT.format(shape=shape, method=method)
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


_SELECTOR_SCRIPT = """
import json, resource, time
import numpy as np
from culture_neurons.selection.selectors import select
C, L, D = {shape}
rng = np.random.default_rng(0)
tokens = rng.integers(20_000, 200_000, size=C).astype(np.int64)
prob = rng.beta(0.5, 2.0, size=(C, L, D))
fire = np.minimum((prob * tokens[:, None, None]).astype(np.int64), tokens[:, None, None])
pos = fire * rng.gamma(2.0, 0.3, size=(C, L, D))
start = time.perf_counter()
mask = select("{method}", fire, pos, tokens, ratio=0.01)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"seconds": seconds, "peak_rss_mib": peak, "selected": int(mask.sum())}}))
"""


# -------------------------------------------------------------------------------------- bench
def run_bench(
    device: str,
    out_dir: Path,
    *,
    store: Path | None = None,
    sizes: BenchSizes | None = None,
    selector_shape: tuple[int, int, int] = SELECTOR_SHAPE,
) -> dict[str, Any]:
    """Every figure of the benchmark into ``out_dir``/bench.json and bench.md.

    ``sizes`` and ``selector_shape`` default to the issue's; smaller ones make a quick check.
    """
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but torch sees no CUDA device")
    if sizes is None:
        sizes = CUDA_SIZES if device == "cuda" else CPU_SIZES
    with tempfile.TemporaryDirectory() as tmp:
        adapter = cuda_model() if device == "cuda" else cpu_model(Path(tmp))
        result = _bench_model(adapter, sizes, device)
    result.update(replication_figures(result))
    result["selectors_s"] = measure_selectors(selector_shape)
    result["selector_shape"] = list(selector_shape)
    result["store_bytes_per_item_neuron"] = _store_bytes(store)
    result["store"] = str(store) if store else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out_dir / "bench.md").write_text(render_markdown(result))
    return result


def _bench_model(adapter: ModelAdapter, sizes: BenchSizes, device: str) -> dict[str, Any]:
    items = bench_items(adapter, sizes)
    keep = random_masks(adapter, sizes)
    lengths = [p.length for p in capture_prompts(adapter, adapter.build_batch(prompt_items(items)))]
    record = measure_record_overhead(adapter, items, sizes, device)

    # Warm-up, then the engine on every item x mask: with drafts, without, and stopped after the
    # first token (the profile), interleaved and repeated against noise. Off CUDA the warm-up
    # runs every pair (the first full-size run was 10% slower than the ones after it).
    warm = (items.head(2), keep[:2], 4) if device == "cuda" else (items, keep, sizes.batch_size)
    answer_masked(adapter, warm[0], warm[1], batch_size=warm[2], max_new_tokens=2, desc="warm")
    pairs = len(items) * sizes.n_masks
    n = sizes.max_new_tokens
    configs: dict[str, dict[str, Any]] = {
        "prefill_only": {"max_new_tokens": 1, "drafts": False},
        "no_drafts": {"max_new_tokens": n, "drafts": False},
        "drafts": {"max_new_tokens": n, "drafts": True},
    }
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    stats = {name: DecodeStats() for name in configs}
    answers: dict[str, list[pd.DataFrame]] = {}
    for repeat in range(sizes.engine_repeats):
        # Every other repeat in reverse: a run's place in the sequence shifts its speed here.
        order = list(configs.items())
        for name, options in order if repeat % 2 == 0 else order[::-1]:
            took, answers[name] = timed(
                device,
                lambda options=options, name=name, repeat=repeat: answer_masked(
                    adapter, items, keep, batch_size=sizes.batch_size, desc=f"engine {name}",
                    stats=stats[name] if repeat == 0 else None, **options,
                ),
            )  # fmt: skip
            seconds[name].append(took)
    rates = {name: [pairs / s for s in took] for name, took in seconds.items()}
    rate = {name: float(np.median(r)) for name, r in rates.items()}
    default = "drafts" if device == "cuda" else "no_drafts"  # answer_masked's default
    masked_rate = rate[default]
    paired = [e / p for e, p in zip(rates[default], rates["prefill_only"], strict=True)]

    # The naive loop: generate() one item at a time, one mask at a time.
    naive_n = min(sizes.naive_pairs, pairs)
    naive_pairs = [(i, m) for m in range(sizes.n_masks) for i in range(len(items))][:naive_n]
    naive_texts: dict[tuple[int, int], str] = {}
    naive_s = 0.0
    for i, m in tqdm(naive_pairs, desc="naive", unit="item", mininterval=2.0):
        seconds, texts = timed(
            device,
            lambda i=i, m=m: reference_answers(
                adapter,
                items.iloc[[i]],
                max_new_tokens=sizes.max_new_tokens,
                keep=keep[m : m + 1],
            ),  # fmt: skip
        )
        naive_s += seconds
        naive_texts[(i, m)] = texts[0]
    naive_rate = naive_n / naive_s
    tables = answers[default]
    same = [tables[m]["output"].iloc[i] == text for (i, m), text in naive_texts.items()]
    same_choice = [
        tables[m]["choice"].iloc[i] == _choice(text, items.iloc[i])
        for (i, m), text in naive_texts.items()
    ]
    common = [
        _common_prefix(tables[m]["output"].iloc[i].split(), text.split())
        for (i, m), text in naive_texts.items()
    ]
    differing = [
        {"item": i, "mask": m, "engine": tables[m]["output"].iloc[i], "naive": text}
        for (i, m), text in naive_texts.items()
        if tables[m]["output"].iloc[i] != text
    ][:5]
    hf = measure_hf_best_batch(adapter, items, keep, sizes, device)
    return {
        "device": _device_name(device),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
        },
        "model": {
            "class": type(adapter.model).__name__,
            "dtype": str(adapter.dtype).removeprefix("torch."),
            "decoder_layers": adapter.n_layers,
            "mlp_neurons_per_layer": adapter.n_neurons,
            "parameters": sum(p.numel() for p in adapter.model.parameters()),
        },
        "sizes": {
            "items": len(items),
            "masks": sizes.n_masks,
            "neurons_off_per_mask": int((keep[0] == 0).sum()),
            "prompt_tokens_min": min(lengths),
            "prompt_tokens_max": max(lengths),
            "prompt_tokens_mean": float(np.mean(lengths)),
            "batch_size": sizes.batch_size,
            "max_new_tokens": sizes.max_new_tokens,
            "naive_pairs": naive_n,
        },
        **record,
        "masked_items_per_s": masked_rate,
        "naive_items_per_s": naive_rate,
        "speedup_vs_naive": masked_rate / naive_rate,
        **hf,
        "engine_vs_hf_best": masked_rate / hf["hf_best_batch_items_per_s"],
        "engine_default": default,
        "engine_repeats": sizes.engine_repeats,
        "engine_rates": rates,
        "engine_prefill_only_items_per_s": rate["prefill_only"],
        # Each repeat's engine run against the prefill-only run next to it: the machine drifts.
        "engine_vs_prefill_only": float(np.median(paired)),
        "engine_vs_prefill_only_runs": paired,
        "engine_decode_share": 1 - float(np.median(paired)),
        "engine_no_drafts_items_per_s": rate["no_drafts"],
        "engine_drafts_items_per_s": rate["drafts"],
        "draft_acceptance": stats["drafts"].accepted / max(stats["drafts"].drafted, 1),
        "drafted_rows": stats["drafts"].drafted,
        "decoder_forwards_per_answer": stats[default].row_forwards / pairs,
        "decoder_forwards_per_answer_drafts": stats["drafts"].row_forwards / pairs,
        "decoder_forwards_per_answer_no_drafts": stats["no_drafts"].row_forwards / pairs,
        "drafts_change_no_answer": all(
            a["output"].tolist() == b["output"].tolist()
            for a, b in zip(answers["drafts"], answers["no_drafts"], strict=True)
        ),
        "answer_agreement": float(np.mean(same)),
        "first_word_agreement": float(np.mean([c > 0 for c in common])),
        "mean_common_prefix_words": float(np.mean(common)),
        "choice_agreement": float(np.mean(same_choice)),
        "answers_differing": differing,
    }


def replication_figures(result: dict[str, Any]) -> dict[str, Any]:
    """configs/paper.yaml's model jobs at this device's rate, each model at its own prompt
    length (culture_neurons.planning: the formula the workflow's runtimes use)."""
    plan = replication(result)
    return {
        "replication_hours": None if plan is None else plan["gpu_hours"],
        "replication": plan,
        "tokens_per_s": bench_tokens_per_s(result),
    }


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _choice(text: str, row: pd.Series) -> int:
    from culture_neurons.inference.answers import extract_choice

    choice = extract_choice(text, list(row["options"]))
    return -1 if choice is None else choice


def _device_name(device: str) -> str:
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name()}"
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _store_bytes(store: Path | None) -> float | None:
    if store is None or not Path(store).exists():
        return None
    from culture_neurons.record.store import store_bytes_per_item_neuron

    return store_bytes_per_item_neuron(store)


# ------------------------------------------------------------------------------------- report
def render_markdown(result: dict[str, Any]) -> str:
    sizes, model = result["sizes"], result["model"]
    repeats = (
        f"; median of {result['engine_repeats']}, interleaved"
        if result["engine_repeats"] > 1
        else ""
    )
    lines = [
        "# culture-neurons bench",
        "",
        f"- device: {result['device']}; torch {result['versions']['torch']}, "
        f"transformers {result['versions']['transformers']}, "
        f"python {result['versions']['python']}, {result['versions']['threads']} threads",
        f"- model: {model['class']} (random init, {model['dtype']}), {model['decoder_layers']} "
        f"decoder layers x {model['mlp_neurons_per_layer']} MLP neurons, "
        f"{model['parameters'] / 1e6:.1f} M parameters",
        f"- work: {sizes['items']} items x {sizes['masks']} masks "
        f"({sizes['neurons_off_per_mask']} neurons off each), prompts of "
        f"{sizes['prompt_tokens_min']}-{sizes['prompt_tokens_max']} tokens, greedy, "
        f"max {sizes['max_new_tokens']} new tokens, engine batch {sizes['batch_size']}",
        "",
        "| figure | value | what it is |",
        "|---|---:|---|",
        f"| masked_items_per_s | {result['masked_items_per_s']:.2f} | the engine as it runs "
        f"here ({result['engine_default'].replace('_', ' ')}): item x mask answers per second"
        f"{repeats} |",
        f"| naive_items_per_s | {result['naive_items_per_s']:.2f} | HF generate, batch 1, one mask "
        f"at a time ({sizes['naive_pairs']} of the same pairs) |",
        f"| speedup_vs_naive | {result['speedup_vs_naive']:.1f}x | |",
        f"| hf_best_batch_items_per_s | {result['hf_best_batch_items_per_s']:.2f} | HF generate, "
        f"one shared mask, best batch ({result['hf_best_batch']}; all: "
        + ", ".join(f"{b}: {r:.2f}" for b, r in result["hf_rates"].items())
        + ") |",
        f"| engine_vs_hf_best | {result['engine_vs_hf_best']:.2f}x | |",
        f"| bare_forward_items_per_s | {result['bare_forward_items_per_s']:.2f} | prefill forward "
        "alone, no hooks |",
        f"| record_overhead | {result['record_overhead']:.3f} | recording forward / bare forward, "
        "same batches |",
        f"| answer_agreement | {result['answer_agreement']:.4f} | share of item x mask answers "
        "(full text) equal to the naive loop's |",
        f"| choice_agreement | {result['choice_agreement']:.4f} | same, for the extracted option |",
        f"| first_word_agreement | {result['first_word_agreement']:.4f} | same, first word of the "
        "answer only |",
        f"| mean_common_prefix_words | {result['mean_common_prefix_words']:.1f} | words the "
        "engine's and the naive answer share before they differ |",
        f"| engine_prefill_only_items_per_s | {result['engine_prefill_only_items_per_s']:.2f} | "
        f"profile: the engine stopped after the first token (capture + prefill){repeats} |",
        f"| engine_vs_prefill_only | {result['engine_vs_prefill_only']:.3f} | the engine's rate / "
        "its prefill-only rate, per repeat (median; "
        + ", ".join(f"{r:.3f}" for r in result["engine_vs_prefill_only_runs"])
        + "; CPU target >= 0.9) |",
        f"| engine_decode_share | {result['engine_decode_share']:.2f} | profile: share of the "
        f"engine's time spent in decode steps 2-{sizes['max_new_tokens']} |",
        f"| engine_no_drafts_items_per_s | {result['engine_no_drafts_items_per_s']:.2f} | every "
        "masked row decoded step by step |",
        f"| engine_drafts_items_per_s | {result['engine_drafts_items_per_s']:.2f} | each item's "
        "unmasked answer checked as the draft of its masked rows |",
        f"| draft_acceptance | {result['draft_acceptance']:.3f} | share of the "
        f"{result['drafted_rows']} drafted rows finished by checking the item's unmasked answer "
        "in their prefill (drafting stops for the run below 0.5) |",
        f"| decoder_forwards_per_answer | {result['decoder_forwards_per_answer']:.2f} | decoder "
        "passes per item x mask answer (prefill and steps, row by row); with drafts "
        f"{result['decoder_forwards_per_answer_drafts']:.2f} (their unmasked answers "
        f"included), without {result['decoder_forwards_per_answer_no_drafts']:.2f} |",
        f"| drafts_change_no_answer | {result['drafts_change_no_answer']} | every answer with "
        "drafts equals the one without |",
    ]
    lines.append(_replication_row(result))
    shape = "x".join(map(str, result.get("selector_shape", SELECTOR_SHAPE)))
    for method, numbers in result["selectors_s"].items():
        lines.append(
            f"| selectors_s.{method} | {numbers['seconds']:.2f} | aggregates {shape}; "
            f"peak RSS {numbers['peak_rss_mib']:.0f} MiB |"
        )
    store = result["store_bytes_per_item_neuron"]
    lines.append(
        f"| store_bytes_per_item_neuron | {'-' if store is None else f'{store:.2f}'} | "
        f"{result['store'] or 'no store given'} |"
    )
    if result["answers_differing"]:
        lines += ["", "Answers that differ from the naive loop (first 5):", ""]
        lines += [
            f"- item {d['item']}, mask {d['mask']}: engine {d['engine']!r}, naive {d['naive']!r}"
            for d in result["answers_differing"]
        ]
    return "\n".join(lines) + "\n"


def _replication_row(result: dict[str, Any]) -> str:
    plan = result.get("replication")
    if plan is None:
        return "| replication_hours | - | configs/paper.yaml not found (not a checkout) |"
    return (
        f"| replication_hours | {plan['gpu_hours']:.1f} | configs/paper.yaml's model jobs "
        f"({plan['models']} models x {plan['masks_per_model']} masks: "
        f"{plan['masked_answers']:,} masked answers, plus recording and baselines), each model "
        f"at its prompt length, at this device's {result['tokens_per_s']:,.0f} tokens/s "
        "(masked_items_per_s x the bench's prompt + new tokens) |"
    )
