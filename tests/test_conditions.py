"""Ratio sweeps and intervention kinds: config parsing, error messages and the banks."""

from __future__ import annotations

import numpy as np
import pytest

from culture_neurons.ablation.conditions import (
    Intervention,
    banks,
    intervention_selectors,
    parse_interventions,
    parse_ratios,
    ratio_label,
)
from culture_neurons.errors import InputError


def test_ratios_are_sorted_and_include_the_headline():
    assert parse_ratios(0.15, [0.2, 0.05, 0.1]) == [0.05, 0.1, 0.15, 0.2]
    assert parse_ratios(0.15, None) == [0.15]
    assert parse_ratios(0.1, [0.1, 0.2]) == [0.1, 0.2]
    assert ratio_label(0.05) == "r0.05" and ratio_label(1.0) == "r1"


@pytest.mark.parametrize(
    ("ratio", "ratios", "message"),
    [
        (0.1, [0.0, 0.2], r"ratios\[0\] must be a share of neurons in \(0, 1\], got 0.0"),
        (0.1, [1.5], r"ratios\[0\] must be .* got 1.5"),
        (0.1, ["a"], r"ratios\[0\]"),
        (0.1, [True], r"ratios\[0\]"),
        (0.0, [0.1], r"^ratio must be"),
        (0.1, [0.2, 0.2], r"ratios: 0.2 listed more than once"),
    ],
)
def test_bad_ratios_name_the_key(ratio, ratios, message):
    with pytest.raises(InputError, match=message):
        parse_ratios(ratio, ratios)


def test_interventions_default_to_zero_and_put_zero_first():
    assert [i.name for i in parse_interventions(None)] == ["zero"]
    parsed = parse_interventions(
        [
            {"kind": "scale", "factor": 2},
            {"kind": "mean"},
            {"kind": "zero"},
            {"kind": "scale", "factor": 0.5},
        ]
    )
    assert [i.name for i in parsed] == ["zero", "scale-x2", "mean", "scale-x0.5"]
    assert parsed[2].needs_means and not parsed[1].needs_means
    assert parsed[1].spec() == {"kind": "scale", "factor": 2.0}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            [{"kind": "zero"}, {"kind": "invert"}],
            r"interventions\[1\]\.kind: unknown kind 'invert'",
        ),
        (
            [{"kind": "zero"}, {"kind": "scale", "factor": 0}],
            r"interventions\[1\]\.factor must be > 0",
        ),
        ([{"kind": "zero"}, {"kind": "scale", "factor": -2}], r"factor must be > 0 \(got -2\)"),
        (
            [{"kind": "zero"}, {"kind": "scale"}],
            r"interventions\[1\]\.factor: kind scale needs a number",
        ),
        ([{"kind": "zero"}, {"kind": "scale", "factor": 1}], r"factor 1 leaves every neuron"),
        ([{"kind": "zero"}, {"kind": "mean", "factor": 2}], r"only kind scale takes a factor"),
        ([{"kind": "zero"}, {"kind": "zero"}], r"zero listed more than once"),
        ([{"kind": "mean"}], r"must include \{kind: zero\}"),
        ([{"kind": "zero", "selectors": ["cas"]}], r"zero\} runs for every selector"),
        ([{"kind": "zero", "amount": 3}], r"interventions\[0\]: unknown key\(s\) \['amount'\]"),
    ],
)
def test_bad_interventions_name_the_key(entries, message):
    with pytest.raises(InputError, match=message):
        parse_interventions(entries)


def test_intervention_selectors_expand_seeds_and_refuse_unknown_names():
    instances = {"rnd-s0": {}, "rnd-s1": {}, "cas": {}, "lape-strict": {}, "lape": {}}
    runs = intervention_selectors(
        [{"kind": "zero"}, {"kind": "scale", "factor": 2, "selectors": ["rnd", "lape"]}], instances
    )
    assert runs["zero"] == list(instances)
    assert runs["scale-x2"] == ["rnd-s0", "rnd-s1", "lape"]  # not lape-strict
    with pytest.raises(InputError, match=r"interventions\[1\]\.selectors: unknown selector 'mad'"):
        intervention_selectors(
            [{"kind": "zero"}, {"kind": "mean", "selectors": ["mad"]}], instances
        )


def test_banks_of_each_kind_touch_only_selected_neurons():
    rng = np.random.default_rng(0)
    selected = rng.random((3, 2, 5)) < 0.4
    means = rng.normal(size=(2, 5))
    factor, offset = banks(selected, Intervention("zero"))
    assert offset is None and np.array_equal(factor, (~selected).astype(np.float32))
    factor, offset = banks(selected, Intervention("scale", 4.0))
    assert offset is None
    assert np.array_equal(factor, np.where(selected, 4.0, 1.0).astype(np.float32))
    factor, offset = banks(selected, Intervention("mean"), means)
    assert np.array_equal(factor, (~selected).astype(np.float32))
    expected = np.where(selected, means[None], 0.0).astype(np.float32)
    assert np.array_equal(offset, expected) and offset.dtype == np.float32
    with pytest.raises(InputError, match="needs the identification means"):
        banks(selected, Intervention("mean"))
    with pytest.raises(InputError, match="do not fit"):
        banks(selected, Intervention("mean"), means[:, :4])
