"""``python -m ohlora_eval.compare a=<run> b=<run>`` and ``ohlora_eval.compare(a, b)``: two
finished runs side by side, from what they stored (nothing is measured)."""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import sys
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
from helpers import compose_app
from mlflow.tracking import MlflowClient

import ohlora_eval
from ohlora_eval.apps import compare as compare_app
from ohlora_eval.apps.rejudge import rejudge
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.errors import UserError
from ohlora_eval.review.compare import Candidates, check_candidates, newcombe_difference
from ohlora_eval.tracking import store as tracking

A_CUT = {"eyes": 0.9, "mouth": 0.85, "pose": 0.7}
B_CUT = {"eyes": 0.85, "mouth": 0.85, "pose": 0.8}  # looser eyes, stricter pose: both ways
A = [f"cutoff.{p}={v}" for p, v in A_CUT.items()]


def _client(store) -> MlflowClient:
    return MlflowClient(tracking.resolve_uri(None, store))


def _table(client: MlflowClient, run_id: str) -> pd.DataFrame:
    path = client.download_artifacts(run_id, "per_vector.csv")
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def _passes(table: pd.DataFrame, cut: dict[str, float]) -> set[int]:
    """The cases whose every |r| clears its cutoff, worked out here from the r values."""
    ok = np.ones(len(table), bool)
    for p, c in cut.items():
        ok &= np.abs(table[f"{p}_corr"].to_numpy(float)) >= c
    return set(table.loc[ok, "case"].astype(int))


def _cfg(store, *overrides: str):
    return compose_app("compare", store, *overrides)


@pytest.fixture(scope="module")
def runs(make_cfg_module, store):
    """A small screening (a) and its re-judge at other cutoffs (b)."""
    a = evaluate(make_cfg_module(*A))
    cut = [f"cutoff.{p}={v}" for p, v in B_CUT.items()]
    b = rejudge(compose_app("rejudge", store, f"run_id={a.run_id}", *cut))
    return a.run_id, b.run_id


def test_a_run_against_its_rejudge(runs, store):
    a, b = runs
    result, text = compare_app.compare(_cfg(store, f"a={a}", f"b={b}"))
    client = _client(store)
    table = _table(client, a)  # the r values are the same in both runs: one table
    in_a, in_b = _passes(table, A_CUT), _passes(table, B_CUT)
    assert in_b - in_a and in_a - in_b, "the cutoffs should move vectors both ways"
    assert result.entered == sorted(in_b - in_a)
    assert result.left == sorted(in_a - in_b)
    assert (result.passed_a, result.passed_b, result.compared) == (len(in_a), len(in_b), 24)
    assert result.candidates.same and "same latents (digest" in result.candidates.how
    assert result.rate.paired
    assert result.rate == newcombe_difference(len(in_a), 24, len(in_b), 24, both=len(in_a & in_b))

    # Each change listed with its r in both runs.
    rows = result.changes.set_index("case")
    for case in in_b ^ in_a:
        r = table.set_index("case").loc[case]
        for p in A_CUT:
            assert rows.loc[case, f"{p}_corr_a"] == rows.loc[case, f"{p}_corr_b"] == r[f"{p}_corr"]
        assert f"| {case} | {'entered' if case in in_b else 'left'} |" in text

    # The settings that differ: the cutoffs and the re-judge's own keys, nothing else.
    differ = dict(zip(result.settings["param"], zip(result.settings["a"], result.settings["b"])))
    assert differ["cutoff.eyes"] == ("0.9", "0.85") and differ["cutoff.pose"] == ("0.7", "0.8")
    assert "cutoff.mouth" not in differ and "sampling.seed" not in differ
    assert differ["run_id"] == (None, a)
    assert result.a.directions_run_id == result.b.directions_run_id is not None

    # Logged to run b as compare/<a>.md, exactly as printed; no CSV when few.
    logged = client.download_artifacts(b, f"compare/{a}.md")
    assert open(logged).read() == text
    assert [x.path for x in client.list_artifacts(b, "compare")] == [f"compare/{a}.md"]
    assert f"| passed | {len(in_a)} of 24 | {len(in_b)} of 24 |" in text


def test_many_changes_go_to_a_csv(runs, store):
    a, b = runs
    result, text = compare_app.compare(_cfg(store, f"a={a}", f"b={b}", "list_max=1"))
    assert not result.listed and len(result.changes) > 1
    client = _client(store)
    csv = pd.read_csv(client.download_artifacts(b, f"compare/{a}_changes.csv"))
    assert sorted(csv.loc[csv["change"] == "entered", "case"]) == result.entered
    assert sorted(csv.loc[csv["change"] == "left", "case"]) == result.left
    assert f"compare/{a}_changes.csv" in text and "| entered |" not in text
    assert f"{len(result.entered)} entered the passed set, {len(result.left)} left it" in text


def test_the_api_returns_what_the_report_says(runs, store):
    a, b = runs
    got = ohlora_eval.compare(a, b, root=store)
    _, text = compare_app.compare(_cfg(store, f"a={a}", f"b={b}"))
    assert got.markdown() == text
    assert (
        f"| passed | {got.passed_a} of {got.compared} | {got.passed_b} of {got.compared} |" in text
    )
    lo, hi = round(100 * got.rate.lo, 2), round(100 * got.rate.hi, 2)
    assert f"95 % CI [{lo:+.2f}, {hi:+.2f}]" in text
    for p, row in got.mean_abs_r.iterrows():
        assert f"| mean \\|r\\| {p} | {row.a:.4f} | {row.b:.4f} |" in text
    # The command's module is ohlora_eval.compare too: importing it keeps the API callable.
    module = importlib.import_module("ohlora_eval.compare")
    assert ohlora_eval.compare is module
    again = ohlora_eval.compare(a, b, root=store)
    assert again.markdown() == got.markdown()


