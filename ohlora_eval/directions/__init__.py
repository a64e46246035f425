"""Direction finding: fit (SVM, gradient), record as a tracked stage, store, and resolve.

The ``Directions`` data type itself lives in the pipeline (``pipeline/directions.py``),
since editing needs it; this package is how directions are found. It may import
``tracking`` (a fit is a run) and ``pipeline``/``models``; see docs/architecture.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Directions"]


def __getattr__(name: str) -> Any:
    """``Directions``, loaded on first use (it needs torch; composing a config does not)."""
    if name == "Directions":
        from ohlora_eval.pipeline.directions import Directions

        return Directions
    raise AttributeError(f"module 'ohlora_eval.directions' has no attribute {name!r}")
