"""What the atlas shows, assembled from the scan (pure: no files read or written here).

`AtlasData` holds the chosen neurons, their per-item statistics and profile, the items' text
and thumbnails and the selectors' ablation effects; `neuron_pages` and `pair_overlaps` give what
the site's pages and the export list.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from culture_neurons.atlas.choose import Choice, choices_by_neuron
from culture_neurons.atlas.profile import Profile
from culture_neurons.atlas.scan import NeuronActivity


@dataclass(frozen=True)
class Example:
    """One identification item as a neuron's page lists it."""

    item_id: str
    culture: str
    question: str
    options: list[str]
    answer: str
    choice: int
    label: int  # the correct option, -1 when the labels are hidden
    correct: int
    activation: float
    firing_rate: float
    thumbnail: str | None


def _label(item: pd.Series) -> int:
    """The correct option of an items.parquet row; -1 without one (hidden labels, NaN)."""
    label = item.get("label")
    return -1 if label is None or pd.isna(label) else int(label)


@dataclass(frozen=True)
class NeuronPage:
    layer: int
    neuron: int
    choices: list[Choice]
    max_activation: float
    firing_rate: float
    profile: list[dict[str, Any]]
    top: list[Example]
    bottom: list[Example]

    @property
    def slug(self) -> str:
        return neuron_slug(self.layer, self.neuron)


def neuron_slug(layer: int, neuron: int) -> str:
    return f"L{layer}-N{neuron}"


@dataclass(frozen=True)
class Effect:
    """A source culture's accuracy change under its own neurons' ablation (self) and the mean
    over the other cultures (cross), from the selector's matrices summary."""

    self: float
    cross: float


@dataclass
class AtlasData:
    model: str
    selectors: list[str]
    choices: list[Choice]
    activity: NeuronActivity
    profile: Profile
    top: np.ndarray  # [k, N] item indices, largest activation first
    bottom: np.ndarray  # [k, N] item indices, smallest first
    items: pd.DataFrame  # indexed by item_id: question, options
    thumbnails: Mapping[str, str] = field(default_factory=dict)
    effects: Mapping[str, Mapping[str, Effect]] = field(default_factory=dict)

    def _example(self, row: int, column: int) -> Example:
        activity = self.activity
        item_id = str(activity.item_id[row])
        item = self.items.loc[item_id]
        return Example(
            item_id=item_id,
            culture=str(activity.culture[row]),
            question=str(item["question"]),
            options=[str(o) for o in item["options"]],
            answer=str(activity.answer[row]),
            choice=int(activity.choice[row]),
            label=int(item["label"])
            if "label" in item.index and item["label"] == item["label"]
            else -1,
            correct=int(activity.correct[row]),
            activation=float(activity.activation[row, column]),
            firing_rate=float(activity.firing_rate[row, column]),
            thumbnail=self.thumbnails.get(item_id),
        )

    @functools.cached_property
    def _overall(self) -> tuple[np.ndarray, np.ndarray]:
        activity = self.activity
        total = max(float(activity.tokens.astype(np.float64).sum()), 1.0)
        return activity.activation.max(axis=0), activity.fire_count.sum(axis=0) / total

    def neuron_pages(self) -> list[NeuronPage]:
        by_neuron = choices_by_neuron(self.choices)
        peak, rate = self._overall
        profile = self.profile
        pages = []
        for column, (layer, neuron) in enumerate(self.activity.neurons.tolist()):
            rows = [
                {
                    "culture": culture,
                    "items": int(profile.items[c]),
                    "mean_activation": float(profile.activation[c, column]),
                    "mean_activation_lo": float(profile.activation_lo[c, column]),
                    "mean_activation_hi": float(profile.activation_hi[c, column]),
                    "firing_rate": float(profile.firing[c, column]),
                    "firing_rate_lo": float(profile.firing_lo[c, column]),
                    "firing_rate_hi": float(profile.firing_hi[c, column]),
                }
                for c, culture in enumerate(profile.cultures)
            ]
            pages.append(
                NeuronPage(
                    layer=layer,
                    neuron=neuron,
                    choices=list(by_neuron.get((layer, neuron), [])),
                    max_activation=float(peak[column]),
                    firing_rate=float(rate[column]),
                    profile=rows,
                    top=[self._example(r, column) for r in self.top[:, column]],
                    bottom=[self._example(r, column) for r in self.bottom[:, column]],
                )
            )
        return pages

    def sets(self) -> dict[str, dict[str, set[tuple[int, int]]]]:
        """selector -> culture -> its chosen (layer, neuron) set."""
        out: dict[str, dict[str, set[tuple[int, int]]]] = {s: {} for s in self.selectors}
        for c in self.choices:
            out[c.selector].setdefault(c.culture, set()).add((c.layer, c.neuron))
        return out

    def pair_overlaps(self) -> dict[tuple[str, str], dict[str, list[tuple[int, int]]]]:
        """(culture a, culture b) -> selector -> the neurons both chose, for pairs sharing any."""
        pairs: dict[tuple[str, str], dict[str, list[tuple[int, int]]]] = {}
        for selector, by_culture in self.sets().items():
            for a, b in combinations(sorted(by_culture), 2):
                shared = sorted(by_culture[a] & by_culture[b])
                if shared:
                    pairs.setdefault((a, b), {})[selector] = shared
        return dict(sorted(pairs.items()))
