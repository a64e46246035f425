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
    return read_z_table(path, dim)[0]


def read_z_table(path: str | Path, dim: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """An Oh-LoRA z-vector file -> ((k, d) float32, the case numbers or None).

    A leading column named ``case`` gives each vector's case number (a file written from a
    screening run's cases keeps them); any other leading non-numbered column is an index
    and is dropped (then the cases are None: the caller numbers the vectors 0..k-1)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"z_csv={path} does not exist")
    df = pd.read_csv(path)
    cases = None
    if len(df.columns) and not str(df.columns[0]).strip().isdigit():
        if str(df.columns[0]).strip() == "case":
            col = pd.to_numeric(df.iloc[:, 0], errors="coerce")
            if col.isna().any() or (col % 1 != 0).any():
                raise ValueError(
                    f"z_csv={path}: the case column holds values that are not integers"
                )
            cases = col.to_numpy(dtype=np.int64)
            if len(set(cases.tolist())) != len(cases):
                raise ValueError(f"z_csv={path}: the case column lists a case more than once")
        df = df.iloc[:, 1:]  # the case column or an unnamed index column
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
    try:
        z = df.to_numpy(dtype=np.float64).astype(np.float32)
    except ValueError as exc:
        raise ValueError(f"z_csv={path} holds a value that is not a number ({exc})") from None
    return z, cases
