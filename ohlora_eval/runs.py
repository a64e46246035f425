"""The life cycle every tracked run shares: tags for sweeps, FAILED/KILLED endings with the
reason, Hydra's files, and the closing summary printed to the terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import mlflow
import pandas as pd

from . import tracking
from .protocols import CORE_PROPERTIES


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
        tracking.retry(mlflow.log_artifacts, str(folder / ".hydra"), "hydra")


@contextlib.contextmanager
def tracked_run(
    tags: Mapping[str, str], run_name: str | None = None, experiment_id: str | None = None
) -> Iterator[str]:
    """An MLflow run that ends FINISHED, or FAILED with the reason in a tag (KILLED on Ctrl-C)."""
    tags = dict(tags)
    sweep = sweep_id()
    if sweep:
        from hydra.core.hydra_config import HydraConfig

        from .sweep import parent_run_id

        tags["sweep_id"] = sweep
        tags["sweep.job"] = str(HydraConfig.get().job.num)
        parent = parent_run_id()
        if parent:
            tags["mlflow.parentRunId"] = parent
    run = tracking.retry(
        mlflow.start_run, run_name=run_name, tags=tags, experiment_id=experiment_id
    )
    try:
        yield run.info.run_id
    except KeyboardInterrupt:
        tracking.retry(mlflow.set_tag, "ohlora.end_reason", "interrupted (Ctrl-C)")
        tracking.retry(mlflow.end_run, "KILLED")
        raise
    except BaseException as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:5000]
        tracking.retry(mlflow.set_tag, "ohlora.failure_reason", reason)
        tracking.retry(mlflow.end_run, "FAILED")
        raise
    tracking.retry(mlflow.end_run, "FINISHED")


def print_summary(
    run_id: str,
    per_vector: pd.DataFrame,
    metrics: Mapping[str, float],
    cutoffs: Mapping[str, float],
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
        f"  run {run_id} in experiment {experiment!r} ({tracking.display_uri(uri)})",
        f"  look at it: {tracking.ui_hint(uri)}",
    ]
    print("\n".join(lines))
