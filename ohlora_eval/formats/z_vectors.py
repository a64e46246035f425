"""Recorded selections: the Oh-LoRA z-vector file and the selection manifest (pure I/O)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

Z_FILE = "ohlora_z_vectors.csv"
MANIFEST = "selection.json"
GRID_DIR = "grids"


def group_names_file(layer: str) -> str:
    return f"ohlora_{layer}_group_names.csv"


def write_z_csv(latents: np.ndarray, path: Path) -> None:
    """Oh-LoRA layout: header 0..d-1, one row per vector, every float32 digit kept."""
    z = np.asarray(latents, dtype=np.float32)
    pd.DataFrame(z, columns=[str(i) for i in range(z.shape[1])]).to_csv(path, index=False)


def read_z_csv(path: str | Path, dim: int | None = None) -> np.ndarray:
    """An Oh-LoRA z-vector file -> (k, d) float32; accepts a leading index column."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"z_csv={path} does not exist")
    df = pd.read_csv(path)
    if len(df.columns) and not str(df.columns[0]).strip().isdigit():
        df = df.iloc[:, 1:]  # an unnamed index column
    cols = [str(c).strip() for c in df.columns]
    if cols != [str(i) for i in range(len(cols))]:
        raise ValueError(
            f"z_csv={path}: expected a header 0,1,...,{len(cols) - 1} (Oh-LoRA"
            f" z-vector layout); got {cols[:5]}..."
        )
    if dim is not None and len(cols) != dim:
        raise ValueError(
            f"z_csv={path} has {len(cols)} values per vector; the generator needs {dim}"
        )
    if df.isna().any().any():
        raise ValueError(f"z_csv={path} has empty cells")
    return df.to_numpy(dtype=np.float64).astype(np.float32)
