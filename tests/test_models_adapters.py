"""Model adapters on tiny offline checkpoints: loading, prompts, decoder modules, valid tokens."""

from __future__ import annotations

import copy
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlavaNextForConditionalGeneration

from culture_neurons.models import (
    AdapterSpec,
    ModelAdapter,
    build_prompt_text,
    families,
    get_adapter,
    load_adapter,
)
from culture_neurons.models.layers import decoder_act_fns, find_decoder_layers
from culture_neurons.models.llava_next import complete_llava_next_processor
from culture_neurons.models.qwen2_5_vl import (
    DEFAULT_MAX_PIXELS,
    Qwen2_5_VLAdapter,
    cap_image_pixels,
)
from culture_neurons.models.qwen_processing import QwenVLImageProcessorStandIn
from culture_neurons.models.tiny import TINY_FAMILIES, make_items, random_image

pytest_plugins = ["tests.tiny_models"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What each family's prompt holds besides text, spelled out independently of the adapters.
SPECIAL_TOKENS = {
    "qwen2_5_vl": ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"],
    "llava_next": ["<s>", "[INST]", "[/INST]"],
    "pangea": ["<|im_start|>", "<|im_end|>"],
}
PAD_TOKEN = {"qwen2_5_vl": "<|endoftext|>", "llava_next": "<pad>", "pangea": "<|endoftext|>"}
IMAGE_TOKEN = {"qwen2_5_vl": "<|image_pad|>", "llava_next": "<image>", "pangea": "<image>"}


def test_prompt_text_is_appendix_a3() -> None:
    text = build_prompt_text("What is\nthis?", ["a  temple", "a market", "a river", "a dish"])
    assert text == (
        "Answer the following multiple-choice question based on the image.\n"
        "Question: What is this?\n"
        "Options: a temple a market a river a dish\n"
        "Your response must be ONLY the text of the correct option from the list above, "
        "and nothing else."
    )
    blind = build_prompt_text("What is\nthis?", ["a", "b", "c", "d"], with_image=False)
    assert blind.startswith("Answer the following multiple-choice question.\nQuestion: What is")
    assert blind.split("\n")[1:] == text.split("\n")[1:2] + [
        "Options: a b c d",
        text.split("\n")[-1],
    ]
    with pytest.raises(ValueError):
        build_prompt_text("q", "abcd")


def test_registry_knows_the_families() -> None:
    assert families() == ["generic", "llava_next", "pangea", "qwen2_5_vl"]
    assert get_adapter("qwen2_5_vl") is Qwen2_5_VLAdapter
    assert all(issubclass(get_adapter(name), ModelAdapter) for name in families())
    with pytest.raises(ValueError, match="unknown model family"):
        get_adapter("llama")


def test_spec_rejects_typos_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown model spec keys"):
        AdapterSpec.from_mapping({"family": "pangea", "path": "x", "dtpye": "float32"})
    with pytest.raises(ValueError, match="dtype"):
        AdapterSpec.from_mapping({"family": "pangea", "path": "x", "dtype": "fp8"})
    with pytest.raises(ValueError, match="token_scope"):
        AdapterSpec.from_mapping({"family": "pangea", "path": "x", "token_scope": "visual"})


def test_rendered_prompt_follows_family_template(tiny_adapter: ModelAdapter) -> None:
    prompt = tiny_adapter.render_prompt("Q?", ["a", "b", "c", "d"])
    body = build_prompt_text("Q?", ["a", "b", "c", "d"])
    system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    expected = {
        "qwen2_5_vl": f"{system}<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{body}<|im_end|>\n<|im_start|>assistant\n",
        "llava_next": f"[INST] <image>\n{body} [/INST]",
        # Pangea's model-card layout, although its tokenizer carries Qwen2's text-only template.
        "pangea": f"{system}<|im_start|>user\n<image>\n{body}<|im_end|>\n<|im_start|>assistant\n",
    }
    assert prompt == expected[tiny_adapter.family]


def test_act_fn_modules_are_the_decoder_mlps_only(tiny_adapter: ModelAdapter) -> None:
    model = tiny_adapter.model
    modules = tiny_adapter.act_fn_modules()
    assert tiny_adapter.n_layers == len(modules) == model.config.text_config.num_hidden_layers == 3
    assert tiny_adapter.n_neurons == model.config.text_config.intermediate_size == 128
    assert len({id(m) for m in modules}) == len(modules)
    names = {id(module): name for name, module in model.named_modules()}
    assert [names[id(m)] for m in modules] == [
        f"model.language_model.layers.{i}.mlp.act_fn" for i in range(3)
    ]


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(4, 8)
        self.mlp.act_fn = nn.SiLU()


def test_unknown_layouts_are_searched_outside_the_vision_tower() -> None:
    model = nn.Module()
    model.vision_encoder = nn.ModuleList([_Layer(), _Layer()])
    model.trunk = nn.Module()
    model.trunk.blocks = nn.ModuleList([_Layer(), _Layer(), _Layer()])
    path, layers = find_decoder_layers(model)
    assert path == "trunk.blocks" and layers is model.trunk.blocks
    model.other = nn.ModuleList([_Layer()])
    with pytest.raises(ValueError, match="cannot locate the decoder layers"):
        find_decoder_layers(model)


def test_shared_act_fn_is_refused(tiny_checkpoint: Callable[[str], Path]) -> None:
    model = LlavaNextForConditionalGeneration.from_pretrained(tiny_checkpoint("llava_next"))
    path, layers = find_decoder_layers(model)
    layers[2].mlp.act_fn = layers[0].mlp.act_fn
    with pytest.raises(ValueError, match=r"layers\.2\.mlp\.act_fn is the same module"):
        decoder_act_fns(layers, path)


def test_llava_next_processor_gaps_are_filled_from_the_config(
    load_tiny: Callable[..., ModelAdapter],
) -> None:
    adapter = load_tiny("llava_next")
    processor = copy.copy(adapter.processor)
    processor.patch_size = processor.vision_feature_select_strategy = None
    processor.num_additional_image_tokens = 0
    complete_llava_next_processor(processor, adapter.model.config)
    assert processor.patch_size == 14
    assert processor.vision_feature_select_strategy == "default"
    assert processor.num_additional_image_tokens == 1  # CLIP's CLS token


def test_image_cap_handles_both_spellings_of_size() -> None:
    legacy = SimpleNamespace(size={"min_pixels": 1, "max_pixels": 2}, min_pixels=1, max_pixels=2)
    cap_image_pixels(legacy, 100, 200)
    assert legacy.size == {
        "min_pixels": 100,
        "max_pixels": 200,
        "shortest_edge": 100,
        "longest_edge": 200,
    }
    assert (legacy.min_pixels, legacy.max_pixels) == (100, 200)
    with pytest.raises(ValueError):
        cap_image_pixels(legacy, 300, 200)


def test_batch_is_left_padded_with_visual_tokens_expanded(tiny_adapter: ModelAdapter) -> None:
    tok = tiny_adapter.tokenizer
    batch = tiny_adapter.build_batch(make_items(4))
    ids, attention = batch["input_ids"], batch["attention_mask"]
    lengths = attention.sum(dim=1)
    assert len(set(lengths.tolist())) > 1, "rows of different length exercise the padding"
    for row, length in enumerate(lengths.tolist()):
        pad = ids.shape[1] - length
        assert attention[row, :pad].eq(0).all() and attention[row, pad:].eq(1).all()
        assert ids[row, :pad].eq(tok.convert_tokens_to_ids(PAD_TOKEN[tiny_adapter.family])).all()
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN[tiny_adapter.family])
    visual_per_row = (ids == image_id).sum(dim=1)
    assert (visual_per_row > 1).all(), "each image placeholder expands into its visual tokens"
    if tiny_adapter.family == "qwen2_5_vl":
        assert visual_per_row.tolist() == (batch["image_grid_thw"].prod(dim=1) // 4).tolist()
    if tiny_adapter.family == "llava_next":
        first = ids.shape[1] - lengths
        assert ids[torch.arange(4), first].eq(tok.bos_token_id).all()  # one BOS, not two
        assert ids[torch.arange(4), first + 1].eq(tok.convert_tokens_to_ids("[INST]")).all()


def test_valid_mask_drops_padding_and_special_tokens(tiny_adapter: ModelAdapter) -> None:
    family = tiny_adapter.family
    tok = tiny_adapter.tokenizer
    batch = tiny_adapter.build_batch(make_items(4))
    ids, attention = batch["input_ids"], batch["attention_mask"].bool()
    mask = tiny_adapter.valid_token_mask(batch)
    assert mask.dtype == torch.bool and mask.shape == ids.shape

    special = torch.tensor(tok.convert_tokens_to_ids(SPECIAL_TOKENS[family]))
    is_special = torch.isin(ids, special)
    for token in SPECIAL_TOKENS[family]:
        assert (ids == tok.convert_tokens_to_ids(token)).any(dim=1).all(), f"{token} in every row"
    assert not mask[~attention].any(), "padding is never valid"
    assert not mask[is_special].any(), "template markers and image delimiters are never valid"
    assert torch.equal(mask, attention & ~is_special)

    visual = ids == tok.convert_tokens_to_ids(IMAGE_TOKEN[family])
    assert mask[visual].all(), "visual-token positions count"
    row = 0
    first_question_token = tok.encode("Question", add_special_tokens=False)[0]
    position = (ids[row] == first_question_token).nonzero()[0, 0]
    assert mask[row, position] and mask[row, position - 1], "prompt text counts"


def test_scopes_partition_the_valid_tokens(tiny_adapter: ModelAdapter) -> None:
    batch = tiny_adapter.build_batch(make_items(3, seed=1))
    every = tiny_adapter.valid_token_mask(batch, "all")
    text = tiny_adapter.valid_token_mask(batch, "text")
    image = tiny_adapter.valid_token_mask(batch, "image")
    assert torch.equal(text | image, every)
    assert not (text & image).any()
    image_id = tiny_adapter.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN[tiny_adapter.family])
    assert torch.equal(image, batch["input_ids"] == image_id)
    assert text.sum() > 0 and image.sum() > 0
    assert torch.equal(tiny_adapter.valid_token_mask(batch), every)  # token_scope "all"
    with pytest.raises(ValueError):
        tiny_adapter.valid_token_mask(batch, "video")


