"""Recorded selections: the Oh-LoRA z-vector file and the selection manifest (pure I/O)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ohlora_eval.errors import MissingFile, UserError

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
    screening run's cases keeps them: integers in the 64-bit range, each once); any other
    leading non-numbered column is an index and is dropped (then the cases are None: the
    caller numbers the vectors 0..k-1). Every value must be a finite number. An empty,
    header-only or non-UTF-8 file is refused naming the file; a bad cell naming its line."""
    from ohlora_eval.formats.ohlora_results import int64_cells

    path = Path(path)
    if not path.is_file():
        raise MissingFile(f"z_csv={path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise UserError(f"z_csv={path} is empty: no header, no vectors") from None
    except UnicodeDecodeError:
        raise UserError(f"z_csv={path} is not UTF-8 text (a CSV of numbers)") from None
    except pd.errors.ParserError as exc:
        raise UserError(f"z_csv={path} is not a readable CSV file ({exc})".strip()) from None
    if df.empty:
        raise UserError(f"z_csv={path} has a header but no vectors")
    cases = None
    if len(df.columns) and not str(df.columns[0]).strip().isdigit():
        if str(df.columns[0]).strip() == "case":
            values, bad = int64_cells(df.iloc[:, 0])
            if bad.any():
                raise UserError(
                    f"z_csv={path}: line {_line(bad)}: the case {df.iloc[int(np.argmax(bad)), 0]!r}"
                    " is not an integer in the 64-bit range"
                )
            cases = values
            if len(set(cases.tolist())) != len(cases):
                raise UserError(f"z_csv={path}: the case column lists a case more than once")
        df = df.iloc[:, 1:]  # the case column or an unnamed index column
    cols = [str(c).strip() for c in df.columns]
    if cols != [str(i) for i in range(len(cols))]:
        raise UserError(
            f"z_csv={path}: expected a header 0,1,...,{len(cols) - 1} (Oh-LoRA"
            f" z-vector layout); got {cols[:5]}..."
        )
    if dim is not None and len(cols) != dim:
        raise UserError(
            f"z_csv={path} has {len(cols)} values per vector; the generator needs {dim}"
        )
    text = df.apply(lambda c: c.str.strip())
    empty = (text == "").to_numpy()
    if empty.any():
        raise UserError(f"z_csv={path}: line {_line(empty.any(axis=1))} has empty cells")
    values = text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    junk = np.isnan(values) & ~text.apply(lambda c: c.str.lower() == "nan").to_numpy()
    if junk.any():
        row = _line(junk.any(axis=1))
        raise UserError(f"z_csv={path}: line {row} holds a value that is not a number")
    if not np.isfinite(values).all():
        row = _line(~np.isfinite(values).all(axis=1))
        raise UserError(f"z_csv={path}: line {row} holds inf or NaN; every value must be finite")
    if (np.abs(values) > np.finfo(np.float32).max).any():
        row = _line((np.abs(values) > np.finfo(np.float32).max).any(axis=1))
        raise UserError(f"z_csv={path}: line {row} holds a value too large for float32")
    return values.astype(np.float32), cases


def _line(mask: np.ndarray) -> int:
    """The file line of the first row set in ``mask`` (the header is line 1)."""
    return int(np.argmax(np.asarray(mask))) + 2
