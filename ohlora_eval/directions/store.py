"""Direction files: Oh-LoRA's vector CSV layout, our regressors, and a small manifest.

Folder layout (a direction run's artifacts, or any folder for ``directions=files``)::

    property_score_vectors/{property}_change_{layer}_vector_{group}.csv   # SVM unit normals
    gradient_models/{property}_{layer}.pt + .json                          # regressors
    directions.json                                                        # manifest (ours)

The CSVs are what Oh-LoRA writes: a pandas index column, then columns 0..dim-1,
one row per direction. ``group`` is e.g. ``hhlh``, or ``all`` for one direction
for all faces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ohlora_eval.directions.gradient import ScoreRegressor, gradient_field
from ohlora_eval.errors import MissingFile, UserError
from ohlora_eval.models.networks.checkpoints import check_state_dict, read_state_file
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

VECTOR_DIR = "property_score_vectors"
MODEL_DIR = "gradient_models"
MANIFEST = "directions.json"
_CSV = re.compile(r"^(eyes|mouth|pose)_change_(\w+?)_vector_([hl]{1,16}|all)\.csv$")


def write_directions(
    out: Path, dirs: Directions, regressors: dict[str, ScoreRegressor], extra: dict[str, Any]
) -> None:
    """Write every direction of ``dirs`` under ``out`` in the layout above."""
    (out / VECTOR_DIR).mkdir(parents=True, exist_ok=True)
    for p, table in dirs.vectors.items():
        for g, v in table.items():
            pd.DataFrame(np.asarray(v, dtype=np.float32)[None, :]).to_csv(
                out / VECTOR_DIR / f"{p}_change_{dirs.layer}_vector_{g}.csv"
            )
    if regressors:
        (out / MODEL_DIR).mkdir(parents=True, exist_ok=True)
    for p, model in regressors.items():
        torch.save(model.state_dict(), out / MODEL_DIR / f"{p}_{dirs.layer}.pt")
        hidden = [m.out_features for m in model.net if isinstance(m, torch.nn.Linear)][:-1]
        meta = {"dim": dirs.dim, "hidden": hidden, "layer": dirs.layer}
        (out / MODEL_DIR / f"{p}_{dirs.layer}.json").write_text(json.dumps(meta))
    manifest = {
        "layer": dirs.layer,
        "dim": dirs.dim,
        "method": dirs.method,
        "medians": dirs.medians,
        **extra,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))


def read_vector_csv(path: Path, where: str = "") -> np.ndarray:
    """One Oh-LoRA direction CSV -> (dim,) float64, the values exactly as written (the first
    row). The original edited with these float64 values (``measure.edit_dtype=float64``);
    a float32 edit casts them, which gives back the float32 vector that was written."""
    name = f"{Path(path).name} in {where}" if where else str(path)
    layout = "an index column, then columns 0..dim-1 of numbers"
    try:
        df = pd.read_csv(path, index_col=0)
    except (ValueError, OSError) as exc:
        raise UserError(
            f"direction file {name} cannot be read ({exc}); expected {layout}"
        ) from None
    if df.shape[0] < 1 or not all(str(c).isdigit() for c in df.columns):
        raise UserError(f"direction file {name} is not an Oh-LoRA direction file ({layout})")
    row = pd.to_numeric(df.iloc[0], errors="coerce")
    if row.isna().any():
        col = row.index[row.isna()][0]
        raise UserError(
            f"direction file {name}: column {col} holds {df.iloc[0][col]!r}, not a number"
        )
    return np.array(row, dtype=np.float64)  # a writable copy


def _read_regressor(path: Path, where: str) -> ScoreRegressor:
    """A gradient model (``.pt`` state dict + ``.json`` shape) read safely; every problem is
    one ``UserError`` line naming the file."""
    meta_path = path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
        model = ScoreRegressor(int(meta["dim"]), [int(h) for h in meta["hidden"]])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"gradient model {path.name} in {where}: its shape file {meta_path.name} is missing"
            f" or broken ({type(exc).__name__}: {exc}); write it again with find_directions"
        ) from None
    state = read_state_file(path, config_key=f"gradient model in {where}")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"gradient model {path} ({where}) does not hold a state dict of tensors")
    check_state_dict(model, state, f"{path} ({where})")
    model.load_state_dict(state)
    return model


def read_directions(folder: Path, layer: str, source: str = "") -> Directions:
    """Read the directions for ``layer`` from a folder in the layout above; ``source`` names
    the folder in error messages (e.g. a direction run, whose files sit in a temporary
    folder)."""
    folder = Path(folder)
    where = source or str(folder)
    if not folder.is_dir():
        raise MissingFile(f"directions.path={folder} is not a folder")
    manifest = {}
    if (folder / MANIFEST).is_file():
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except ValueError as exc:
            raise UserError(f"{MANIFEST} in {where} is not valid JSON ({exc})") from None
    vec_dir = folder / VECTOR_DIR if (folder / VECTOR_DIR).is_dir() else folder
    vectors: dict[str, dict[str, np.ndarray]] = {}
    layers_seen: set[str] = set()
    for f in sorted(vec_dir.glob("*_change_*_vector_*.csv")):
        m = _CSV.match(f.name)
        if not m:
            continue
        p, file_layer, group = m.groups()
        layers_seen.add(file_layer)
        if file_layer == layer:
            vectors.setdefault(p, {})[group] = read_vector_csv(f, where)
    fields = {}
    models = {}
    methods = {}
    dims = {len(v) for t in vectors.values() for v in t.values()}
    for p in CORE_PROPERTIES:
        model_path = folder / MODEL_DIR / f"{p}_{layer}.pt"
        if p in vectors:
            methods[p] = "svm"
        elif model_path.is_file():
            model = _read_regressor(model_path, where)
            fields[p] = gradient_field(model)
            models[p] = model
            methods[p] = "gradient"
            dims.add(int(model.x_mean.shape[0]))
        else:
            others = sorted(layers_seen - {layer})
            hint = f"; files there are for layer(s) {others}" if others else ""
            raise UserError(
                f"no {p!r} direction for layer {layer!r} in {where}: expected"
                f" {VECTOR_DIR}/{p}_change_{layer}_vector_<group>.csv or"
                f" {MODEL_DIR}/{p}_{layer}.pt{hint}"
            )
    if len(dims) != 1:
        raise UserError(f"direction files in {where} have different lengths {sorted(dims)}")
    dim = dims.pop()
    if manifest and manifest.get("layer") not in (None, layer):
        raise UserError(f"{where} holds directions for layer {manifest['layer']!r}, not {layer!r}")
    return Directions(
        layer=layer,
        dim=dim,
        vectors=vectors,
        fields=fields,
        method=methods,
        source=source or f"files: {folder}",
        medians=manifest.get("medians"),
        models=models,
    )
