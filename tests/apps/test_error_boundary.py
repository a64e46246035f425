"""The one error boundary (``apps/cli.friendly_errors``, issue 22): bad input is one line and
exit 2; any other exception is a bug of ours, shown with its traceback, a line that says so,
and exit 1 (never dressed up as the user's mistake)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hardening import TINY, cli_run, error_lines, running_runs

from ohlora_eval.apps import cli, screen
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.pipeline import judge


def _job_logs(root: Path) -> list[Path]:
    return sorted((root / "hydra").rglob("*.log"))


def test_a_bug_during_a_run_is_a_traceback_and_exit_1(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("boom")  # a programming error, where the screening judges

    monkeypatch.setattr(judge, "per_vector_table", broken)
    root = tmp_path / "mlruns"
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={root}"])
    assert code == 1, err
    assert "Traceback (most recent call last)" in err and "KeyError: 'boom'" in err, err
    assert err.rstrip("\n").endswith(cli.BUG_LINE), err
    assert "ohlora_eval: error:" not in err, err
    assert running_runs(root) == []  # the run ended (FAILED), as after any error
    (log,) = _job_logs(root)
    assert "KeyError: 'boom'" in log.read_text() and cli.BUG_LINE in log.read_text()


@pytest.mark.parametrize(
    "override, message",
    [
        ("cutoff.eyes=1.5", "cutoff.eyes=1.5 is outside [0, 1]"),
        ("sampling.n_vectors=-1", "sampling.n_vectors=-1 must be an integer in [1, "),
    ],
)
def test_a_bad_value_is_one_line_and_exit_2(tmp_path, override, message):
    root = tmp_path / "mlruns"
    code, err = cli_run(screen.main, [*TINY, f"tracking.root={root}", override])
    assert code == 2, err
    assert "Traceback" not in err and cli.BUG_LINE not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("ohlora_eval: error: "), err
    assert message in lines[0], err
    (log,) = _job_logs(root)  # the job's log has the line too
    assert lines[0] in log.read_text()


def _wrapped(exc: BaseException):
    def task(cfg=None):
        raise exc

    return cli.friendly_errors(task)


@pytest.mark.parametrize(
    "exc",
    [ValueError("x=1 looks wrong"), KeyError("x"), FileNotFoundError("a.csv"), TypeError("t")],
)
def test_builtin_errors_are_bugs_not_bad_input(exc, capsys):
    with pytest.raises(SystemExit) as out:
        _wrapped(exc)()
    err = capsys.readouterr().err
    assert out.value.code == 1
    assert f"{type(exc).__name__}:" in err and err.rstrip("\n").endswith(cli.BUG_LINE)
    assert error_lines(err) == []


@pytest.mark.parametrize(
    "exc", [UserError("run_id=x: no such\n run"), ConfigError("sampling.seed=-1 is bad")]
)
def test_our_errors_are_one_line(exc, capsys):
    with pytest.raises(SystemExit) as out:
        _wrapped(exc)()
    err = capsys.readouterr().err
    assert out.value.code == 2
    assert err == f"ohlora_eval: error: {' '.join(str(exc).split())}\n"


def test_no_fitted_directions_and_no_fitting_is_bad_input(tmp_path):
    root = tmp_path / "mlruns"
    code, err = cli_run(
        screen.main, [*TINY, f"tracking.root={root}", "directions.fit_if_missing=false"]
    )
    assert code == 2, err
    assert error_lines(err) and "directions.fit_if_missing=true" in error_lines(err)[0], err
