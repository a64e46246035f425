"""Sweeps in MLflow: a parent run per ``-m`` sweep that compares its points.

A Hydra callback (registered in conf/config.yaml) opens the parent run before
the jobs start (named by the sweep, e.g. ``sweep cutoff.eyes=0.86,0.88``) and,
when they are done, logs a table and a plot of passed and pass rate against the
swept values, sets the table (markdown) as the parent's description and prints it,
with what the sweep cost: its wall time and the images its points measured (also the
parent's metrics ``wall_seconds`` and ``images_measured``), and the best ``passed`` and
``pass_rate`` of its points as the parent's own (the runs table shows them on its row).
Each job's run is nested under it (tag ``mlflow.parentRunId``) and named by its
swept values (``point_name``, e.g. ``cutoff.eyes=0.9``), so the MLflow UI shows
the sweep as one expandable row. Works with the joblib launcher too: jobs find
the parent and the swept keys through files in the sweep folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store, system_metrics
from ohlora_eval.tracking.dead_runs import close_abandoned_runs, process_tags
from ohlora_eval.tracking.sweep_table import (
    best_figures,
    compare,
    plot_sweep,
    sweep_cost,
    sweep_note,
)
from ohlora_eval.tracking.ui_links import ui_url

log = logging.getLogger(__name__)

_OPEN: dict[str, Any] = {}
"""The sweep this process opened and has not ended yet: its parent run, store and the
``ExitStack`` that ends its system metrics."""

PARENT_FILE = ".mlflow_parent_run"
SWEPT_FILE = ".ohlora_swept_keys"


def _parent_in(folder: Path) -> str | None:
    """The parent run the callback wrote into the sweep folder, if it made one."""
    path = folder / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


def parent_run_id() -> str | None:
    """Inside a sweep job: the sweep's parent run, if the callback made one."""
    try:
        folder = Path(HydraConfig.get().sweep.dir)
    except Exception:
        return None
    return _parent_in(folder)


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a ``-m`` command line that sweep (``key=a,b``, ``range(..)``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports a bad override itself
        return []
    return [o.input_line for o in parsed if o.is_sweep_override() and o.input_line]


def point_name() -> str | None:
    """Inside a sweep job: its swept values, e.g. ``cutoff.eyes=0.9`` (the run's name)."""
    try:
        hc = HydraConfig.get()
        folder = Path(hc.sweep.dir)
        mine = [str(o) for o in hc.overrides.task]
    except Exception:
        return None
    try:
        keys = json.loads((folder / SWEPT_FILE).read_text())
    except (OSError, ValueError):
        keys = []
    values = {o.partition("=")[0].lstrip("+~"): o.partition("=")[2] for o in mine}
    shown = [f"{k}={values[k]}" for k in keys if k in values]
    return " ".join(shown) if shown else f"sweep job {hc.job.num}"


class SweepParent(Callback):
    """Hydra callback: the parent run of a multirun sweep."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or "tracking" not in config:
            return
        folder = Path(config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        uri = store.resolve_uri(config.tracking.uri, config.tracking.root)
        exp_id = store.ensure_experiment(config.tracking.experiment, uri, config.tracking.root)
        client = MlflowClient(uri)
        overrides = list(config.hydra.overrides.task)
        swept = swept_overrides(overrides)
        keys = [o.partition("=")[0].lstrip("+~") for o in swept]
        (folder / SWEPT_FILE).write_text(json.dumps(keys))
        name = "sweep " + (" ".join(swept) or folder.name)
        n_vectors = (config.get("sampling") or {}).get("n_vectors")
        if n_vectors is not None and "sampling.n_vectors" not in keys:
            name += f" | {int(n_vectors)} vectors"  # two sweeps of other sizes differ by name
        close_abandoned_runs(client)  # a sweep killed before this one, among others
        run = store.retry(
            client.create_run,
            exp_id,
            run_name=name if len(name) <= 250 else name[:247] + "...",
            tags={
                **process_tags(),
                "ohlora.kind": "sweep",
                "sweep_id": folder.name,
                "sweep.overrides": " ".join(overrides)[:5000],
                "git_commit": store.git_commit(),
            },
        )
        (folder / PARENT_FILE).write_text(run.info.run_id)
        _OPEN.update(parent=run.info.run_id, uri=uri)
        _OPEN["metrics"] = _watch(client, run.info.run_id, config.tracking)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or "tracking" not in config:
            return
        folder = Path(config.hydra.sweep.dir)
        parent = _parent_in(folder)
        if parent is None:
            return
        _forget_open()
        uri = store.resolve_uri(config.tracking.uri, config.tracking.root)
        client = MlflowClient(uri)
        table = compare(client, parent, folder)
        info = store.retry(client.get_run, parent).info
        started = info.start_time
        wall_s = max(0.0, time.time() - started / 1000) if started else float("nan")
        cost = sweep_cost(table, wall_s)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            table.to_csv(out / "sweep_comparison.csv", index=False)
            plot_sweep(table, out / "sweep_comparison.png")
            store.retry(client.log_artifacts, parent, str(out))
        finished = table["status"].eq("FINISHED") if len(table) else pd.Series([], dtype=bool)
        text = sweep_note(table, cost)
        store.retry(client.set_tag, parent, store.NOTE_TAG, text)
        if len(table):
            store.retry(client.log_metric, parent, "points", float(len(table)))
            store.retry(client.log_metric, parent, "points_finished", float(finished.sum()))
        for name, value in best_figures(table).items():  # the runs table's columns, not "-"
            store.retry(client.log_metric, parent, name, value)
        if wall_s == wall_s:
            store.retry(client.log_metric, parent, "wall_seconds", wall_s)
        store.retry(client.log_metric, parent, "images_measured", float(cost["images"]))
        status = "FINISHED" if len(table) and finished.all() else "FAILED"
        store.retry(client.set_terminated, parent, status)
        exp_id = info.experiment_id
        log.info(
            f"\nohlora_eval: sweep {folder.name}: {int(finished.sum())} of {len(table)} points"
            f" finished\n\n{text}\n\n  parent run {parent}: {ui_url(uri, exp_id, parent)}"
            f"\n  all runs (after make ui): {ui_url(uri, exp_id)}",
            extra=STDOUT,
        )


def _watch(client: MlflowClient, parent: str, tracking: Any) -> contextlib.ExitStack:
    """The parent run records the system metrics of the whole sweep (``tracking.system_metrics``;
    a bad value is left for the first job to report in one line) until the stack is closed."""
    stack = contextlib.ExitStack()
    try:
        settings = system_metrics.check(
            tracking.get("system_metrics", True),
            tracking.get("system_metrics_interval_s", system_metrics.DEFAULT_INTERVAL_S),
        )
    except ValueError:
        return stack
    stack.enter_context(system_metrics.monitored(client, parent, settings, "sweep run"))
    return stack


def _forget_open() -> dict[str, Any]:
    """The open sweep (empty when none), forgotten, its system metrics stopped."""
    was = dict(_OPEN)
    _OPEN.clear()
    if "metrics" in was:
        was["metrics"].close()
    return was


def sweep_open() -> bool:
    """Whether this process opened a sweep's parent run that has not ended yet."""
    return bool(_OPEN)


def stop_open_sweep(reason: str, grace_s: float = 8.0, status: str = "KILLED") -> None:
    """A sweep stopped midway (SIGTERM, SIGINT, a job that exited): its worker processes
    (a parallel launcher's) get SIGTERM, then SIGKILL after ``grace_s``; the parent run and
    every point still RUNNING end ``status`` (KILLED; FAILED for a job's error) with
    ``reason``. Running the sweep again resumes from the measurement cache. Nothing to do
    when this process opened no sweep."""
    if not _OPEN:
        return
    was = _forget_open()
    parent, uri = was["parent"], was["uri"]
    _stop_children(grace_s)
    client = MlflowClient(uri)
    try:
        exp_id = store.retry(client.get_run, parent).info.experiment_id
        points = store.retry(
            client.search_runs,
            [exp_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"
            ),
        )
        for run_id in [p.info.run_id for p in points] + [parent]:
            store.retry(client.set_tag, run_id, "ohlora.end_reason", reason)
            store.retry(client.set_terminated, run_id, status)
    except Exception as exc:  # noqa: BLE001 - the store may be what failed
        line = f"ohlora_eval: could not mark sweep run {parent} as stopped ({exc})"
        log.warning(line.splitlines()[0], extra=STDOUT)


def _stop_children(grace_s: float) -> None:
    """SIGTERM to this process's child processes, SIGKILL to those still alive after
    ``grace_s`` (the ended ones are reaped)."""
    children = psutil.Process().children()
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
