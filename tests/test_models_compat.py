"""The version workarounds in `models.compat` pick the spelling the installed release takes."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import transformers
from packaging.version import Version
from torch import nn

from culture_neurons.models import compat


class _NewDecoder(nn.Module):
    def forward(self, inputs_embeds=None, cache=None):  # transformers >= 5.25
        return inputs_embeds


class _OldDecoder(nn.Module):
    def forward(self, inputs_embeds=None, past_key_values=None):  # earlier releases
        return inputs_embeds


def test_the_cache_goes_under_the_name_the_decoder_takes():
    cache = object()
    assert compat.cache_argument(_NewDecoder(), cache) == {"cache": cache}
    assert compat.cache_argument(_OldDecoder(), cache) == {"past_key_values": cache}


def test_cache_layers_of_a_cache_without_them_are_none():
    assert compat.cache_layers(SimpleNamespace()) == []
    assert compat.cache_layers(SimpleNamespace(layers=("a", "b"))) == ["a", "b"]


def test_the_recorded_commit_is_read_where_old_releases_keep_it():
    commit = "0" * 40
    assert compat.recorded_commit(SimpleNamespace(config=SimpleNamespace(_commit_hash=commit)))
    assert compat.recorded_commit(SimpleNamespace(config=SimpleNamespace())) is None
    assert compat.recorded_commit(None) is None


def test_dtype_keyword_and_out_of_memory_error_follow_the_installed_releases():
    new = Version(transformers.__version__).release >= (4, 56)
    assert ("dtype" if new else "torch_dtype") == compat.DTYPE_KWARG
    assert issubclass(torch.cuda.OutOfMemoryError, compat.OutOfMemoryError)
