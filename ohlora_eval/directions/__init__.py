"""Direction finding: fit (SVM, gradient), record as a tracked stage, store, and resolve.

The ``Directions`` data type itself lives in the pipeline (``pipeline/directions.py``),
since editing needs it; this package is how directions are found. It may import
``tracking`` (a fit is a run) and ``pipeline``/``models``; see docs/architecture.md.
"""

from ohlora_eval.pipeline.directions import Directions

__all__ = ["Directions"]
