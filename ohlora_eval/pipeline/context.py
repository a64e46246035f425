"""What a measurement needs besides what it measures and how: ``MeasureContext``.

``MeasureSettings`` (``pipeline/measure_settings.py``) says how images are measured and
enters the measurement key; the context says where the work is shown, where it runs and
where its results are kept, and changes no number: the same chunks give the same scores
with or without a progress bar, on Ray workers or here, cached or not.

Pure computation (no MLflow, Hydra or OmegaConf); docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ohlora_eval.pipeline.cache import MeasurementCache
    from ohlora_eval.pipeline.executor import Executor


@dataclass(frozen=True)
class MeasureContext:
    """Where a measurement is shown, run and kept (defaults: quiet, here, not kept)."""

    progress: bool = False  # a progress bar on stderr
    executor: Executor | None = None  # runs the chunks or face batches (None: a LocalExecutor)
    cache: MeasurementCache | None = None  # a screening's measured chunks (None: not kept)
