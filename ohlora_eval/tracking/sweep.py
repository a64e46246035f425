"""Sweeps in MLflow: a parent run per ``-m`` sweep that compares its points.

A Hydra callback (registered in conf/config.yaml) opens the parent run before
the jobs start and, when they are done, logs a table and a plot of passed and
pass rate against the swept values. Each job's run is nested under it (tag
``mlflow.parentRunId``), so the MLflow UI shows the sweep as one expandable row.
Works with the joblib launcher too: jobs find the parent through a file in the
sweep folder.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ohlora_eval.tracking import store

PARENT_FILE = ".mlflow_parent_run"
COMPARED = [
    "passed",
    "pass_rate",
    "eyes_pass_rate",
    "mouth_pass_rate",
    "pose_pass_rate",
    "eyes_corr_mean",
    "mouth_corr_mean",
    "pose_corr_mean",
    "sum_abs_corr_mean",
    "images_per_sec",
    "reused_chunks",
]


def parent_run_id() -> str | None:
    """Inside a sweep job: the sweep's parent run, if the callback made one."""
    try:
        folder = Path(HydraConfig.get().sweep.dir)
    except Exception:
        return None
    path = folder / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


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
        run = store.retry(
            client.create_run,
            exp_id,
            run_name=f"sweep {folder.name}",
            tags={
                "ohlora.kind": "sweep",
                "sweep_id": folder.name,
                "sweep.overrides": " ".join(overrides)[:5000],
                "git_commit": store.git_commit(),
            },
        )
        (folder / PARENT_FILE).write_text(run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or "tracking" not in config:
            return
        folder = Path(config.hydra.sweep.dir)
        parent = (
            (folder / PARENT_FILE).read_text().strip() if (folder / PARENT_FILE).is_file() else None
        )
        if parent is None:
            return
        uri = store.resolve_uri(config.tracking.uri, config.tracking.root)
        client = MlflowClient(uri)
        table = compare(client, parent, folder)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            table.to_csv(out / "sweep_comparison.csv", index=False)
            plot_sweep(table, out / "sweep_comparison.png")
            store.retry(client.log_artifacts, parent, str(out))
        finished = table["status"].eq("FINISHED") if len(table) else pd.Series([], dtype=bool)
        if len(table):
            store.retry(client.log_metric, parent, "points", float(len(table)))
            store.retry(client.log_metric, parent, "points_finished", float(finished.sum()))
        status = "FINISHED" if len(table) and finished.all() else "FAILED"
        store.retry(client.set_terminated, parent, status)
        print(
            f"\nohlora_eval: sweep {folder.name}: {int(finished.sum())} of {len(table)} points"
            f" finished; comparison in parent run {parent}"
        )


def compare(client: MlflowClient, parent: str, folder: Path) -> pd.DataFrame:
    """One row per job: its swept values (Hydra overrides), run id, status and metrics."""
    exp_id = client.get_run(parent).info.experiment_id
    runs = store.retry(
        client.search_runs,
        [exp_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
    )
    by_job = {r.data.tags.get("sweep.job"): r for r in runs}
    rows = []
    for job_dir in sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        overrides = _overrides(job_dir)
        run = by_job.get(job_dir.name)
        row: dict[str, Any] = {
            "job": int(job_dir.name),
            **overrides,
            "run_id": run.info.run_id if run else "",
            "status": run.info.status if run else "MISSING",
        }
        for m in COMPARED:
            row[m] = run.data.metrics.get(m) if run else None
        rows.append(row)
    return pd.DataFrame(rows)


def _overrides(job_dir: Path) -> dict[str, Any]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = _number(value)
    return out


def _number(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def swept_keys(table: pd.DataFrame) -> list[str]:
    fixed = {"job", "run_id", "status", *COMPARED}
    return [c for c in table.columns if c not in fixed and table[c].nunique(dropna=False) > 1]


def plot_sweep(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(table)
    numeric = len(keys) == 1 and pd.api.types.is_numeric_dtype(table[keys[0]])
    x = table[keys[0]] if numeric else table["job"]
    label = keys[0] if numeric else "job (" + ", ".join(keys) + ")"
    order = x.argsort()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot(x.iloc[order], table["passed"].iloc[order], "o-", color="#4c72b0", label="passed")
    ax.set_xlabel(label)
    ax.set_ylabel("passed")
    ax2 = ax.twinx()
    ax2.plot(
        x.iloc[order], table["pass_rate"].iloc[order], "s--", color="#c44e52", label="pass rate"
    )
    ax2.set_ylabel("pass rate")
    ax.set_title("sweep: passed and pass rate")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