def test_token_scope_from_spec_is_the_default(load_tiny: Callable[..., ModelAdapter]) -> None:
    adapter = load_tiny("pangea", token_scope="text")
    batch = adapter.build_batch(make_items(2))
    assert torch.equal(adapter.valid_token_mask(batch), adapter.valid_token_mask(batch, "text"))
    assert adapter.metadata()["token_scope"] == "text"


def test_dtype_reaches_from_pretrained(load_tiny: Callable[..., ModelAdapter]) -> None:
    adapter = load_tiny("llava_next", dtype="bfloat16")
    assert adapter.dtype == torch.bfloat16
    batch = adapter.build_batch(make_items(1))
    assert batch["pixel_values"].dtype == torch.bfloat16
    assert adapter.metadata()["dtype"] == "bfloat16"


def qwen_visual_tokens(adapter: ModelAdapter, height: int, width: int) -> int:
    item = {
        "question": "Q?",
        "options": ["a", "b", "c", "d"],
        "image": random_image(height, width, 0),
    }
    return int(adapter.valid_token_mask(adapter.build_batch([item]), "image").sum())


def test_qwen_image_size_is_capped(load_tiny: Callable[..., ModelAdapter]) -> None:
    default = load_tiny("qwen2_5_vl")
    assert default.processor.image_processor.size["longest_edge"] == DEFAULT_MAX_PIXELS
    # 420x308 px = 15x11 merged 28 px cells: under the default cap, all of them.
    assert qwen_visual_tokens(default, 308, 420) == 15 * 11
    capped = load_tiny(
        "qwen2_5_vl", processor_kwargs={"min_pixels": 28 * 28, "max_pixels": 12 * 28 * 28}
    )
    assert 4 <= qwen_visual_tokens(capped, 308, 420) <= 12


@pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None,
    reason="Qwen2_5_VLProcessor needs torchvision; without it the stand-in is all there is",
)
def test_qwen_stand_in_matches_the_real_processor(
    load_tiny: Callable[..., ModelAdapter], monkeypatch: pytest.MonkeyPatch
) -> None:
    from culture_neurons.models import qwen2_5_vl

    # A pixel cap that the 308x420 image exceeds: both processors must apply it.
    cap = {"processor_kwargs": {"min_pixels": 28 * 28, "max_pixels": 12 * 28 * 28}}
    adapter = load_tiny("qwen2_5_vl", **cap)
    assert not isinstance(adapter.processor, QwenVLImageProcessorStandIn)

    # The stand-in as production builds it where AutoProcessor fails for want of torchvision:
    # AutoTokenizer, AutoImageProcessor and the chat template loaded from the checkpoint by the
    # adapter, pixel cap included, none of it borrowed from the real processor.
    def no_video_processor(*args: object, **kwargs: object) -> None:
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library")

    monkeypatch.setattr(
        qwen2_5_vl, "AutoProcessor", SimpleNamespace(from_pretrained=no_video_processor)
    )
    stand_in = load_tiny("qwen2_5_vl", **cap)
    monkeypatch.undo()
    assert isinstance(stand_in.processor, QwenVLImageProcessorStandIn)
    assert stand_in.processor.image_processor is not adapter.processor.image_processor
    items = make_items(4)  # images of several sizes and prompts of several lengths
    items.append({**items[0], "image": random_image(308, 420, seed=5)})
    real = adapter.build_batch(items)
    mine = stand_in.build_batch(items)
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw"):
        assert torch.equal(real[key], mine[key]), key
    if "mm_token_type_ids" in real:
        assert torch.equal(real["mm_token_type_ids"].long(), mine["mm_token_type_ids"].long())
    assert torch.equal(adapter.valid_token_mask(real), stand_in.valid_token_mask(mine))


