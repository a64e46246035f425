"""The cutoff frontier's computation (review/frontier.py) against plain loops over triples."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest

from ohlora_eval.review import frontier as F

# Three grids of different lengths, so that an axis mixed up cannot go unnoticed.
GRIDS = (
    F.cutoff_grid(0.80, 0.90, 0.02),
    F.cutoff_grid(0.82, 0.90, 0.02),
    F.cutoff_grid(0.84, 0.90, 0.02),
)


def _data(seed: int, n: int = 60, m: int = 25, k: int = 7):
    rng = np.random.default_rng(seed)
    abs_r = rng.uniform(0.78, 0.95, (n, 3))
    # values exactly on the grid (|r| == cutoff passes), undefined r and unmeasured faces
    abs_r[::5, 0] = GRIDS[0][rng.integers(0, len(GRIDS[0]), len(abs_r[::5]))]
    abs_r[::7, 2] = GRIDS[2][2]
    abs_r[3, 1] = np.nan
    valid = np.ones(n, dtype=bool)
    valid[[4, 11]] = False
    rows = rng.choice(n, m, replace=False)
    reps = np.clip(abs_r[rows][:, None, :] + rng.normal(0, 0.03, (m, k, 3)), 0, 1)
    reps[:, ::3, 1] = abs_r[rows][:, None, 1]  # repetitions tied with the run's own r
    reps[0, 0, 0] = np.nan
    rep_valid = rng.uniform(size=(m, k)) > 0.1
    own = {"eyes": GRIDS[0][2], "mouth": GRIDS[1][1], "pose": GRIDS[2][1]}
    return abs_r, valid, F.Repetitions(rows, reps, own, rep_valid)


def _brute(abs_r, valid, reps, cut, at):
    """One triple, vector by vector, repetition by repetition: passed; re-passing the
    re-test's cutoffs (expected, reliable); re-passing the triple (expected, reliable);
    passing but not re-tested."""
    passed = expected = reliable = here = reliable_here = untested = 0
    tested = {int(r): i for i, r in enumerate(reps.rows)}
    own = [reps.cutoffs[p] for p in ("eyes", "mouth", "pose")]

    def share(i, c):
        hits = sum(
            1
            for t in range(reps.k)
            if reps.valid[i, t] and all(reps.abs_r[i, t, p] >= c[p] for p in range(3))
        )
        return hits / reps.k

    for v in range(len(abs_r)):
        ok = valid[v] and all(abs_r[v, p] >= cut[p] for p in range(3))  # NaN >= c is False
        if not ok:
            continue
        passed += 1
        if v not in tested:
            untested += 1
            continue
        p_own, p_here = share(tested[v], own), share(tested[v], cut)
        expected += p_own
        reliable += p_own >= at
        here += p_here
        reliable_here += p_here >= at
    return passed, expected, reliable, here, reliable_here, untested


@pytest.mark.parametrize("seed", [0, 1])
def test_every_triple_equals_a_loop_over_vectors_and_repetitions(seed):
    abs_r, valid, reps = _data(seed)
    got = F.frontier(abs_r, GRIDS, valid, reps, reliable_at=0.7)
    assert got.passed.shape == tuple(len(g) for g in GRIDS)
    checked = 0
    for idx in itertools.product(*(range(len(g)) for g in GRIDS)):
        cut = [GRIDS[p][idx[p]] for p in range(3)]
        passed, expected, reliable, here, reliable_here, untested = _brute(
            abs_r, valid, reps, cut, 0.7
        )
        assert got.passed[idx] == passed, (idx, cut)
        assert got.expected[idx] == pytest.approx(expected, abs=1e-12)
        assert got.reliable[idx] == reliable
        assert got.expected_here[idx] == pytest.approx(here, abs=1e-12)
        assert got.reliable_here[idx] == reliable_here
        assert got.not_retested[idx] == untested
        one = F.judge_at(abs_r, dict(zip(F.PROPERTIES, cut)), valid, reps, 0.7)
        assert one == pytest.approx(
            {
                **dict(zip(F.PROPERTIES, cut)),
                "passed": passed,
                "expected_re_pass": expected,
                "reliable": reliable,
                "expected_here": here,
                "reliable_here": reliable_here,
                "not_retested": untested,
            }
        )
        checked += passed > 0
    assert checked > 10  # the data leave vectors at many triples
    assert got.passed.max() > got.passed.min() and got.reliable_here.max() > 0
    # the two readings differ: stricter triples fail repetitions that pass the run's cutoffs
    assert (got.expected_here != got.expected).any()


def test_counts_without_a_retest_and_the_table():
    abs_r, valid, _ = _data(2)
    got = F.frontier(abs_r, GRIDS, valid)
    assert not got.has_retest and got.expected is None
    table = got.table()
    assert len(table) == got.passed.size
    assert list(table.columns) == ["eyes", "mouth", "pose", "passed", "strictness", "pareto"]
    for _, row in table.sample(20, random_state=0).iterrows():
        cut = [row.eyes, row.mouth, row.pose]
        none = F.Repetitions(np.array([], int), np.zeros((0, 1, 3)), dict(zip(F.PROPERTIES, cut)))
        assert row.passed == _brute(abs_r, valid, none, cut, 1)[0]


def test_the_grid_holds_the_configured_cutoffs_exactly():
    grid = F.cutoff_grid(0.80, 0.98, 0.01)
    assert len(grid) == 19 and grid[0] == 0.80 and grid[-1] == 0.98
    assert 0.92 in grid and 0.88 in grid  # the same floats as cutoff.eyes=0.92
    assert list(F.cutoff_grid(0.5, 0.5, 0.1)) == [0.5]


def test_pareto_front_is_what_no_other_point_beats():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 12, 300).astype(float)
    y = rng.integers(0, 9, 300).astype(float)
    valid = rng.uniform(size=300) > 0.2
    front = F.pareto_front(x, y, valid)
    for i in range(300):
        beaten = any(
            valid[j] and x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i])
            for j in range(300)
        )
        assert front[i] == (valid[i] and not beaten), i


def test_strictest_is_the_largest_sum_that_still_leaves_want():
    abs_r, valid, reps = _data(4)
    got = F.frontier(abs_r, GRIDS, valid, reps)
    for want in (1, 5, 20):
        best = F.strictest(got, want)
        ok = np.argwhere(got.passed >= want)
        if not len(ok):
            assert best is None
            continue
        sums = [round(sum(GRIDS[p][i[p]] for p in range(3)), 9) for i in ok]
        assert got.strictness()[best] == max(sums)
        assert got.passed[best] >= want
    assert F.strictest(got, 10**6) is None
    best = F.most_expected(got)
    known = (got.passed > 0) & (got.not_retested == 0)
    assert got.expected[best] == got.expected[known].max() and known[best]


_PLOTS = """
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from ohlora_eval.formats.pictures import summary_plot
from ohlora_eval.review import frontier as F
from ohlora_eval.review.frontier_plot import plot
from ohlora_eval.tracking.sweep_table import plot_sweep

