"""Property test: any value of any evaluation setting ends in exit 0, or exit 2 with one line
that names the setting; never a traceback, never a run left RUNNING (issue 14).

Each example is a real ``python -m ohlora_eval ...`` command line run in-process through the
command's entry point (Hydra composes it as in a terminal). Valid values are kept small and
the directions fitted once, so the valid examples are real runs that take about a second.
Derandomized: CI tries the same examples every time.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening import TINY, cli_run, error_lines, running_runs

from ohlora_eval.apps import screen

EXAMPLES = 40

# Values that should be refused (or, for some fields, happen to be fine): the junk a user
# types by mistake or a script produces.
_word = st.text(alphabet="abcxyz_-.0123456789", min_size=1, max_size=8)
_junk_scalar = st.one_of(
    _word,
    st.just("null"),
    st.booleans().map(lambda b: str(b).lower()),
    st.integers(-(10**15), 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda x: repr(x)),
    st.sampled_from(["''", "[", "]", "{", "a=b", "${x}", "[1,", "{a: 1}", "-", "1e400"]),
)
_junk = st.one_of(
    _junk_scalar, st.lists(_junk_scalar, max_size=3).map(lambda v: f"[{','.join(v)}]")
)


def _num(low: float, high: float) -> st.SearchStrategy[str]:
    return st.floats(low, high, allow_nan=False).map(lambda x: repr(round(x, 4)))


# Every field of cutoff, sampling, directions, review and layer, with its valid values
# (small or the already-fitted ones, so a valid example is a quick real run).
VALID: dict[str, st.SearchStrategy[str]] = {
    "cutoff.eyes": _num(0, 1),
    "cutoff.mouth": _num(0, 1),
    "cutoff.pose": _num(0, 1),
    "sampling.n_vectors": st.integers(1, 6).map(str),
    "sampling.seed": st.integers(0, 3).map(str),
    "sampling.vectors_per_batch": st.integers(1, 8).map(str),
    "sampling.grid.eyes": st.sampled_from(["[-1.2,1.2]", "[-1,0,1]", "[0.5,-0.5]"]),
    "sampling.grid.mouth": st.sampled_from(["[-1.8,0,1.8]", "[-1,1]"]),
    "sampling.grid.pose": st.sampled_from(["[-1.8,0,1.8]", "[1,-1]"]),
    "directions.n": st.just("1500"),
    "directions.ratio": st.just("0.2"),
    "directions.method": st.just("gradient"),
    "directions.grouped": st.just("true"),
    "directions.seed": st.just("1000003"),
    "directions.val_fraction": st.just("0.2"),
    "directions.svm_c": st.just("1.0"),
    "directions.run_id": st.just("null"),
    "directions.fit_if_missing": st.just("true"),
    "directions.gradient.hidden": st.just("[256,64]"),
    "directions.gradient.epochs": st.just("3"),
    "directions.gradient.lr": st.just("0.001"),
    "directions.gradient.batch_size": st.just("256"),
    "directions.gradient.weight_decay": st.just("0.0001"),
    "review.rank_by": st.sampled_from(["sum_abs_corr", "'sum_abs_corr - 0.5*max_leak'"]),
    "review.n_boot": st.integers(2, 30).map(str),
    "review.ci_level": _num(0.5, 0.99),
    "review.seed": st.integers(0, 5).map(str),
    "review.face_box": st.just("[-0.5,-0.6,0.5,0.7]"),
    "review.analysis_size": st.integers(8, 40).map(str),
    "review.page": st.booleans().map(lambda b: str(b).lower()),
    "review.max_cards": st.sampled_from(["null", "0", "3"]),
    "review.near_miss_margin": _num(0, 0.2),
    "layer": st.just("mapping_split1"),
}


@st.composite
def overrides(draw) -> list[tuple[str, str]]:
    keys = draw(st.lists(st.sampled_from(sorted(VALID)), min_size=1, max_size=3, unique=True))
    return [(k, draw(st.one_of(VALID[k], _junk))) for k in keys]


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "mlruns"
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={root}"])  # fit the directions once
    assert code == 0, err
    return root


def test_any_value_is_a_run_or_one_line_naming_the_field(fuzz_store):
    tally = {"ran": 0, "refused": 0}
    start = time.perf_counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(overrides())
    def check(pairs: list[tuple[str, str]]) -> None:
        argv = [*TINY, f"tracking.root={fuzz_store}", *(f"{k}={v}" for k, v in pairs)]
        code, err = cli_run(screen.main, argv)
        assert "Traceback" not in err, err
        assert code in (0, 2), (code, err)
        if code == 2:
            lines = error_lines(err)
            assert len(lines) == 1, err
            named = [k for k, _ in pairs if k in lines[0]]
            assert named, (pairs, lines[0])
            tally["refused"] += 1
        else:
            tally["ran"] += 1
        assert running_runs(fuzz_store) == []

    check()
    took = time.perf_counter() - start
    print(f"\nconfig fuzz: {sum(tally.values())} examples, {tally} in {took:.1f} s")
    assert tally["ran"] and tally["refused"]  # both kinds were exercised