def test_generic_family_uses_auto_classes(load_tiny: Callable[..., ModelAdapter]) -> None:
    generic = load_tiny("generic", checkpoint="llava_next")
    assert isinstance(generic.model, LlavaNextForConditionalGeneration)
    named = load_tiny(
        "generic", checkpoint="llava_next", model_class="LlavaNextForConditionalGeneration"
    )
    dotted = load_tiny(
        "generic",
        checkpoint="llava_next",
        model_class="transformers.LlavaNextForConditionalGeneration",
    )
    assert named.n_layers == dotted.n_layers == generic.n_layers == 3
    batch = generic.build_batch(make_items(2))
    assert torch.equal(
        generic.valid_token_mask(batch), load_tiny("llava_next").valid_token_mask(batch)
    )


def test_generic_text_only_model(tmp_path: Path, tiny_checkpoint: Callable[[str], Path]) -> None:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("pangea"))
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    # A text-only checkpoint names no processor class (this tokenizer came from a LLaVA one).
    tok_config = tmp_path / "tokenizer_config.json"
    tok_config.write_text(
        json.dumps(
            {k: v for k, v in json.loads(tok_config.read_text()).items() if k != "processor_class"}
        )
    )
    adapter = load_adapter({"family": "generic", "path": str(tmp_path), "dtype": "float32"})
    assert not adapter.takes_images and adapter.n_layers == 2 and adapter.n_neurons == 48
    batch = adapter.build_batch(make_items(2))
    assert "pixel_values" not in batch
    mask = adapter.valid_token_mask(batch)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    assert (batch["input_ids"] == im_start).any() and not mask[batch["input_ids"] == im_start].any()
    assert not adapter.valid_token_mask(batch, "image").any()
    assert adapter.generate(batch, max_new_tokens=2).shape == (2, 2)
    # Its prompt is appendix A.3's without " based on the image"; a VLM's keeps it.
    prompt = tok.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert "Answer the following multiple-choice question.\nQuestion:" in prompt
    assert "image" not in prompt


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_blind_run_withholds_the_image_and_its_wording(
    family: str, load_tiny: Callable[..., ModelAdapter]
) -> None:
    # `image: drop` (the blind control): the same VLM, asked without the image and without
    # " based on the image"; a text item (no image) gets the same prompt from the seeing model.
    seeing, blind = load_tiny(family), load_tiny(family, image="drop")
    assert seeing.takes_images and not blind.takes_images
    items = make_items(2)
    blind_batch = blind.build_batch(items)
    assert "pixel_values" not in blind_batch
    assert not blind.visual_token_mask(blind_batch).any()
    text_items = [{**item, "image": None} for item in items]
    text_batch = seeing.build_batch(text_items)
    assert torch.equal(text_batch["input_ids"], blind_batch["input_ids"])
    question, options = items[0]["question"], items[0]["options"]
    blind_prompt = blind.render_prompt(question, options)
    assert "Answer the following multiple-choice question.\nQuestion:" in blind_prompt
    assert seeing.render_prompt(question, options, with_image=False) == blind_prompt
    assert "multiple-choice question based on the image.\nQuestion:" in seeing.render_prompt(
        question, options
    )
    with pytest.raises(ValueError, match="mixes items with and without an image"):
        seeing.build_batch([items[0], text_items[1]])
    assert blind.metadata()["image"] == "drop" and seeing.metadata()["image"] == "use"


def test_blind_and_text_rows_never_open_an_image() -> None:
    import pandas as pd

    from culture_neurons.inference.engine import prompt_items

    rows = pd.DataFrame(
        {
            "question": ["Q?", "R?"],
            "options": [["a", "b", "c", "d"]] * 2,
            "image_source": ["/nonexistent/shard.parquet", ""],
            "image_row": [0, 1],
        }
    )
    assert [i["image"] for i in prompt_items(rows, with_images=False)] == [None, None]
    assert prompt_items(rows.iloc[[1]])[0]["image"] is None  # a text item has no image
    with pytest.raises(FileNotFoundError):
        prompt_items(rows.iloc[[0]])


def test_image_mode_is_checked() -> None:
    from culture_neurons.models.spec import AdapterSpec

    with pytest.raises(ValueError, match="image must be one of"):
        AdapterSpec(family="generic", path="x", image="blur")
    with pytest.raises(ValueError, match="records nothing"):
        AdapterSpec(family="generic", path="x", image="drop", token_scope="image")


def test_a_hub_model_that_cannot_be_reached_offline_is_one_line() -> None:
    from culture_neurons.errors import InputError

    with pytest.raises(InputError) as err:
        load_adapter({"family": "generic", "path": "HuggingFaceTB/SmolLM2-135M-Instruct"})
    message = str(err.value)
    assert message.startswith("model HuggingFaceTB/SmolLM2-135M-Instruct cannot be loaded")
    assert "offline" in message and "\n" not in message
