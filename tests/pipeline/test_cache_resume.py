"""Measuring once: cutoff changes re-use scores, corrupt entries are redone, killed runs resume."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, clean_env
from mlflow.tracking import MlflowClient

from ohlora_eval.apps.screen import evaluate
from ohlora_eval.pipeline.cache import MeasurementCache, atomic_write
from ohlora_eval.tracking import store as tracking

CHEAP_DIRECTIONS = ["directions.method=svm", "directions.grouped=false", "directions.n=600"]


def test_judging_changes_reuse_the_measurement(make_cfg, store):
    a = evaluate(make_cfg(*CHEAP_DIRECTIONS, "sampling.seed=11"))
    b = evaluate(
        make_cfg(
            *CHEAP_DIRECTIONS, "sampling.seed=11", "cutoff.eyes=0.5", "review.rank_by=sum_abs_corr"
        )
    )
    assert a.metrics["measured_chunks"] == 3 and a.metrics["reused_chunks"] == 0
    assert b.metrics["measured_chunks"] == 0 and b.metrics["reused_chunks"] == 3
    assert np.array_equal(a.scores, b.scores)
    assert b.metrics["passed"] >= a.metrics["passed"]
    key = (
        MlflowClient(tracking.resolve_uri(None, store))
        .get_run(a.run_id)
        .data.tags["ohlora.measure_key"]
    )
    c = evaluate(make_cfg(*CHEAP_DIRECTIONS, "sampling.seed=12"))  # other vectors: new key
    tags = MlflowClient(tracking.resolve_uri(None, store)).get_run(c.run_id).data.tags
    assert tags["ohlora.measure_key"] != key and c.metrics["reused_chunks"] == 0


def _chunks(cfg, store, run_id: str) -> list[Path]:
    """The cached chunk files of a run's measurement, in order."""
    tags = MlflowClient(tracking.resolve_uri(None, store)).get_run(run_id).data.tags
    return sorted((Path(cfg.cache.dir) / tags["ohlora.measure_key"]).glob("chunk_*.npz"))


def test_corrupt_or_partial_entries_are_recomputed(make_cfg, store):
    cfg = make_cfg(*CHEAP_DIRECTIONS, "sampling.seed=21")
    first = evaluate(cfg)
    chunks = _chunks(cfg, store, first.run_id)
    assert len(chunks) == 3
    chunks[0].write_bytes(chunks[0].read_bytes()[:200])  # a partial write
    data = bytearray(chunks[1].read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped byte (inside the scores array)
    chunks[1].write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="is not used"):
        again = evaluate(cfg)
    assert again.metrics["measured_chunks"] == 2 and again.metrics["reused_chunks"] == 1
    assert np.array_equal(first.scores, again.scores)


def test_cache_rejects_a_tampered_chunk(tmp_path):
    cache = MeasurementCache(tmp_path, "k", {"what": "test"})
    cache.save(0, 2, {"scores": np.ones((2, 3), np.float32)})
    assert cache.load(0, 2)["scores"].sum() == 6
    import io
    import zipfile

    path = next(tmp_path.glob("k/chunk_*.npz"))
    buf = io.BytesIO()
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "scores.npy":
                arr = np.load(io.BytesIO(data))
                arr[0, 0] = 7  # a valid file with other numbers than the checksum says
                out = io.BytesIO()
                np.save(out, arr)
                data = out.getvalue()
            dst.writestr(item, data)
    path.write_bytes(buf.getvalue())
    with pytest.warns(UserWarning, match=r"chunk_0000000_0000002.npz is not used \(its checksum"):
        assert cache.load(0, 2) is None
    assert not path.exists()


def test_a_chunk_out_of_place_is_measured_again(make_cfg, store, tmp_path):
    """A valid chunk copied over another position (or from another measurement) carries its
    own key and range: it is refused with a warning naming it, and the run's numbers are
    the uninterrupted run's."""
    cfg = make_cfg(*CHEAP_DIRECTIONS, "sampling.seed=23")
    first = evaluate(cfg)
    chunks = _chunks(cfg, store, first.run_id)
    chunks[2].write_bytes(chunks[0].read_bytes())
    with pytest.warns(UserWarning, match=rf"{chunks[2].name} is not used \(it belongs to"):
        again = evaluate(cfg)
    assert again.metrics["measured_chunks"] == 1 and again.metrics["reused_chunks"] == 2
    assert np.array_equal(first.scores, again.scores)
    assert again.per_vector.equals(first.per_vector)

    other = MeasurementCache(tmp_path, "another-key", {})
    foreign = MeasurementCache(tmp_path, "this-key", {})
    other.save(0, 8, {"scores": np.zeros((8, 3), np.float32)})
    (foreign.dir / "chunk_0000000_0000008.npz").write_bytes(
        (other.dir / "chunk_0000000_0000008.npz").read_bytes()
    )
    with pytest.warns(UserWarning, match="belongs to measurement another-key"):
        assert foreign.load(0, 8) is None


CHUNKS = 24  # of a run of _cli