out = Path(sys.argv[1])
abs_r = np.random.default_rng(0).uniform(0.7, 1.0, (300, 3))
front = F.frontier(abs_r, [F.cutoff_grid(0.8, 0.98, 0.02)] * 3)
own = F.judge_at(abs_r, dict(eyes=0.9, mouth=0.9, pose=0.9))
plot(front, out / "frontier.png", own, {"strictest": F.strictest(front, 5)}, "t", 5)
pv = pd.DataFrame({f"{p}_corr": abs_r[:, i] for i, p in enumerate(F.PROPERTIES)})
pv = pv.assign(sum_abs_corr=abs_r.sum(axis=1), passed=np.where(abs_r.min(axis=1) > 0.9, "O", "X"))
summary_plot(pv, dict(eyes=0.9, mouth=0.9, pose=0.9), out / "summary.png")
table = pd.DataFrame({"job": [0, 1], "cutoff.eyes": [0.9, 0.8], "passed": [3, 9]})
plot_sweep(table.assign(pass_rate=table["passed"] / 300), out / "sweep_comparison.png")
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_the_plots_leave_the_backend_and_pyplot_alone(tmp_path):
    """frontier.png, summary.png and sweep_comparison.png are drawn on Figures of their own: a
    process that chose another backend keeps it, and pyplot is never loaded."""
    env = {**os.environ, "MPLBACKEND": "svg"}
    proc = subprocess.run(
        [sys.executable, "-c", _PLOTS, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["svg", "False"]
    for name in ("frontier.png", "summary.png", "sweep_comparison.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
