"""Constants of the scale tests (a module of its own: ``conftest`` is a name several test
folders use)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
PG_BIN = Path(os.environ.get("OHLORA_PG_BIN", "/usr/lib/postgresql/15/bin"))
MLFLOW = Path(sys.executable).with_name("mlflow")
PG_USER = os.environ.get("OHLORA_PG_USER", "ohlora-pg")

# Small but real: 12 chunks of 4 vectors, cheap SVM directions.
SMALL = [
    "device=cpu",
    "tracking.progress=false",
    "sampling.n_vectors=48",
    "sampling.vectors_per_batch=4",
    "tracking.grids.passed=1",
    "tracking.grids.best=1",
    "review.page=false",
    "directions.method=svm",
    "directions.grouped=false",
    "directions.n=600",
]