def _cli(store: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ohlora_eval",
        f"tracking.root={store}",
        "device=cpu",
        "tracking.progress=false",
        "sampling.n_vectors=96",  # 24 chunks of 4
        "sampling.vectors_per_batch=4",
        "tracking.grids.passed=1",
        "tracking.grids.best=1",
        "review.page=false",
        *CHEAP_DIRECTIONS,
        *extra,
    ]


def _start_and_stop(store: Path, sig: int, after_chunks: int) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        _cli(store),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        # A shell runs background jobs with SIGINT ignored and children inherit that; give
        # the child the terminal's default, as when a user presses Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    cache = store / "cache"
    while time.time() < deadline and proc.poll() is None:
        if len(list(cache.glob("*/chunk_*.npz"))) >= after_chunks:
            proc.send_signal(sig)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    n = len(list(cache.glob("*/chunk_*.npz")))
    assert 0 < n < CHUNKS, f"the run was not stopped mid-way ({n} chunks): {err[-2000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _runs(store: Path):
    client = MlflowClient(tracking.resolve_uri(None, store))
    exp = client.get_experiment_by_name("ohlora-eval")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time"])


def _per_vector(client: MlflowClient, run_id: str) -> bytes:
    return Path(client.download_artifacts(run_id, "per_vector.csv")).read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> bytes:
    store = tmp_path_factory.mktemp("straight") / "mlruns"
    subprocess.run(
        _cli(store), cwd=ROOT, check=True, capture_output=True, timeout=600, env=clean_env()
    )
    client, runs = _runs(store)
    return _per_vector(client, runs[-1].info.run_id)


def test_sigkill_then_same_command_resumes_identically(tmp_path, uninterrupted):
    store = tmp_path / "mlruns"
    killed = _start_and_stop(store, signal.SIGKILL, after_chunks=3)
    assert killed.returncode == -signal.SIGKILL
    done_before = len(list((store / "cache").glob("*/chunk_*.npz")))
    resumed = subprocess.run(
        _cli(store), cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env()
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client, runs = _runs(store)
    dead, new = runs[0], runs[-1]
    assert new.info.status == "FINISHED"
    assert new.data.metrics["reused_chunks"] >= done_before
    assert new.data.metrics["measured_chunks"] == CHUNKS - new.data.metrics["reused_chunks"]
    assert dead.info.status == "FAILED"
    assert dead.data.tags["ohlora.resumed_by"] == new.info.run_id
    assert new.data.tags["ohlora.resumed_from"] == dead.info.run_id
    assert _per_vector(client, new.info.run_id) == uninterrupted


def test_ctrl_c_marks_the_run_killed_and_keeps_what_was_measured(tmp_path, uninterrupted):
    store = tmp_path / "mlruns"
    stopped = _start_and_stop(store, signal.SIGINT, after_chunks=2)
    assert stopped.returncode == 130
    assert "interrupted; what was measured is kept" in stopped.stderr
    client, runs = _runs(store)
    assert runs[-1].info.status == "KILLED"
    kept = len(list((store / "cache").glob("*/chunk_*.npz")))
    assert kept >= 2
    again = subprocess.run(
        _cli(store), cwd=ROOT, capture_output=True, text=True, timeout=600, env=clean_env()
    )
    assert again.returncode == 0
    client, runs = _runs(store)
    assert runs[-1].data.metrics["reused_chunks"] >= kept
    assert _per_vector(client, runs[-1].info.run_id) == uninterrupted


def test_sigterm_ends_the_run_like_ctrl_c(tmp_path):
    """Schedulers and ``timeout`` stop jobs with SIGTERM: the run ends KILLED with the signal
    named, what was measured is kept and the exit status is 143 (the same command resumes
    from the kept chunks: shown after Ctrl-C and SIGKILL above, the same cache)."""
    store = tmp_path / "mlruns"
    stopped = _start_and_stop(store, signal.SIGTERM, after_chunks=2)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert "stopped by SIGTERM; what was measured is kept" in stopped.stderr
    client, runs = _runs(store)
    assert runs[-1].info.status == "KILLED"
    assert runs[-1].data.tags["ohlora.end_reason"] == "stopped by SIGTERM"
    assert len(list((store / "cache").glob("*/chunk_*.npz"))) >= 2


def _hammer(args: tuple[str, int]) -> int:
    path, k = args
    for i in range(150):
        atomic_write(Path(path), f"writer {k} write {i}\n".encode() * 50)
    return k


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Parallel sweep jobs save the same cached sheet: every write must land whole."""
    import concurrent.futures as cf
    import multiprocessing as mp

    path = tmp_path / "case_00019.png"
    jobs = [(str(path), k) for k in range(4)]
    with cf.ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(_hammer, jobs)) == [0, 1, 2, 3]
    with mp.get_context("fork").Pool(4) as pool:
        assert sorted(pool.map(_hammer, jobs)) == [0, 1, 2, 3]
    lines = set(path.read_text().splitlines())
    assert len(lines) == 1 and lines.pop().startswith("writer ")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
