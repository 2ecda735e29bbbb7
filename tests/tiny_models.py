# ruff: noqa: E402
"""Tiny offline checkpoints of every model family as pytest fixtures.

Test modules load this as a plugin (`pytest_plugins = ["tests.tiny_models"]`) and take inputs from
`culture_neurons.models.tiny`, or items of varied prompt lengths from `tests.varied_inputs`
(`varied_evaluation`). The checkpoints are built once per session into a temporary
directory and loaded back through `load_adapter`, the path a hub checkpoint takes. Nothing here
touches the network.
"""

from __future__ import annotations

import os

# Set before huggingface_hub is first imported (it reads the variable once): a stray hub call
# then fails at once instead of reaching for the network.
os.environ["HF_HUB_OFFLINE"] = "1"

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from culture_neurons.models import ModelAdapter, load_adapter
from culture_neurons.models.tiny import TINY_FAMILIES, build_tiny_model
from tests.varied_inputs import varied_rows

TinyLoader = Callable[..., ModelAdapter]


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Run a module's tests on one intra-op thread, restoring the setting afterwards.

    Toy-sized matrices gain nothing from threads, and on a busy two-core machine OpenMP's
    waiting made these tests about five times slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family -> directory of its tiny checkpoint, built on first use."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny_{family}"))
        return built[family]

    return get


@pytest.fixture(scope="session")
def load_tiny(tiny_checkpoint: Callable[[str], Path]) -> TinyLoader:
    """(family, **spec overrides) -> a fresh float32 CPU adapter of a tiny checkpoint."""

    def load(family: str, *, checkpoint: str | None = None, **spec: Any) -> ModelAdapter:
        path = tiny_checkpoint(checkpoint or family)
        return load_adapter(
            {"family": family, "path": str(path), "dtype": "float32", "device_map": "cpu", **spec}
        )

    return load


@pytest.fixture(scope="session", params=TINY_FAMILIES)
def tiny_adapter(request: pytest.FixtureRequest, load_tiny: TinyLoader) -> ModelAdapter:
    """One adapter per family, shared by the session: tests must leave it as they found it."""
    return load_tiny(request.param)


@pytest.fixture(scope="session")
def varied_evaluation() -> pd.DataFrame:
    """`varied_rows()`: evaluation rows whose prompts all differ in token count."""
    return varied_rows()
