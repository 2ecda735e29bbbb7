"""Image tokens per photo for the paper's VLMs, by their processors' own token-count logic.

python benchmarks/prompt_tokens.py  # offline, no weights: benchmarks/replication/prompt_tokens.json

Qwen2.5-VL: transformers' smart_resize at configs/paper.yaml's min_pixels / max_pixels, one token
per 28x28 pixels after merging. LLaVA-NeXT (llava-hf/llava-v1.6-mistral-7b-hf): LlavaNextProcessor's
_get_number_of_features with its anyres grid pinpoints and 336-px CLIP ViT-L/14 tiles (the
"default" feature strategy: no CLS token). The sizes are CVQA-like phone photos, both
orientations. The text of the prompt is not counted here (planning.work.TEXT_TOKENS assumes it).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import transformers
import yaml
from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(4000, 3000), (3000, 4000), (6000, 4000), (4000, 6000), (3000, 2000), (3000, 3000),
         (1600, 1200), (1024, 768)]  # fmt: skip
LLAVA_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def qwen_tokens(width: int, height: int, min_pixels: int, max_pixels: int) -> int:
    resized_h, resized_w = smart_resize(
        height, width, factor=28, min_pixels=min_pixels, max_pixels=max_pixels
    )
    return resized_h * resized_w // (28 * 28)


def llava_next_tokens(width: int, height: int) -> int:
    processor = SimpleNamespace(
        image_processor=SimpleNamespace(image_grid_pinpoints=LLAVA_PINPOINTS),
        patch_size=14,
        num_additional_image_tokens=0,
    )
    processor._get_unpadded_features = lambda *a: LlavaNextProcessor._get_unpadded_features(
        processor, *a
    )
    return LlavaNextProcessor._get_number_of_features(processor, height, width, 336, 336)


def demo_prompt_tokens(items: Path, n: int = 64) -> list[int]:
    """Whole prompts of the shipped demo model on ``n`` of the demo's evaluation items (needs
    results/data/demo/items.parquet: `snakemake --cores 2 results/data/demo/items.parquet`)."""
    import pandas as pd

    from culture_neurons.data.split import EVALUATION, split_rows
    from culture_neurons.inference.engine import prompt_items
    from culture_neurons.models import load_adapter

    rows = split_rows(pd.read_parquet(items), EVALUATION).sample(n, random_state=0)
    spec = {"family": "qwen2_5_vl", "path": str(ROOT / "resources/demo/model"), "dtype": "float32"}
    adapter = load_adapter({**spec, "device_map": "cpu"})
    return [int(adapter.build_batch([i])["attention_mask"].sum()) for i in prompt_items(rows)]


def main() -> None:
    paper = yaml.safe_load((ROOT / "configs/paper.yaml").read_text())
    pixels = paper["models"]["qwen2.5-vl-7b"]["processor"]
    qwen = [qwen_tokens(w, h, pixels["min_pixels"], pixels["max_pixels"]) for w, h in SIZES]
    llava = [llava_next_tokens(w, h) for w, h in SIZES]
    result = {
        "transformers": transformers.__version__,
        "sizes_wh": SIZES,
        "qwen2_5_vl": {"processor": pixels, "image_tokens": qwen, "range": [min(qwen), max(qwen)]},
        "llava_next": {
            "grid_pinpoints": LLAVA_PINPOINTS,
            "image_tokens": llava,
            "range": [min(llava), max(llava)],
            "median": statistics.median(llava),
        },
    }
    demo_items = ROOT / "results/data/demo/items.parquet"
    if demo_items.exists():
        demo = demo_prompt_tokens(demo_items)
        result["demo"] = {"items": len(demo), "range": [min(demo), max(demo)],
                          "mean": statistics.mean(demo)}  # fmt: skip
    out = ROOT / "benchmarks/replication/prompt_tokens.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
