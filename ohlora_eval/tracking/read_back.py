"""Reading a screening run's files back: its table, its vectors and its config.

A run that re-used another run's measurement (a sweep point, a re-judge) does not store
the measurement's files again (``MEASURED_FILES``): its tag ``ohlora.measurement_files``
(``FILES_TAG``) names the run that does, and ``run_file`` follows it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ohlora_eval.errors import UserError
from ohlora_eval.formats.ohlora_results import read_native_table
from ohlora_eval.tracking import store

SHEETS = "review/sheets"  # the one folder of a run's own contact sheets

MEASURED_FILES = ("latents.npy", "per_image.csv")  # decided by the measurement and the cases
FILES_TAG = "ohlora.measurement_files"  # the run that stores them, when not this one


def run_file(client: MlflowClient, run_id: str, name: str, dst: str | Path) -> str:
    """Download ``name`` of ``run_id``; a run that re-used another run's measurement points
    to the run that stores its latents and per-image scores (tag ``ohlora.measurement_files``)."""
    try:
        return client.download_artifacts(run_id, name, str(dst))
    except Exception:
        source = store.retry(client.get_run, run_id).data.tags.get(FILES_TAG)
        if not source or name not in MEASURED_FILES:
            raise
        return client.download_artifacts(source, name, str(dst))


@dataclass
class RunVectors:
    """What a screening run measured, read back: its table, its vectors and its config."""

    per_vector: pd.DataFrame
    latents: np.ndarray  # row i is the vector of per_vector row i
    config: dict


def read_run_vectors(client: MlflowClient, run_id: str) -> RunVectors:
    """``per_vector.csv``, ``latents.npy`` (followed to the run that stores them) and
    ``config.yaml`` of a screening run; a run without them is one ``UserError`` line."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            table_path = client.download_artifacts(run_id, "per_vector.csv", tmp)
            latents = np.load(run_file(client, run_id, "latents.npy", tmp))
            config = OmegaConf.to_container(
                OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
            )
        except Exception:
            raise UserError(
                f"run_id={run_id} has no per_vector.csv, latents.npy and config.yaml: only"
                " screening runs carry their vectors (imported results and re-judges do not)"
            ) from None
        per_vector = read_native_table(table_path, f"per_vector.csv of run {run_id}")
    if len(per_vector) != len(latents):
        raise UserError(
            f"run_id={run_id}: per_vector.csv has {len(per_vector)} rows and latents.npy"
            f" {len(latents)} vectors; the run's files do not belong together"
        )
    return RunVectors(per_vector, latents, config)


@dataclass(frozen=True)
class Logged:
    """A contact sheet stored in MLflow: the run and the artifact path."""

    run_id: str
    path: str


def linked_sheets(client: MlflowClient, run_id: str) -> dict[int, Logged]:
    """The contact sheets a run shows (``review/sheets.json``), else those it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "review/sheets.json", tmp)
            data = json.loads(Path(path).read_text())
            return {int(k): Logged(v["run_id"], v["path"]) for k, v in data.items()}
        except Exception:  # noqa: BLE001 - older runs: the sheets they hold themselves
            pass
    try:
        files = store.retry(client.list_artifacts, run_id, SHEETS)
    except Exception:  # noqa: BLE001 - no sheets: cards without pictures
        return {}
    found = {}
    for a in files:
        stem = Path(a.path).stem
        if stem.startswith("case_") and stem[5:].isdigit():
            found[int(stem[5:])] = Logged(run_id, a.path)
    return found
