"""Reliability and security, round two (issue 25): each test reproduces one way a hostile
tester lost data, hung, crashed with a traceback or wrote wrong data, and shows the fix.
Commands run in-process through their real entry points (``cli_run``) where they can."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SMALL, clean_env, compose_app, free_port
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from test_hardening import cli_run, error_lines

from ohlora_eval.apps import alias as alias_app
from ohlora_eval.apps import choose as choose_app
from ohlora_eval.apps import screen
from ohlora_eval.apps import select as select_app
from ohlora_eval.apps.build import preflight, set_device
from ohlora_eval.apps.retest import retest
from ohlora_eval.apps.screen import evaluate
from ohlora_eval.apps.select import select
from ohlora_eval.apps.sheets import render_sheets
from ohlora_eval.apps.verify import verify
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.formats.ohlora_results import read_ohlora_results
from ohlora_eval.formats.z_vectors import read_z_table
from ohlora_eval.tracking import aliases, registry
from ohlora_eval.tracking import store as tracking
from ohlora_eval.tracking.results import runs

LOOSE = ["cutoff.eyes=0.5", "cutoff.mouth=0.5", "cutoff.pose=0.3"]


def _client(store) -> MlflowClient:
    uri = tracking.resolve_uri(None, store)
    return MlflowClient(uri, registry_uri=uri)


def _all_runs(store) -> list:
    client = _client(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.fixture(scope="module")
def screened(make_cfg_module):
    res = evaluate(make_cfg_module(*LOOSE))
    passed = res.per_vector.loc[res.per_vector["passed"] == "O", "case"].tolist()
    assert len(passed) >= 3
    return res, passed


# --- 5. numbers that overflow -------------------------------------------------------------


def _z_file(path, rows: list[str], dim: int = 3, case: bool = True) -> str:
    head = (["case"] if case else []) + [str(i) for i in range(dim)]
    path.write_text("\n".join([",".join(head), *rows]) + "\n")
    return str(path)


def test_case_numbers_outside_64_bits_are_refused_not_wrapped(tmp_path):
    path = _z_file(tmp_path / "z.csv", ["1,0.1,0.2,0.3", f"{10**30},0.1,0.2,0.3"])
    with pytest.raises(ValueError, match=r"line 3: the case '1000000000000000000000000000000'"):
        read_z_table(path)
    ok = _z_file(tmp_path / "ok.csv", [f"{2**63 - 1},0.1,0.2,0.3"])
    assert read_z_table(ok)[1].tolist() == [2**63 - 1]
    result = tmp_path / "result.csv"
    result.write_text(
        "case,svm_group_name,passed,eyes_corr,mouth_corr,pose_corr,sum_abs_corr\n"
        f"{10**26},hhhh,O,0.95,0.9,0.9,2.75\n"
    )
    with pytest.raises(ValueError, match="64-bit range: line 2"):
        read_ohlora_results(result, {"eyes": 0.92, "mouth": 0.88, "pose": 0.88})


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("case,0,1,2\n", "has a header but no vectors"),
        ("case,0,1,2\n1,0.1,inf,0.3\n", "line 2 holds inf or NaN"),
        ("case,0,1,2\n1,0.1,0.2,0.3\n2,nan,0.2,0.3\n", "line 3 holds inf or NaN"),
        ("case,0,1,2\n1,0.1,abc,0.3\n", "line 2 holds a value that is not a number"),
        ("case,0,1,2\n1,0.1,1e300,0.3\n", "line 2 holds a value too large for float32"),
    ],
)
def test_bad_z_files_name_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "z.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_z_table(path)
    assert str(path) in str(err.value)


def test_a_z_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "z.csv"
    path.write_bytes(b"case,0,1,2\n1,0.1,\xff\xfe,0.3\n")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        read_z_table(path)


# --- 6. values that passed the checks, then crashed ------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("tracking.experiment=", "tracking.experiment"),
        ("tracking.experiment=../../outside", "tracking.experiment"),
        ("device=tpu", "device"),
        ("review.rank_by=" + "-" * 3000 + "sum_abs_corr", "review.rank_by"),
        ("cache.dir=/proc/ohlora-cache", "cache.dir"),
    ],
)
def test_values_that_crashed_later_are_one_line_before_a_run_opens(tmp_path, override, key):
    store = tmp_path / "mlruns"
    code, err = cli_run(screen.main, [*SMALL, f"tracking.root={store}", override])
    lines = error_lines(err)
    assert code == 2 and len(lines) == 1 and key in lines[0], err
    assert "Traceback" not in err
    assert not _all_runs(store) if (store / "mlflow.db").exists() else True


# --- 8. a device that is not there ----------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_explicit_device_that_is_missing_names_the_key(make_cfg):
    cfg = make_cfg("device=cuda")
    with pytest.raises(ConfigError, match=r"^device=cuda: this machine has no CUDA device"):
        preflight(cfg, OmegaConf.to_container(cfg, resolve=True))
    # verify and sheets replay a recorded config, whose models hold "auto" as a plain value:
    # an explicit device reaches them (and is checked), the recorded "auto" stays as it was.
    rec = make_cfg()
    recorded = OmegaConf.to_container(rec, resolve=True)
    replay = OmegaConf.create(recorded)
    with pytest.raises(ConfigError, match="device=cuda"):
        set_device(replay, "cuda")
    with pytest.raises(ConfigError, match="device='tpu' is not a device"):
        set_device(replay, "tpu")
    set_device(replay, "cpu")
    assert replay.device == "cpu" and replay.generator.device == "cpu"
    assert recorded["generator"]["device"] == "cpu"  # SMALL sets device=cpu; untouched


# --- 4. names and aliases MLflow refuses --------------------------------------------------------


@pytest.mark.parametrize("name", ["a/b", "a:b", "", "  ", "..", "<b>x</b>", "x" * 300])
def test_model_names_mlflow_refuses_are_refused_first(name):
    with pytest.raises(UserError, match=r"^name="):
        aliases.check_model_name(name)


@pytest.mark.parametrize("alias", ["latest", "LATEST", "V3", "v12", "a b", "x" * 300, "", "7"])
def test_aliases_mlflow_refuses_are_refused_first(alias):
    with pytest.raises(UserError, match=r"^alias="):
        aliases.check_alias(alias)


def test_bad_names_leave_no_run_and_no_model(screened, store):
    res, passed = screened
    before = {r.info.run_id for r in _all_runs(store)}
    for bad in ("name=a/b", "name=a:b", "alias=latest", "alias=V3", "alias='a b'"):
        code, err = cli_run(
            select_app.main,
            [f"tracking.root={store}", f"run_id={res.run_id}", f"cases=[{passed[0]}]", bad],
        )
        assert code == 2 and len(error_lines(err)) == 1, (bad, err)
    assert {r.info.run_id for r in _all_runs(store)} == before  # no FAILED run, no model
    code, err = cli_run(alias_app.main, [f"tracking.root={store}", "model=m/1", "alias=latest"])
    assert code == 2 and "reserved" in err


def test_choose_refuses_deleted_and_non_screening_runs(screened, store, make_cfg):
    res, _ = screened
    client = _client(store)
    dir_run = client.get_run(res.run_id).data.tags["directions.run_id"]
    code, err = cli_run(choose_app.main, [f"tracking.root={store}", f"run_id={dir_run}"])
    assert code == 2 and "is a directions run, not a screening" in err, err
    other = evaluate(make_cfg(*LOOSE, "sampling.seed=5"))
    client.delete_run(other.run_id)
    code, err = cli_run(choose_app.main, [f"tracking.root={store}", f"run_id={other.run_id}"])
    assert code == 2 and "was deleted (restore it in the MLflow UI" in err, err
    with pytest.raises(UserError, match=r"was deleted \(restore it in the MLflow UI"):
        render_sheets(compose_app("sheets", store, f"run_id={other.run_id}", "cases=[0]"))


# --- 3. select half-writing the registry --------------------------------------------------------


def test_an_interrupted_select_leaves_a_version_the_next_one_finishes(screened, store, monkeypatch):
    res, passed = screened
    cfg = compose_app("select", store, *SMALL, f"run_id={res.run_id}", f"cases=[{passed[0]}]")
    cfg.name, cfg.note = "cut-off", "picked <b>by hand</b>"
    real_finish = registry._finish

    def cut_off(*args, **kwargs):
        raise KeyboardInterrupt  # SIGTERM right after the version was created

    monkeypatch.setattr(registry, "_finish", cut_off)
    with pytest.raises(KeyboardInterrupt):
        select(cfg)
    client = _client(store)
    (mv,) = client.search_model_versions("name = 'cut-off'")
    assert mv.tags[registry.COMPLETE_TAG] == "false"
    assert mv.tags["source_run_id"] == res.run_id and mv.tags["n_selected"] == "1"  # all tags
    monkeypatch.setattr(registry, "_finish", real_finish)
    # verify finds it and finishes it: alias, description, the source run's tags.
    out = verify(compose_app("verify", store, "model=cut-off/1", "noise_seeds=0"))
    assert out.max_abs_diff == 0
    mv = client.get_model_version("cut-off", "1")
    assert mv.tags[registry.COMPLETE_TAG] == "true"
    assert mv.description == "picked &lt;b&gt;by hand&lt;/b&gt;"  # shown as text in the UI
    assert str(client.get_model_version_by_alias("cut-off", "final").version) == "1"
    assert client.get_run(res.run_id).data.tags["ohlora.selection"] == "cut-off/1"


def test_select_checks_everything_before_writing(screened, store, make_cfg):
    res, passed = screened
    deleted = evaluate(make_cfg(*LOOSE, "sampling.seed=7"))
    _client(store).delete_run(deleted.run_id)
    before = len(_all_runs(store))
    for args, message in [
        ([f"run_id={deleted.run_id}", "cases=[0]"], "was deleted (restore it in the MLflow UI"),
        ([f"run_id={res.run_id}", "cases=[]"], "cases=[] is empty"),
    ]:
        code, err = cli_run(select_app.main, [f"tracking.root={store}", *args])
        assert code == 2 and message in err, err
    assert len(_all_runs(store)) == before


_ENDS_SLOWLY = """
import sys, time
from ohlora_eval.errors import succeeded
succeeded()
class Slow:  # the interpreter's shutdown, slow as with torch and MLflow loaded
    def __del__(self):
        time.sleep(3)
