"""Fingerprints: stable hashes of what decides a computation (for caches and lineage).

One helper for every identity in the project: the measurement cache's key, a
direction fit's spec hash, a model's identity. A fingerprint depends on values,
never on where a class lives in the source tree or on the order of mapping keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def digest(obj: Any) -> str:
    """Stable SHA-256 (hex) of JSON-able data and numpy arrays (by dtype, shape and bytes)."""
    h = hashlib.sha256()

    def feed(o: Any) -> None:
        if isinstance(o, np.ndarray):
            h.update(f"nd{o.dtype.str}{o.shape}".encode())
            h.update(_bytes(o))
        elif hasattr(o, "blocks") and hasattr(o, "shape"):  # rows drawn block by block
            h.update(f"nd{np.dtype(o.dtype).str}{tuple(o.shape)}".encode())
            for block in o.blocks():  # the same bytes as the whole array's, in order
                h.update(_bytes(block))
        elif isinstance(o, Mapping):
            h.update(b"{")
            for k in sorted(o, key=str):
                h.update(str(k).encode() + b":")
                feed(o[k])
            h.update(b"}")
        elif isinstance(o, list | tuple):
            h.update(b"[")
            for x in o:
                feed(x)
                h.update(b",")
            h.update(b"]")
        else:
            h.update(json.dumps(o, default=str).encode())

    feed(obj)
    return h.hexdigest()


def _bytes(a: np.ndarray) -> memoryview | bytes:
    """An array's bytes in C order, without copying them when it is already contiguous."""
    a = np.ascontiguousarray(a)
    return memoryview(a).cast("B") if a.size else a.tobytes()


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks (checkpoints, imported files)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(model: object) -> dict[str, Any]:
    """What a generator or scorer is: its class name and its weights.

    ``weights_id`` (a hash of the weights) when the model has one; otherwise the
    object's ``id``, so a model that cannot say what it is never shares results.
    """
    return {
        "class": type(model).__qualname__,
        "weights": getattr(model, "weights_id", None) or f"object-{id(model)}",
    }
