"""Statistics and judging against the real Oh-LoRA v3.1 results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import conf_grid, reference_file

from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import grid_points

OHLORA_CUTOFFS = {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(reference_file("test_result_mapping_split1_160K_final_mixed.csv"))


def test_reference_statistics_reproduced_exactly(reference):
    rejudged = judge.judge(reference, OHLORA_CUTOFFS)
    table = reference.assign(passed=rejudged["passed"], fail_reason=rejudged["fail_reason"])
    got = judge.statistics(table).iloc[0]
    expected = pd.read_csv(
        reference_file("test_statistics_mapping_split1_160K_final_mixed.csv"), index_col=0
    ).iloc[0]
    assert int(got["passed"]) == 43 == int(expected["passed"])
    assert got["passed_ratio"] == 0.0215 == expected["passed_ratio"]
    for col, want in [
        ("eyes_corr_mean", 0.9198),
        ("mouth_corr_mean", -0.8159),
        ("pose_corr_mean", -0.8372),
        ("sum_abs_corr_mean", 2.5732),
    ]:
        assert got[col] == want == expected[col], col
    # The file's own verdicts agree with ours, row by row.
    assert (rejudged["passed"] == reference["passed"]).all()


@pytest.mark.parametrize("eyes, passed", [(0.88, 62), (0.90, 57), (0.92, 43), (0.94, 31)])
def test_reference_eyes_cutoff_sweep(reference, eyes, passed):
    verdict = judge.judge(reference, {**OHLORA_CUTOFFS, "eyes": eyes})
    assert int((verdict["passed"] == "O").sum()) == passed


def test_pearson_matches_numpy_and_flags_constant_series():
    rng = np.random.default_rng(0)
    x = grid_points(conf_grid())[:, 1]
    y = rng.normal(size=(5, 50)) + x
    y[2] = 3.0  # a constant measured series
    r = judge.pearson_rows(x, y)
    for i in (0, 1, 3, 4):
        assert r[i] == pytest.approx(np.corrcoef(x, y[i])[0, 1], abs=1e-12)
    assert np.isnan(r[2])


def test_undefined_correlation_fails_with_reason_never_passes():
    corr = np.array([[np.nan, 0.99, 0.99], [0.95, 0.95, 0.95], [0.95, 0.5, -0.2]])
    table = judge.per_vector_table(corr, OHLORA_CUTOFFS)
    assert list(table["passed"]) == ["X", "O", "X"]
    assert "eyes: correlation undefined" in table.loc[0, "fail_reason"]
    assert table.loc[1, "fail_reason"] == ""
    assert "mouth |r|=0.5000 < 0.88" in table.loc[2, "fail_reason"]
    assert "pose |r|=0.2000 < 0.88" in table.loc[2, "fail_reason"]
    m = judge.run_metrics(table)
    assert m["passed"] == 1 and m["eyes_pass_rate"] == pytest.approx(2 / 3)
    assert m["mouth_pass_rate"] == pytest.approx(2 / 3)
    assert m["eyes_undefined"] == 1


@pytest.mark.parametrize("bad", [1.5, -0.1])
def test_cutoff_outside_unit_interval_is_refused(bad):
    with pytest.raises(ValueError, match=r"cutoff\.mouth=.* outside \[0, 1\]"):
        judge.check_cutoffs({**OHLORA_CUTOFFS, "mouth": bad})


def test_grid_is_the_ohlora_grid_and_needs_two_weights():
    g = grid_points(conf_grid())
    assert g.shape == (50, 3)
    assert tuple(g[0]) == (-1.2, -1.8, -1.8) and tuple(g[-1]) == (1.2, 1.8, 0.6)
    assert tuple(g[1]) == (-1.2, -1.8, -1.2)  # pose varies fastest
    with pytest.raises(ValueError, match=r"sampling\.grid\.pose needs at least 2 distinct"):
        grid_points({**conf_grid(), "pose": [0.5, 0.5]})
