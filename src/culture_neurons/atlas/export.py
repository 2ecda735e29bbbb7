"""The atlas's machine-readable export: JSON lines, one record per neuron.

Shaped like Neuronpedia's feature exports where it fits: ``modelId``, ``layer``, ``index``,
``maxActApprox``, ``frac_nonzero`` and ``activations``, a list of examples each with
``tokens``, ``values``, ``maxValue`` and ``maxValueTokenIndex``. The store keeps one value per
item (the mean positive activation per valid token), not one per token, so each example is one
"token": the item's question, with that value. Fields Neuronpedia lacks carry the culture data:
``chosen_by``, ``profile``, ``lowest_activations`` and each example's item, culture and answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from culture_neurons.atlas.site import AtlasData, Example


def _example(example: Example) -> dict[str, Any]:
    return {
        "tokens": [example.question],
        "values": [example.activation],
        "maxValue": example.activation,
        "maxValueTokenIndex": 0,
        "item_id": example.item_id,
        "culture": example.culture,
        "firing_rate": example.firing_rate,
        "options": example.options,
        "answer": example.answer,
        "choice": example.choice,
        "label": example.label,
        "correct": example.correct,
        "thumbnail": example.thumbnail,
    }


def neuron_records(data: AtlasData) -> Iterator[dict[str, Any]]:
    """One export record per neuron of the atlas, in (layer, neuron) order."""
    for page in data.neuron_pages():
        yield {
            "modelId": data.model,
            "layer": page.layer,
            "index": page.neuron,
            "source": "mlp.act_fn",
            "maxActApprox": page.max_activation,
            "frac_nonzero": page.firing_rate,
            "chosen_by": [
                {"selector": c.selector, "culture": c.culture, "rank": c.rank} for c in page.choices
            ],
            "profile": page.profile,
            "activations": [_example(e) for e in page.top],
            "lowest_activations": [_example(e) for e in page.bottom],
        }


def write_export(data: AtlasData, path: str | Path) -> int:
    """Write the JSONL export; returns the number of records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as out:
        for record in neuron_records(data):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count
