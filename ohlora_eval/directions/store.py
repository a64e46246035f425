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
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

VECTOR_DIR = "property_score_vectors"
MODEL_DIR = "gradient_models"
MANIFEST = "directions.json"
_CSV = re.compile(r"^(eyes|mouth|pose)_change_(\w+?)_vector_([hl]{4}|all)\.csv$")


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


def read_vector_csv(path: Path) -> np.ndarray:
    """One Oh-LoRA direction CSV -> (dim,) float64, the values exactly as written (the first
    row). The original edited with these float64 values (``measure.edit_dtype=float64``);
    a float32 edit casts them, which gives back the float32 vector that was written."""
    df = pd.read_csv(path, index_col=0)
    if df.shape[0] < 1 or not all(str(c).isdigit() for c in df.columns):
        raise ValueError(f"{path} is not an Oh-LoRA direction file (index column, then 0..dim-1)")
    return np.array(df.iloc[0], dtype=np.float64)  # a writable copy


def read_directions(folder: Path, layer: str, source: str = "") -> Directions:
    """Read the directions for ``layer`` from a folder in the layout above."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"directions.path={folder} is not a folder")
    manifest = {}
    if (folder / MANIFEST).is_file():
        manifest = json.loads((folder / MANIFEST).read_text())
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
            vectors.setdefault(p, {})[group] = read_vector_csv(f)
    fields = {}
    models = {}
    methods = {}
    dims = {len(v) for t in vectors.values() for v in t.values()}
    for p in CORE_PROPERTIES:
        model_path = folder / MODEL_DIR / f"{p}_{layer}.pt"
        if p in vectors:
            methods[p] = "svm"
        elif model_path.is_file():
            meta = json.loads(model_path.with_suffix(".json").read_text())
            model = ScoreRegressor(int(meta["dim"]), meta["hidden"])
            model.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
            fields[p] = gradient_field(model)
            models[p] = model
            methods[p] = "gradient"
            dims.add(int(meta["dim"]))
        else:
            others = sorted(layers_seen - {layer})
            hint = f"; files there are for layer(s) {others}" if others else ""
            raise ValueError(
                f"no {p!r} direction for layer {layer!r} in {folder}: expected"
                f" {VECTOR_DIR}/{p}_change_{layer}_vector_<group>.csv or"
                f" {MODEL_DIR}/{p}_{layer}.pt{hint}"
            )
    if len(dims) != 1:
        raise ValueError(f"direction files in {folder} have different lengths {sorted(dims)}")
    dim = dims.pop()
    if manifest and manifest.get("layer") not in (None, layer):
        raise ValueError(
            f"{folder} holds directions for layer {manifest['layer']!r}, not {layer!r}"
        )
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
