"""ohlora_eval: screen a face generator's latent vectors for editable expressions.

The results in Python (docs/mlflow.md, "Results in Python"): ``runs()``, ``per_vector(run_id)``
and ``selection(model)``, from ``ohlora_eval.tracking.results``, and ``compare(a, b)`` from
``ohlora_eval.tracking.compare_runs``. They are loaded on first use, so ``import
ohlora_eval`` stays cheap (no MLflow, no torch).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_RESULTS = ("runs", "per_vector", "selection", "RecordedSelection")
_COMPARE = ("compare",)  # also the command's module, ohlora_eval/compare.py, which is callable

__all__ = ["__version__", *_RESULTS, *_COMPARE]


def __getattr__(name: str) -> Any:
    if name in _RESULTS:
        from ohlora_eval.tracking import results

        value = getattr(results, name)
        globals()[name] = value
        return value
    if name in _COMPARE:
        from ohlora_eval.tracking import compare_runs

        return getattr(compare_runs, name)  # not cached: importing the module rebinds it
    raise AttributeError(f"module 'ohlora_eval' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_RESULTS, *_COMPARE})
