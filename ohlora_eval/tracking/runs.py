"""The life cycle every tracked run shares: tags for sweeps, FINISHED/FAILED/KILLED endings
with the reason, resuming the work of runs whose process died, Hydra's files, and the
closing summary printed to the terminal. One place for all of it (docs/architecture.md)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import Stopped
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.tracking import store


def sweep_id() -> str | None:
    """The Hydra multirun this job belongs to (its sweep folder's name), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not running under @hydra.main (tests, API use)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def hydra_output_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None


def log_hydra_files() -> None:
    """Hydra's own record of the job (config, overrides) into the active run, if any."""
    folder = hydra_output_dir()
    if folder is not None and (folder / ".hydra").is_dir():
        store.retry(mlflow.log_artifacts, str(folder / ".hydra"), "hydra")


def _ending(exc: BaseException | None) -> tuple[str, dict[str, str]]:
    """How a run ends: its status and the tags that say why (the one place that decides)."""
    if exc is None:
        return "FINISHED", {}
    if isinstance(exc, Stopped):
        return "KILLED", {"ohlora.end_reason": f"stopped by {exc.name}"}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"ohlora.end_reason": "interrupted (Ctrl-C)"}
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:5000]
    return "FAILED", {"ohlora.failure_reason": reason}


def _sweep_tags() -> dict[str, str]:
    """Inside a Hydra multirun job: the sweep, the job number and the parent run."""
    sweep = sweep_id()
    if not sweep:
        return {}
    from hydra.core.hydra_config import HydraConfig

    from ohlora_eval.tracking.sweep import parent_run_id

    tags = {"sweep_id": sweep, "sweep.job": str(HydraConfig.get().job.num)}
    parent = parent_run_id()
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


@contextlib.contextmanager
def tracked_run(
    tags: Mapping[str, str], run_name: str | None = None, experiment_id: str | None = None
) -> Iterator[str]:
    """The active (fluent) MLflow run of a command: it ends FINISHED, or FAILED with the
    reason in a tag, or KILLED on Ctrl-C. Sweep jobs are tagged and nested under their
    sweep's parent run."""
    with store.usable(mlflow.get_tracking_uri()):
        run = store.retry(
            mlflow.start_run,
            run_name=run_name,
            tags={**tags, **_sweep_tags()},
            experiment_id=experiment_id,
        )
    try:
        yield run.info.run_id
    except BaseException as exc:
        status, why = _ending(exc)
        store.retry(mlflow.set_tags, why)
        store.retry(mlflow.end_run, status)
        raise
    store.retry(mlflow.end_run, "FINISHED")


@contextlib.contextmanager
def side_run(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A run made through the client, beside whatever run is active (a direction fit
    started by an evaluation): the same endings as ``tracked_run``."""
    with store.usable(client.tracking_uri):
        run = store.retry(client.create_run, experiment_id, tags=dict(tags))
    run_id = run.info.run_id
    try:
        yield run_id
    except BaseException as exc:
        status, why = _ending(exc)
        for k, v in why.items():
            store.retry(client.set_tag, run_id, k, v)
        store.retry(client.set_terminated, run_id, status)
        raise
    store.retry(client.set_terminated, run_id, "FINISHED")


def close_dead_runs(uri: str, measure_key: str, run_id: str) -> None:
    """Runs of this measurement left RUNNING by a process that no longer exists (killed):
    mark them FAILED and link them to ``run_id``, which resumes their work."""
    client = MlflowClient(uri)
    exp = mlflow.get_experiment(mlflow.active_run().info.experiment_id)
    runs = store.retry(
        client.search_runs,
        [exp.experiment_id],
        filter_string=(
            f"tags.`ohlora.measure_key` = '{measure_key}' and attributes.status = 'RUNNING'"
        ),
    )
    host = socket.gethostname()
    dead = []
    for r in runs:
        if r.info.run_id == run_id or r.data.tags.get("ohlora.host") != host:
            continue
        if not _alive(int(r.data.tags.get("ohlora.pid", "0") or 0)):
            dead.append(r.info.run_id)
            why = f"process died; resumed by run {run_id}"
            store.retry(client.set_tag, r.info.run_id, "ohlora.failure_reason", why)
            store.retry(client.set_tag, r.info.run_id, "ohlora.resumed_by", run_id)
            store.retry(client.set_terminated, r.info.run_id, "FAILED")
    if dead:
        mlflow.set_tag("ohlora.resumed_from", ",".join(dead))


def process_tags() -> dict[str, str]:
    """Who runs this: host and pid (how a later run tells a dead run from a live one)."""
    return {"ohlora.host": socket.gethostname(), "ohlora.pid": str(os.getpid())}


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid != os.getpid()


def print_summary(
    run_id: str,
    per_vector: pd.DataFrame,
    metrics: Mapping[str, float],
    cutoffs: Mapping[str, float],
    *,
    experiment: str,
    uri: str,
    notes: list[str],
) -> None:
    """The closing lines of every judging run, with ``notes`` on where the numbers came from."""
    cut = ", ".join(f"{p} {cutoffs[p]}" for p in CORE_PROPERTIES)
    means = ", ".join(f"{p} {metrics[f'{p}_abs_corr_mean']:.4f}" for p in CORE_PROPERTIES)
    signed = ", ".join(f"{metrics[f'{p}_corr_mean']:+.4f}" for p in CORE_PROPERTIES)
    lines = [
        f"\nohlora_eval: passed {int(metrics['passed'])} of {len(per_vector)}"
        f" ({metrics['pass_rate']:.2%}) at cutoffs {cut}",
        f"  mean |r|: {means} (signed r: {signed}); mean sum|r| {metrics['sum_abs_corr_mean']:.4f}",
        *(f"  {n}" for n in notes),
        f"  run {run_id} in experiment {experiment!r} ({store.display_uri(uri)})",
        f"  look at it: {store.ui_hint(uri)}",
    ]
    print("\n".join(lines))
