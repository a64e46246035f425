"""``python -m ohlora_eval.frontier``: the cutoff frontier of a run, from its stored r."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from helpers import CONF_DIR
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from test_hardening import cli_run, error_lines

from ohlora_eval.apps import frontier as app
from ohlora_eval.apps.retest import retest
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.tracking import store as tracking

PROPS = ("eyes", "mouth", "pose")
LOOSE = ("cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3")  # leaves passed vectors
GRID = {"eyes": [0.3, 0.9, 0.1], "mouth": [0.3, 0.9, 0.1], "pose": [0.2, 0.9, 0.1]}


def _cfg(store, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("frontier", overrides=[f"tracking.root={store}", *overrides])


def _grid_overrides(grid=GRID) -> list[str]:
    return [f"grid.{p}=[{','.join(str(v) for v in grid[p])}]" for p in PROPS]


def _values(spec) -> list[float]:
    lo, hi, step = spec
    return [round(lo + i * step, 10) for i in range(int(round((hi - lo) / step)) + 1)]


@pytest.fixture(scope="module")
def screened(make_cfg_module):
    """A small screening run with more passed vectors than the re-test below re-measures."""
    source = evaluate(make_cfg_module(*LOOSE, "directions.method=svm", "directions.grouped=false"))
    assert (source.per_vector["passed"] == "O").sum() > 4  # some passed vectors not re-tested
    return source


def test_counts_equal_a_loop_over_the_grid(screened, store):
    got = app.frontier(_cfg(store, f"run_id={screened.run_id}", "retest=none", *_grid_overrides()))
    table = screened.per_vector
    r = table[["eyes_corr", "mouth_corr", "pose_corr"]].abs().to_numpy()
    rows = got.table.set_index(["eyes", "mouth", "pose"])
    grids = [_values(GRID[p]) for p in PROPS]
    assert len(rows) == np.prod([len(g) for g in grids])
    for cut in itertools.product(*grids):
        passing = sum(all(r[v, p] >= cut[p] for p in range(3)) for v in range(len(r)))
        assert rows.loc[cut, "passed"] == passing, cut
    # At the run's own cutoffs (on this grid), the count is the run's own verdict.
    own = (0.5, 0.5, 0.3)
    assert rows.loc[own, "passed"] == (table["passed"] == "O").sum() == got.own["passed"]
    assert rows["passed"].max() > rows["passed"].min()  # the grid spans the run's r
    # Logged into the run: the same table, the plot, the printed answer.
    client = MlflowClient(tracking.resolve_uri(None, store))
    logged = pd.read_csv(client.download_artifacts(screened.run_id, "frontier/frontier.csv"))
    pd.testing.assert_frame_equal(logged, got.table, check_dtype=False)
    names = {a.path for a in client.list_artifacts(screened.run_id, "frontier")}
    assert {f"frontier/frontier.{x}" for x in ("csv", "png", "md", "yaml")} <= names
    assert "no re-test" in got.text and "strictest cutoffs leaving >= 20 vectors:" in got.text


def test_expected_re_pass_equals_a_hand_sum(screened, store):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        rcfg = compose(
            "retest",
            overrides=[
                f"tracking.root={store}",
                "tracking.progress=false",
                f"run_id={screened.run_id}",
                "k=2",
                "max_vectors=4",
            ],
        )
    test = retest(rcfg)
    got = app.frontier(_cfg(store, f"run_id={screened.run_id}", "want=2", *_grid_overrides()))
    assert got.retest_run_id == test.run_id  # the run's latest re-test, found by its tag

    # By hand, from the re-test's own files: retest.csv and each repetition's per_vector.csv.
    client = MlflowClient(tracking.resolve_uri(None, store))
    summary = test.table.set_index("case")
    children = client.search_runs(
        [client.get_run(test.run_id).info.experiment_id],
        f"tags.`mlflow.parentRunId` = '{test.run_id}'",
    )
    reps = [
        pd.read_csv(client.download_artifacts(c.info.run_id, "per_vector.csv")).set_index("case")
        for c in children
    ]
    assert len(reps) == 2
    table = screened.per_vector.set_index("case")
    cols = ["eyes_corr", "mouth_corr", "pose_corr"]

    def by_hand(cut):
        """Over the vectors ``cut`` passes: the sum of the re-test's re_pass_prob and how many
        are >= 0.8; the same with each probability judged at ``cut`` from the repetitions'
        r; and how many were not re-tested."""
        expected = reliable = here = reliable_here = untested = 0
        for case, row in table.iterrows():
            if not all(abs(row[c]) >= cut[i] for i, c in enumerate(cols)):
                continue
            if case not in summary.index:
                untested += 1
                continue
            prob = summary.loc[case, "re_pass_prob"]
            expected += prob
            reliable += prob >= 0.8
            hits = sum(
                all(abs(rep.loc[case, c]) >= cut[i] for i, c in enumerate(cols)) for rep in reps
            )
            here += hits / 2
            reliable_here += hits / 2 >= 0.8
        return expected, reliable, here, reliable_here, untested

    rows = got.table.set_index(["eyes", "mouth", "pose"])
    # The run's own cutoffs: the sum of the re-test's own re-pass probabilities.
    own = (0.5, 0.5, 0.3)
    assert got.own["expected_re_pass"] == pytest.approx(summary["re_pass_prob"].sum())
    assert rows.loc[own, "expected_re_pass"] == pytest.approx(summary["re_pass_prob"].sum())
    assert rows.loc[own, "not_retested"] == (table["passed"] == "O").sum() - 4
    assert rows.loc[own, "re_pass_prob_ge_0.8"] == (summary["re_pass_prob"] >= 0.8).sum()
    assert rows.loc[own, "expected_re_pass_at_triple"] == rows.loc[own, "expected_re_pass"]
    for cut in [own, (0.7, 0.5, 0.3), (0.5, 0.8, 0.5), (0.3, 0.3, 0.2), (0.9, 0.9, 0.9)]:
        expected, reliable, here, reliable_here, untested = by_hand(cut)
        assert rows.loc[cut, "expected_re_pass"] == pytest.approx(expected), cut
        assert rows.loc[cut, "re_pass_prob_ge_0.8"] == reliable, cut
        assert rows.loc[cut, "expected_re_pass_at_triple"] == pytest.approx(here), cut
        assert rows.loc[cut, "re_pass_prob_at_triple_ge_0.8"] == reliable_here, cut
        assert rows.loc[cut, "not_retested"] == untested, cut
    assert f"re-test {test.run_id}: 4 vectors x k=2 repetitions at eyes 0.50" in got.text
    assert not got.notes  # the repetitions' r give back the re-test's own counts
    assert "most expected to re-pass" in got.text

    # retest=none ignores it; a re-test run given as the run is refused with the way out
    plain = app.frontier(_cfg(store, f"run_id={screened.run_id}", "retest=none", "log=false"))
    assert plain.retest_run_id is None and "expected_re_pass" not in plain.table
    with pytest.raises(
        UserError, match=f"is a re-test; give the run it re-tested .run_id={screened.run_id}"
    ):
        app.frontier(_cfg(store, f"run_id={test.run_id}"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("want=0", "want=0 must be an integer >= 1"),
        ("want=-3", "want=-3 must be an integer >= 1"),
        ("want=many", "want='many' must be an integer >= 1"),
        ("grid.eyes=[0.9,0.8,0.01]", "grid.eyes=[0.9, 0.8, 0.01]: the highest cutoff 0.8 is below"),
        ("grid.mouth=[0.8,1.2,0.01]", "grid.mouth[1]=1.2 must be a number in [0, 1]"),
        ("grid.pose=[0.8,0.9,0]", "grid.pose[2]=0 must be a number in (0, 1]"),
        ("grid.pose=[0.8,0.9]", "grid.pose=[0.8, 0.9] must be [lowest, highest, step]"),
        ("grid.eyes=[0,1,0.001]", "grid.eyes=[0, 1, 0.001] gives 1001 cutoffs; at most 101"),
        ("reliable=0", "reliable=0 must be a number in (0, 1]"),
    ],
)
def test_bad_want_and_grid_values_are_one_line_config_errors(store, override, message):
    with pytest.raises(ConfigError) as err:
        app.frontier(_cfg(store, "run_id=whatever", override))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_says_it_in_one_line_and_exits_2(tmp_path):
    code, err = cli_run(
        app.main, ["run_id=x", "grid.eyes=[0.9,0.8,0.01]", f"tracking.root={tmp_path}"]
    )
    assert code == 2 and "Traceback" not in err
    assert error_lines(err) == [
        "ohlora_eval: error: grid.eyes=[0.9, 0.8, 0.01]: the highest cutoff 0.8 is below the"
        " lowest 0.9"
    ]
    code, err = cli_run(app.main, ["run_id=nosuch", f"tracking.root={tmp_path}"])
    assert code == 2
    assert error_lines(err) == [
        f"ohlora_eval: error: run_id=nosuch: no such run in sqlite:///{tmp_path}/mlflow.db"
    ]