def test_different_seeds_are_refused_in_one_line_and_force_compares_shared_cases(
    runs, store, make_cfg
):
    a, _ = runs
    other = evaluate(make_cfg(*A, "sampling.seed=1", "review.page=false")).run_id
    with pytest.raises(UserError) as err:
        compare_app.compare(_cfg(store, f"a={a}", f"b={other}"))
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"runs {a} and {other} judged different candidate vectors: their")
    assert "latents differ (digest" in line and "sampling.seed 0 vs 1" in line
    assert line.endswith("force=true compares the 24 case numbers they share")

    # As a user meets it: exit 2 and that one line.
    code, stderr = _cli([f"a={a}", f"b={other}", f"tracking.root={store}"])
    assert code == 2 and stderr.strip() == f"ohlora_eval: error: {line}"

    forced, text = compare_app.compare(_cfg(store, f"a={a}", f"b={other}", "force=true"))
    assert forced.forced and not forced.candidates.same and forced.compared == 24
    assert not forced.rate.paired and forced.rate.phi == 0
    assert "NOT the same" in text and "compared the 24 case numbers both runs have" in text
    assert "| sampling.seed | 0 | 1 |" in text


def test_what_cannot_be_compared_is_named(runs, store):
    a, _ = runs
    with pytest.raises(UserError, match=r"^run_id=nosuchrun: no such run in sqlite:"):
        compare_app.compare(_cfg(store, f"a={a}", "b=nosuchrun"))
    with pytest.raises(UserError, match="are the same run"):
        compare_app.compare(_cfg(store, f"a={a}", f"b={a}"))
    with pytest.raises(UserError, match=r"b=<run id> is required"):
        compare_app.compare(_cfg(store, f"a={a}"))


def _cli(argv: list[str]) -> tuple[int, str]:
    err, saved = io.StringIO(), sys.argv
    sys.argv = ["ohlora-eval-compare", *argv]
    code = 0
    try:
        with contextlib.redirect_stderr(err):
            compare_app.main()
    except SystemExit as stop:
        code = stop.code
    finally:
        sys.argv = saved
    return code, err.getvalue()


# --- the interval, by hand --------------------------------------------------------------


@pytest.mark.parametrize(
    "a, m, b, n, lo, hi",
    [  # Newcombe (1998), Stat Med 17:873, Table II, method 10: a/m - b/n
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
        (0, 10, 0, 20, -0.1611, 0.2775),
        (10, 10, 0, 20, 0.6791, 1.0),
    ],
)
def test_the_independent_interval_matches_newcombes_table(a, m, b, n, lo, hi):
    got = newcombe_difference(b, n, a, m)  # ours is run b's rate minus run a's
    assert (round(got.lo, 4), round(got.hi, 4)) == (lo, hi)
    assert not got.paired and got.phi == 0


def _wilson(x: int, n: int) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.975)
    p = x / n
    centre = (2 * x + z * z) / (2 * (n + z * z))
    half = z * math.sqrt(z * z + 4 * x * (1 - p)) / (2 * (n + z * z))
    return centre - half, centre + half


def test_the_paired_interval_by_hand():
    # 100 vectors: 40 pass in both runs, 5 only in a (left), 15 only in b (entered), 40 neither.
    both, only_a, only_b, neither, n = 40, 5, 15, 40, 100
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = _wilson(both + only_a, n)
    lb, ub = _wilson(both + only_b, n)
    phi = (both * neither - only_a * only_b) / math.sqrt(45 * 55 * 55 * 45)
    assert phi == pytest.approx(1525 / 2475, abs=1e-12)  # (40*40 - 5*15) / (45*55)
    lo = (pb - pa) - math.sqrt((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2)
    hi = (pb - pa) + math.sqrt((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2)
    got = newcombe_difference(both + only_a, n, both + only_b, n, both=both)
    assert got.paired and got.phi == pytest.approx(phi, abs=1e-12)
    assert got.difference == pytest.approx(0.10, abs=1e-12)
    assert got.lo == pytest.approx(lo, abs=1e-12) and got.hi == pytest.approx(hi, abs=1e-12)
    # Pairing narrows it: the same counts as independent samples give a wider interval.
    apart = newcombe_difference(both + only_a, n, both + only_b, n)
    assert apart.lo < got.lo and apart.hi > got.hi


def test_candidates_without_a_digest_are_judged_by_cases_and_sampling_params():
    cases = frozenset(range(10))
    same = check_candidates(
        Candidates(None, cases, {"sampling.seed": "0"}), Candidates("ab" * 16, cases, {})
    )
    assert same.same and "no latents digest for a" in same.how
    other = check_candidates(
        Candidates(None, cases, {"sampling.seed": "0"}),
        Candidates(None, cases, {"sampling.seed": "1"}),
    )
    assert not other.same and "sampling.seed 0 vs 1" in other.how
    fewer = check_candidates(Candidates(None, cases, {}), Candidates(None, frozenset(range(8)), {}))
    assert not fewer.same and "10 in a, 8 in b, 8 shared" in fewer.how