sys.modules["__main__"].keep = Slow()
print("done", flush=True)
"""


def test_a_stop_after_success_exits_zero(tmp_path):
    """Once a command's work is done and printed (``succeeded``), SIGTERM is exit 0, also
    while the interpreter shuts down (issue 32: the tester's SIGTERM in the last second gave
    143: Python restores the default handler during shutdown; an ignored signal stays so)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _ENDS_SLOWLY], cwd=ROOT, stdout=subprocess.PIPE, text=True,
        env={**clean_env(), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.readline().strip() == "done"
    time.sleep(1.0)  # inside Slow.__del__, after the interpreter began to shut down
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_a_stop_while_a_result_is_logged_leaves_the_whole_result(
    screened, store, tmp_path, monkeypatch
):
    """Issue 32 (weak): a kill while frontier/compare logged left a new frontier.png beside
    the old csv/md/yaml. A SIGTERM that arrives after the first file is held until the last
    is logged, then stops the command (before: Stopped after one file)."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from ohlora_eval.apps.cli import _stop_on_signals
    from ohlora_eval.errors import Stopped

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread")
    res, _ = screened
    folder = tmp_path / "result"
    folder.mkdir()
    for name in ("a.csv", "b.png", "c.md"):
        (folder / name).write_text(name)
    one_file = LocalArtifactRepository.log_artifact

    def slow_folder(self, local_dir, artifact_path=None):  # one file at a time, as MLflow
        for i, path in enumerate(sorted(Path(local_dir).iterdir())):
            one_file(self, str(path), artifact_path)
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", slow_folder)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    client = _client(store)
    try:
        _stop_on_signals()
        with pytest.raises(Stopped):
            tracking.log_whole(client, res.run_id, folder, "whole")
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    logged = sorted(Path(a.path).name for a in client.list_artifacts(res.run_id, "whole"))
    assert logged == ["a.csv", "b.png", "c.md"]


# --- 2. the tracking server's database going away ----------------------------------------------


class _Down(http.server.BaseHTTPRequestHandler):
    """A tracking server whose database is gone: every request is answered 503."""

    def _answer(self) -> None:
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "db down"}')

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


def test_a_server_that_stops_answering_is_one_line_within_the_wait(tmp_path):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Down)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**clean_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "ohlora_eval.choose", "run_id=abc", "tracking.store_wait_s=3"],
            cwd=tmp_path,
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        took = time.monotonic() - t0
    finally:
        server.shutdown()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _starting(ln)]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], proc.stderr
    assert "stopped answering" in lines[0] or "cannot be used" in lines[0], lines[0]
    assert took < 45, took  # MLflow's own retries took minutes


def test_a_503_with_an_mlflow_error_body_is_a_store_that_stopped_answering():
    """Once MLflow's retries are spent it may return the server's last 503 as a RestException
    (``TEMPORARILY_UNAVAILABLE: db down``, no "error code 503" in its text): CI saw that one
    end as a bug report. A 4xx answer is not the store going away."""
    from mlflow.exceptions import RestException

    from ohlora_eval.tracking.store import unavailable

    down = RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "db down"})
    assert "answered 503" in unavailable(down)
    missing = RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"})
    assert unavailable(missing) is None


def test_a_store_another_process_keeps_locked_is_one_line_within_the_wait(screened, store):
    """Issue 32 item 4: another process holds ``BEGIN EXCLUSIVE`` on the SQLite store; a
    rejudge with ``tracking.store_wait_s=3`` ends in about that long with one line (before:
    SQLite's fixed 60 s busy timeout, retries on top, then a traceback and the bug line)."""
    import sqlite3

    res, _ = screened
    db = sqlite3.connect(str(store / "mlflow.db"), timeout=30, isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "ohlora_eval.rejudge", f"run_id={res.run_id}",
             f"tracking.root={store}", "tracking.store_wait_s=3", "cutoff.eyes=0.6"],
            cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        db.execute("ROLLBACK")
        db.close()
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not _starting(ln)]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "stayed locked by another process" in lines[0], lines
    assert str(store / "mlflow.db") in lines[0] and "store_wait_s=3" in lines[0], lines[0]
    assert took < 40, took  # start-up (~10 s here) + the 3 s wait, not 60 s and retries


def _damaged(text: str, rows: list[str]) -> bytes:
    """The table with its first data rows replaced by ``rows`` (or only ``rows`` appended)."""
    lines = text.splitlines()
    return ("\n".join([lines[0], *rows, *lines[1 + len(rows) :]]) + "\n").encode()


def test_a_damaged_per_vector_csv_is_one_line_for_every_reader(screened, store, tmp_path):
    """Issue 32 item 7 (and the weak duplicated rows / r of 5.0 or inf): frontier, compare,
    ``ohlora_eval.per_vector`` and the readers of a run's vectors (sheets) refuse a damaged
    table in one line naming the run and the file (before: UnicodeDecodeError,
    ArrowNotImplementedError tracebacks; duplicated rows counted twice; r = 5 charted)."""
    from ohlora_eval.apps.compare import compare
    from ohlora_eval.apps.frontier import frontier
    from ohlora_eval.apps.rejudge import rejudge
    from ohlora_eval.tracking.read_back import RunView
    from ohlora_eval.tracking.results import per_vector

    res, _ = screened
    b = rejudge(compose_app("rejudge", store, f"run_id={res.run_id}", "cutoff.eyes=0.6")).run_id
    client = _client(store)
    path = client.download_artifacts(res.run_id, "per_vector.csv", str(tmp_path))
    artifacts = client.get_run(res.run_id).info.artifact_uri.removeprefix("file://")
    stored = Path(artifacts) / "per_vector.csv"
    good = stored.read_bytes()
    text = good.decode()
    first = text.splitlines()[1]
    cols = text.splitlines()[0].split(",")
    eyes = cols.index("eyes_corr")

    def with_eyes(value: str) -> str:
        cells = first.split(",")
        cells[eyes] = value
        return ",".join(cells)

    damages = {
        "random bytes": (bytes(range(256)) * 8, "not a readable CSV"),
        "text in a number": (_damaged(text, [with_eyes("abc")]), "eyes_corr must be a number"),
        "r of 5.0": (_damaged(text, [with_eyes("5.0")]), "in [-1, 1]"),
        "r of inf": (_damaged(text, [with_eyes("inf")]), "in [-1, 1]"),
        "duplicated rows": (good + "\n".join(text.splitlines()[1:]).encode() + b"\n", "repeated"),
    }
    readers = {
        "frontier": lambda: frontier(compose_app("frontier", store, f"run_id={res.run_id}")),
        "compare": lambda: compare(compose_app("compare", store, f"a={res.run_id}", f"b={b}")),
        "per_vector": lambda: per_vector(res.run_id, root=store),
        "RunView.latents": lambda: RunView.open(client, res.run_id).latents,
    }
    assert Path(path).read_bytes() == good
    try:
        for damage, (content, says) in damages.items():
            stored.write_bytes(content)
            for reader, call in readers.items():
                with pytest.raises(UserError) as caught:
                    call()
                line = str(caught.value)
                assert "\n" not in line, (damage, reader, line)
                assert f"per_vector.csv of run {res.run_id}" in line, (damage, reader, line)
                assert says in line, (damage, reader, line)
    finally:
        stored.write_bytes(good)
    assert len(per_vector(res.run_id, root=store)) == len(res.per_vector)


# --- weak items ---------------------------------------------------------------------------------


def test_retest_refuses_empty_and_repeated_cases_before_a_run(screened, store):
    res, passed = screened
    before = len(_all_runs(store))
    for cases, message in (("[]", "is empty"), (f"[{passed[0]},{passed[0]}]", "more than once")):
        cfg = compose_app("retest", store, f"run_id={res.run_id}", f"cases={cases}", "k=2")
        with pytest.raises(UserError, match=message):
            retest(cfg)
    with pytest.raises(UserError, match="is empty"):
        render_sheets(compose_app("sheets", store, f"run_id={res.run_id}", "cases=[]"))
    assert len(_all_runs(store)) == before


def test_verify_refuses_negative_noise_seeds(store):
    with pytest.raises(ConfigError, match="noise_seeds=-1"):
        verify(compose_app("verify", store, "model=x/1", "noise_seeds=-1"))


def test_the_results_api_names_a_uri_it_cannot_read():
    with pytest.raises(UserError, match="uri=foo://bar: not an MLflow store"):
        runs(uri="foo://bar")


def test_a_name_with_a_space_is_quoted_in_printed_commands():
    assert aliases.model_ref("my model", "final") == "'my model@final'"
    assert aliases.model_ref("plain", version="3") == "plain/3"


def test_the_review_pages_select_command_names_a_store_other_than_mlruns(screened, store):
    res, _ = screened
    page = next((store / "artifacts").rglob(f"{res.run_id}/artifacts/review/index.html"))
    text = page.read_text()
    assert f'data-command="python -m ohlora_eval.select tracking.root={store.resolve()}"' in text


def test_every_job_names_its_run_in_its_folder(screened, store, tmp_path):
    """``mlflow_run.txt`` (README: every job): before, only screenings and direction fits
    wrote one; rejudge, frontier, compare, choose and select wrote none."""
    from ohlora_eval.apps import compare as compare_app
    from ohlora_eval.apps import frontier as frontier_app
    from ohlora_eval.apps import rejudge as rejudge_app

    res, passed = screened

    def job(main, name: str, *args: str) -> str:
        folder = tmp_path / name
        code, err = cli_run(main, [f"tracking.root={store}", f"hydra.run.dir={folder}", *args])
        assert code == 0, err
        return (folder / "mlflow_run.txt").read_text().split("\n")[0]

    rejudged = job(rejudge_app.main, "rejudge", f"run_id={res.run_id}", "cutoff.eyes=0.7")
    kinds = {r.info.run_id: r.data.tags.get("ohlora.kind") for r in _all_runs(store)}
    assert kinds[rejudged] == "rejudge"
    assert job(frontier_app.main, "frontier", f"run_id={res.run_id}") == res.run_id
    assert job(compare_app.main, "compare", f"a={res.run_id}", f"b={rejudged}") == rejudged
    assert job(choose_app.main, "choose", f"run_id={res.run_id}") == res.run_id
    chosen = job(select_app.main, "select", f"run_id={res.run_id}", f"cases=[{passed[0]}]",
                 "name=sel-named")  # fmt: skip
    assert (
        kinds.get(chosen) is None
        and _client(store).get_run(chosen).data.tags["ohlora.kind"] == "selection"
    )


_STORE_GONE_AT_THE_END = """
import sys
from mlflow.tracking import MlflowClient
def gone(*a, **k):  # ending the run, also at exit: the server froze
    raise ConnectionError("Connection refused: the server froze")
MlflowClient.set_terminated = gone
from ohlora_eval.apps.rejudge import main
sys.argv = ["rejudge", *sys.argv[1:]]
main()
"""


def test_a_rejudge_whose_store_froze_as_it_ended_is_closed_by_the_next_command(screened, store):
    """The tester's frozen-and-resumed server left a ghost RUNNING rejudge run: its process
    could not end the run and exited. The next command that opens a run marks it FAILED
    (before: rejudge runs carried no host/pid, so nothing ever closed them)."""
    res, _ = screened
    proc = subprocess.run(
        [sys.executable, "-c", _STORE_GONE_AT_THE_END, f"tracking.root={store}",
         f"run_id={res.run_id}", "cutoff.eyes=0.65"],
        cwd=ROOT, env={**clean_env(), "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    client = _client(store)
    ghost = [
        r for r in _all_runs(store)
        if r.info.status == "RUNNING" and r.data.tags.get("ohlora.kind") == "rejudge"
    ]  # fmt: skip
    assert len(ghost) == 1, [(r.info.run_name, r.info.status) for r in ghost]
    code, err = cli_run(
        rejudge_main(), [f"tracking.root={store}", f"run_id={res.run_id}", "cutoff.eyes=0.66"]
    )
    assert code == 0, err
    closed = client.get_run(ghost[0].info.run_id)
    assert closed.info.status == "FAILED" and closed.data.tags.get("ohlora.died")


def rejudge_main():
    from ohlora_eval.apps import rejudge as rejudge_app

    return rejudge_app.main


def _starting(line: str) -> bool:
    """A line the command says while it starts slowly (``progress.starting``), not an error."""
    return line.startswith("ohlora_eval: starting")
