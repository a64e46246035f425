"""Sweeps: one run per point under a parent run that compares them; parallel jobs lose nothing."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
from conftest import ROOT, clean_env
from mlflow.tracking import MlflowClient

from ohlora_eval.tracking import store as tracking

TINY = [
    "device=cpu",
    "tracking.progress=false",
    "sampling.n_vectors=24",
    "sampling.vectors_per_batch=8",
    "tracking.grids.passed=1",
    "tracking.grids.best=1",
    "directions.method=svm",
    "directions.grouped=false",
    "directions.n=600",
]


def _sweep(store, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ohlora_eval", "-m", f"tracking.root={store}", *TINY, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env=clean_env(),
    )


def _runs(store):
    client = MlflowClient(tracking.resolve_uri(None, store))
    exp = client.get_experiment_by_name("ohlora-eval")
    return client, client.search_runs([exp.experiment_id])


def test_four_parallel_jobs_on_a_fresh_store_lose_nothing(tmp_path):
    store = tmp_path / "mlruns"
    proc = _sweep(store, "hydra/launcher=local_parallel", "cutoff.eyes=0.88,0.90,0.92,0.94")
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, runs = _runs(store)
    parents = [r for r in runs if r.data.tags.get("ohlora.kind") == "sweep"]
    children = [r for r in runs if r.data.tags.get("ohlora.kind") == "evaluation"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["sweep_id"] for r in children} == {parent.data.tags["sweep_id"]}
    assert {r.data.params["cutoff.eyes"] for r in children} == {"0.88", "0.9", "0.92", "0.94"}
    # One measurement for the whole sweep: the other three points re-used it.
    assert sum(r.data.metrics["measured_chunks"] for r in children) == 3
    table = pd.read_csv(client.download_artifacts(parent.info.run_id, "sweep_comparison.csv"))
    assert sorted(table["cutoff.eyes"]) == [0.88, 0.90, 0.92, 0.94]
    assert (table["status"] == "FINISHED").all()
    by_cut = table.set_index("cutoff.eyes")["passed"]
    assert by_cut.is_monotonic_decreasing  # a stricter cutoff never passes more
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep_comparison.csv", "sweep_comparison.png"} <= names
