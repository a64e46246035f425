"""Runs whose process died before it ended them (killed with SIGKILL, or it could not reach
the store as it ended): told apart by the host and pid every run is tagged with, and closed
by the next command that opens a run in their store."""

from __future__ import annotations

import os
import socket
from typing import Any

from mlflow.tracking import MlflowClient

from ohlora_eval.lifeline import alive
from ohlora_eval.tracking import store

DIED = "ohlora.died"  # tag of a run whose process died before it ended it (value: its pid)


def died_here(run: Any, host: str) -> bool:
    """Whether ``run`` was opened by a process of this host that no longer exists."""
    tags = run.data.tags
    return tags.get("ohlora.host") == host and not alive(int(tags.get("ohlora.pid", "0") or 0))


def close_abandoned_runs(client: MlflowClient, keep: str = "") -> list[str]:
    """Runs of this store (every experiment) left RUNNING by a process of this host that no
    longer exists (killed with SIGKILL, or it could not reach the store as it ended): marked
    FAILED with the reason (and tag ``ohlora.died``). Every command that opens a run calls
    this, so no dead run stays RUNNING past the next command. ``keep``: the caller's own run."""
    experiments = [e.experiment_id for e in store.retry(client.search_experiments)]
    runs = [
        r
        for i in range(0, len(experiments), 100)  # MLflow searches at most 100 at once
        for r in store.retry(
            client.search_runs,
            experiments[i : i + 100],
            filter_string="attributes.status = 'RUNNING'",
        )
    ]
    host, closed = socket.gethostname(), []
    for r in runs:
        if r.info.run_id == keep or not died_here(r, host):
            continue
        pid = r.data.tags.get("ohlora.pid", "?")
        why = f"its process (pid {pid} on {host}) died before it ended the run"
        store.retry(client.set_tag, r.info.run_id, "ohlora.failure_reason", why)
        store.retry(client.set_tag, r.info.run_id, DIED, pid)
        store.retry(client.set_terminated, r.info.run_id, "FAILED")
        closed.append(r.info.run_id)
    return closed


def process_tags() -> dict[str, str]:
    """Who runs this: host and pid (how a later run tells a dead run from a live one)."""
    return {"ohlora.host": socket.gethostname(), "ohlora.pid": str(os.getpid())}
