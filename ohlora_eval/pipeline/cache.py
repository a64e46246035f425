"""Content-addressed measurement cache: what was measured once is never measured again.

A measurement (per-image scores of every vector's edit grid) depends only on the
generator and its weights, the scorer and its weights, the directions, the layer,
the grid, the vectors and the noise seed: their digest is the measurement key
(``measurement_key``), the name of the measurement's folder. Judging settings
(cutoffs, ranking) do not enter the key, so a cutoff sweep re-uses the scores of its
first point, and a run that died is resumed chunk by chunk.

Layout: ``<dir>/<key>/meta.json`` (what the key stands for) and one
``chunk_<lo>_<hi>.npz`` per chunk of vectors, written atomically and carrying a
checksum of its arrays together with the key and the vector range it belongs to:
a truncated or corrupt file, or one copied from another chunk or another
measurement, is detected (with a warning naming it), deleted and recomputed,
never trusted.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import threading
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ohlora_eval.pipeline.fingerprint import digest, model_identity

if TYPE_CHECKING:
    from torch import Tensor

    from ohlora_eval.pipeline.edit import EditSetup
    from ohlora_eval.pipeline.latents import SeededLatents

# Bump when the way scores are computed changes, so old entries stop matching.
MEASURE_VERSION = 1


def measurement_key(
    setup: EditSetup,
    latents: Tensor | SeededLatents,
    chunk: int,
    model_configs: Mapping[str, Any],
    noise_seed: int | None = None,
) -> tuple[str, dict]:
    """Everything that decides the per-image scores, and nothing that only judges them.

    ``model_configs`` are the generator's and scorer's settings as configured (without
    the device: where a model runs does not change what it computes).
    """
    meta = {
        "version": MEASURE_VERSION,
        "generator": model_identity(setup.generator),
        "scorer": model_identity(setup.scorer),
        **{k: dict(v) for k, v in model_configs.items()},
        "layer": setup.layer,
        "grid": setup.grid.tolist(),
        "vectors_per_batch": chunk,
        "noise_seed": noise_seed,
        "directions_run_id": setup.directions.run_id,
        "n_vectors": int(latents.shape[0]),
    }
    if setup.measure_settings.identity() is not None:  # only when not the clean default
        meta["measure"] = setup.measure_settings.identity()
    if setup.measure_settings.speed_identity() is not None:  # bf16, channels_last, compile, ...
        meta["speed"] = setup.measure_settings.speed_identity()
    rows = latents if hasattr(latents, "blocks") else latents.cpu().numpy()
    key = digest({**meta, "directions": setup.directions.identity(), "latents": rows})
    return key[:32], meta


def _checksum(arrays: Mapping[str, np.ndarray]) -> str:
    return digest({k: np.asarray(v) for k, v in arrays.items()})


def _read_checked(path: Path) -> dict[str, np.ndarray]:
    """A kept file's arrays (without its checksum), or a ValueError when they do not match
    the checksum stored with them."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    stored = str(arrays.pop("__checksum__"))
    if stored != _checksum(arrays):
        raise ValueError("its checksum does not match its contents")
    return arrays


class MeasurementCache:
    """Chunks of one measurement (one key) on disk."""

    def __init__(self, root: str | os.PathLike, key: str, meta: Mapping[str, Any]) -> None:
        self.dir = Path(root).expanduser().resolve() / key
        self.key = key
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            atomic_write(meta_path, json.dumps(dict(meta), indent=2, default=str).encode())

    def _path(self, lo: int, hi: int) -> Path:
        return self.dir / f"chunk_{lo:07d}_{hi:07d}.npz"

    def _place(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Where a chunk belongs, stored and checksummed with its arrays."""
        return {"__key__": np.array(self.key), "__range__": np.array([lo, hi], np.int64)}

    def load(self, lo: int, hi: int) -> dict[str, np.ndarray] | None:
        """The chunk's arrays, or None when absent or not trustworthy (then it is removed)."""
        path = self._path(lo, hi)
        if not path.exists():
            return None
        try:
            arrays = _read_checked(path)
            key, span = str(arrays.pop("__key__", "")), arrays.pop("__range__", None)
            if key != self.key or span is None or [int(x) for x in span] != [lo, hi]:
                where = f"vectors {list(map(int, span))}" if span is not None else "no range"
                raise ValueError(
                    f"it belongs to measurement {key or '(unknown)'}, {where}, not {self.key},"
                    f" vectors [{lo}, {hi}]"
                )
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is not trusted
            warnings.warn(
                f"cache chunk {path} is not used ({exc}); measuring those vectors again",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
            return None
        return arrays

    def save(self, lo: int, hi: int, arrays: Mapping[str, np.ndarray]) -> None:
        payload = {**{k: np.asarray(v) for k, v in arrays.items()}, **self._place(lo, hi)}
        buf = io.BytesIO()
        np.savez(buf, __checksum__=np.array(_checksum(payload)), **payload)
        atomic_write(self._path(lo, hi), buf.getvalue())

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive while measuring: parallel sweep jobs wait, then read instead of recomputing."""
        return file_lock(self.dir / ".lock")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one.

    The temporary name is unique to this process and thread: parallel sweep jobs
    that write the same file each rename their own copy, and the last one wins.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created with its folder) for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class EmbeddingCache:
    """An identity model's descriptors of one measurement's vectors, kept beside its chunks:
    ``<measurement dir>/identity/<model id>/part_<rows digest>.npz``, each file the vectors
    of one step (their rows, (k, m + 1, d) descriptors and each face's reason), checksummed
    with the measurement key, the model id and its rows like a chunk. Parts are read all at
    once (a run's scope is a few hundred vectors, an ``identity.scope=all`` run its all)."""

    def __init__(self, measurement_dir: str | os.PathLike, key: str, model_id: str) -> None:
        self.dir = Path(measurement_dir) / "identity" / model_id
        self.key = f"{key}/{model_id}"
        self.dir.mkdir(parents=True, exist_ok=True)

    def load(self) -> dict[int, tuple[np.ndarray, list[str]]]:
        """row -> (descriptors (m + 1, d), reasons); untrustworthy parts are removed."""
        out: dict[int, tuple[np.ndarray, list[str]]] = {}
        for path in sorted(self.dir.glob("part_*.npz")):
            try:
                arrays = _read_checked(path)
                if str(arrays["__key__"]) != self.key:
                    raise ValueError(f"it belongs to {arrays['__key__']}, not {self.key}")
                rows, vectors, reasons = arrays["rows"], arrays["vectors"], arrays["reasons"]
                if vectors.shape[0] != len(rows) or reasons.shape[:1] != rows.shape:
                    raise ValueError("its arrays do not have one row per vector")
            except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is not trusted
                warnings.warn(
                    f"identity cache part {path} is not used ({exc}); measuring those vectors"
                    " again",
                    stacklevel=2,
                )
                path.unlink(missing_ok=True)
                continue
            for i, row in enumerate(rows):
                out[int(row)] = (vectors[i], [str(r) for r in reasons[i]])
        return out

    def save(self, rows: list[int], vectors: np.ndarray, reasons: list[list[str]]) -> None:
        payload = {
            "rows": np.asarray(rows, dtype=np.int64),
            "vectors": np.asarray(vectors, dtype=np.float32),
            "reasons": np.array(reasons, dtype="<U200"),
            "__key__": np.array(self.key),
        }
        buf = io.BytesIO()
        np.savez(buf, __checksum__=np.array(_checksum(payload)), **payload)
        name = f"part_{digest([int(r) for r in rows])[:16]}.npz"
        atomic_write(self.dir / name, buf.getvalue())
