"""Dose-response table and figure from sweep matrices, and Table 2 per condition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from culture_neurons.analysis.dose_response import dose_response_table, plot_dose_response
from culture_neurons.statistics import CI_LEVEL

CULTURES = ["AAA", "BBB", "CCC"]


def sweep_matrix(
    cells_by_ratio: dict[float, np.ndarray], intervention: str = "zero", sources=CULTURES
):
    rows = []
    for ratio, cells in cells_by_ratio.items():
        for i, source in enumerate(sources):
            for j, target in enumerate(CULTURES):
                rows.append({
                    "intervention": intervention, "ratio": ratio, "selector": "x",
                    "source": source, "target": target,
                    "delta": float(cells[i, j]), "flip_rate": float(abs(cells[i, j]) * 2),
                })  # fmt: skip
    return pd.DataFrame(rows)


def test_self_cross_gap_per_ratio_against_a_hand_computation():
    low = np.array([[-6.0, -1.0, 0.0], [-2.0, -9.0, -1.0], [0.0, 1.0, -3.0]])
    table = dose_response_table({"cas": sweep_matrix({0.05: low / 3, 0.1: low})}, n_boot=200)
    cas = table[(table["line"] == "CAS") & (table["metric"] == "delta") & (table["ratio"] == 0.1)]
    got = cas.set_index("setting")["value"]
    self_ = np.mean([-6, -9, -3])
    cross = np.mean([np.mean([-1, 0]), np.mean([-2, -1]), np.mean([0, 1])])
    assert got["self"] == pytest.approx(self_) and got["cross"] == pytest.approx(cross)
    assert got["gap"] == pytest.approx(self_ - cross)
    # The 0.05 row is a third of the 0.1 row: the table is per ratio, not pooled.
    small = table[
        (table["line"] == "CAS") & (table["metric"] == "delta") & (table["ratio"] == 0.05)
    ]
    assert small.set_index("setting")["value"]["self"] == pytest.approx(self_ / 3)
    # Intervals: a percentile bootstrap over the three source cultures' gaps.
    gaps = np.array([-6 - (-0.5), -9 - (-1.5), -3 - 0.5])
    gap_row = cas.set_index("setting").loc["gap"]
    assert gaps.min() <= gap_row["lo"] <= gap_row["value"] <= gap_row["hi"] <= gaps.max()
    assert gap_row["lo"] < gap_row["hi"] and CI_LEVEL == 95.0


def test_seeds_form_one_line_and_rnd_has_only_self():
    ones = np.ones((3, 3))
    sweeps = {
        "rnd-s0": sweep_matrix({0.1: -ones[:1]}, sources=["ALL"]),
        "rnd-s1": sweep_matrix({0.1: -3 * ones[:1]}, sources=["ALL"]),
        "rnd_matched-s0": sweep_matrix({0.1: -ones}),
        "rnd_matched-s1": sweep_matrix({0.1: -2 * ones}),
    }
    table = dose_response_table(sweeps, n_boot=50)
    assert set(table["line"]) == {"RND", "RND-LM"}
    rnd = table[(table["line"] == "RND") & (table["metric"] == "delta")]
    assert list(rnd["setting"]) == ["self"] and rnd["value"].item() == pytest.approx(-2.0)
    assert rnd["n_instances"].item() == 2 and rnd["n_sources"].item() == 3  # targets
    lm = table[(table["line"] == "RND-LM") & (table["metric"] == "delta")].set_index("setting")
    assert lm.loc["self", "value"] == pytest.approx(-1.5) and lm.loc[
        "gap", "value"
    ] == pytest.approx(0)


def test_interventions_stay_apart_and_the_figure_draws_each_line(tmp_path):
    cells = np.diag([-4.0, -4.0, -4.0])
    matrix = pd.concat(
        [sweep_matrix({0.1: cells, 0.2: 2 * cells}), sweep_matrix({0.1: -cells}, "scale-x2")]
    )
    table = dose_response_table({"cas": matrix}, n_boot=20)
    zero = table[
        (table["intervention"] == "zero")
        & (table["setting"] == "self")
        & (table["metric"] == "delta")
    ]
    scaled = table[
        (table["intervention"] == "scale-x2")
        & (table["setting"] == "self")
        & (table["metric"] == "delta")
    ]
    assert list(zero["value"]) == [-4.0, -8.0] and list(scaled["value"]) == [4.0]
    paths = plot_dose_response(table[table["intervention"] == "zero"], "t", tmp_path / "dose")
    assert [p.suffix for p in paths] == [".png", ".pdf"]


def test_each_site_gets_its_own_figure_and_the_decoders_rows_are_as_alone(tmp_path):
    from culture_neurons.stages.dose_response import dose_response_stage

    cells = np.diag([-4.0, -2.0, -3.0])
    paths = {}
    for name, scale in (("cas", 1.0), ("vision_mlp.cas", 2.0), ("attention_heads.mad", 0.5)):
        paths[name] = tmp_path / f"{name}.parquet"
        sweep_matrix({0.1: scale * cells, 0.2: 2 * scale * cells}).to_parquet(paths[name])
    alone = dose_response_stage("m", [("cas", paths["cas"])], tmp_path / "alone.csv",
                                tmp_path / "alone", n_boot=30)  # fmt: skip
    both = dose_response_stage("m", list(paths.items()), tmp_path / "both.csv",
                               tmp_path / "both", n_boot=30)  # fmt: skip
    decoder = both[~both["line"].str.contains(r"\(")].reset_index(drop=True)
    pd.testing.assert_frame_equal(decoder, alone)
    assert set(both["line"]) == {"CAS", "CAS (vision_mlp)", "MAD (attention_heads)"}
    figures = sorted(p.name for p in (tmp_path / "both").iterdir())
    assert figures == sorted(
        f"{prefix}dose_response_zero{ext}"
        for prefix in ("", "vision_mlp_", "attention_heads_")
        for ext in (".png", ".pdf")
    )
