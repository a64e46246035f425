"""One run lookup (``tracking.store.finished_run``) for every command that reads a run by id
(rejudge, retest, select/choose, sheets, ``ohlora_eval.per_vector``, ``directions.run_id``):
one wording for a missing, a deleted and an unfinished run, all refused as bad input."""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest
from helpers import free_port
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import ohlora_eval
from ohlora_eval.apps import choose as choose_app
from ohlora_eval.apps import rejudge as rejudge_app
from ohlora_eval.apps import sheets as sheets_app
from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store
from ohlora_eval.tracking.store import finished_run


@pytest.fixture
def runs(tmp_path):
    """A fresh store with a finished, a deleted and a running run: (root, client, ids)."""
    root = tmp_path / "mlruns"
    uri, exp_id = store.setup("ohlora-eval", None, root)
    client = MlflowClient(uri)
    ids = {}
    for name, status in (("good", "FINISHED"), ("deleted", "FINISHED"), ("running", None)):
        run = client.create_run(exp_id, run_name=name)
        if status:
            client.set_terminated(run.info.run_id, status)
        ids[name] = run.info.run_id
    client.delete_run(ids["deleted"])
    return root, client, ids


def _where(root) -> str:
    return f"sqlite:///{root.resolve()}/mlflow.db"


def test_a_good_run_is_returned(runs):
    root, client, ids = runs
    assert finished_run(client, ids["good"]).info.run_id == ids["good"]
    by_uri = finished_run(store.resolve_uri(None, root), ids["good"])  # a URI does as well
    assert by_uri.info.run_name == "good"


def test_a_missing_run_is_named_with_the_store(runs):
    root, client, _ = runs
    for bad in ("nosuch", "../x", ""):
        with pytest.raises(UserError) as err:
            finished_run(client, bad)
        assert str(err.value) == f"run_id={bad}: no such run in {_where(root)}"
    with pytest.raises(UserError, match=r"^directions\.run_id=nosuch: no such run in .*; look"):
        finished_run(client, "nosuch", key="directions.run_id", hint="look there")


def test_a_deleted_run_is_refused(runs):
    _, client, ids = runs
    for finished in (True, False):
        with pytest.raises(UserError) as err:
            finished_run(client, ids["deleted"], finished=finished)
        assert str(err.value) == (
            f"run_id={ids['deleted']} was deleted (restore it in the MLflow UI or pick another run)"
        )


def test_an_unfinished_run_is_refused_unless_the_caller_takes_one(runs):
    _, client, ids = runs
    with pytest.raises(UserError) as err:
        finished_run(client, ids["running"], why="re-judge a finished run")
    assert str(err.value) == (
        f"run_id={ids['running']} did not finish (status RUNNING); re-judge a finished run"
    )
    assert finished_run(client, ids["running"], finished=False).info.status == "RUNNING"


def test_a_store_that_does_not_answer_is_not_a_missing_run(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(MlflowException) as err:
        finished_run(f"http://127.0.0.1:{free_port()}", "abc")
    assert not isinstance(err.value, UserError)
    assert store.unavailable(err.value)


def test_the_python_api_says_the_same(runs):
    root, _, ids = runs
    with pytest.raises(UserError, match=rf"run_id={ids['deleted']} was deleted"):
        ohlora_eval.per_vector(ids["deleted"], root=root)
    with pytest.raises(UserError, match=r"run_id=nosuch: no such run in .*ohlora_eval\.runs\(\)"):
        ohlora_eval.per_vector("nosuch", root=root)


STARTING = "ohlora_eval: starting"  # progress.starting's lines


def _cli(main, argv: list[str]) -> tuple[int, list[str]]:
    """A command's entry point run in-process as from a shell: (exit status, stderr lines)."""
    err, saved = io.StringIO(), sys.argv
    sys.argv = ["ohlora_eval", *argv]
    try:
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as out:
            main()
    finally:
        sys.argv = saved
    lines = err.getvalue().splitlines()  # less a slow start's "ohlora_eval: starting" lines
    return out.value.code, [ln for ln in lines if ln.strip() and not ln.startswith(STARTING)]


def test_the_commands_refuse_in_one_line(runs):
    root, _, ids = runs
    where = f"tracking.root={root}"
    cases = [
        (
            sheets_app.main,
            ["run_id=nosuch", "cases=[0]"],
            f"run_id=nosuch: no such run in {_where(root)}",
        ),
        (
            rejudge_app.main,
            [f"run_id={ids['deleted']}"],
            f"run_id={ids['deleted']} was deleted (restore it",
        ),
        (
            choose_app.main,
            [f"run_id={ids['running']}"],
            f"run_id={ids['running']} did not finish (status RUNNING); choose from",
        ),
    ]
    for main, argv, message in cases:
        code, lines = _cli(main, [*argv, where])
        assert code == 2, lines
        assert len(lines) == 1 and lines[0].startswith(f"ohlora_eval: error: {message}"), lines


def test_a_run_is_read_back_through_one_view(runs):
    """Issue 30 item 2: ``RunView`` reads what a run holds (its params typed: the cutoffs of
    an import, which has no config.yaml), and names what it lacks in one line."""
    from ohlora_eval.tracking.read_back import Cutoffs, RunView

    _, client, ids = runs
    for key, value in {"cutoff.eyes": "0.9", "cutoff.mouth": "0.8", "cutoff.pose": "0.7"}.items():
        client.log_param(ids["good"], key, value)
    client.log_param(ids["good"], "cutoff.identity", "None")
    view = RunView.open(client, ids["good"])
    assert view.cutoffs == Cutoffs(0.9, 0.8, 0.7, None)
    assert view.cutoffs.core() == {"eyes": 0.9, "mouth": 0.8, "pose": 0.7}
    assert RunView.open(client, ids["running"], finished=False).cutoffs is None
    assert [r.run_id for r in view.origins] == [ids["good"]]
    with pytest.raises(UserError, match=rf"^run_id={ids['good']} \(good\) has no per_vector.csv"):
        view.per_vector  # noqa: B018 - reading it is the test
    with pytest.raises(UserError, match=r"has no per_vector.csv, latents.npy and config.yaml"):
        view.config  # noqa: B018


def test_only_the_read_model_reads_mlflow_params():
    """Issue 30 item 2: a run's MLflow params are parsed in ``tracking/read_back.py`` only."""
    package = Path(ohlora_eval.__file__).parent
    readers = [p for p in package.rglob("*.py") if "data.params" in p.read_text()]
    assert [p.relative_to(package).as_posix() for p in readers] == ["tracking/read_back.py"]
