"""Review aids for the human pick: measured criteria per vector and an offline review page.

The original system ends with a person reading each passed vector's 50 images
against four criteria. This package gives that person numbers for two of them
(do the three properties really change, and only them; do the background and
the face shape stay) and a page to pick from:

- ``correlations``: bootstrap intervals of r, Spearman's rho (and its ceiling on the
  grid), cross-property leakage;
- ``locality``: background drift and face-shape stability from pixels only (so any
  generator);
- ``table``: the per-vector review columns, run metrics and the ranking;
- ``page``: ``review/index.html``, one card per passed vector in rank order (then,
  marked, the near misses), whose checkboxes build the ``python -m ohlora_eval.select``
  command; it shows contact sheets from disk and inside MLflow's UI. Its Jinja2 templates
  (``templates/``), CSS and JavaScript (``static/``) are package data;
- ``settings``: ``ReviewSettings``, the ``review`` config group;
- ``steps``: the whole integration with an evaluation run: ``image_stats`` for the
  measuring step (``pipeline.measure.measure``), ``add_review_columns`` after judging,
  ``page_cases`` and ``build_review_page`` with the artifacts.

``review_order`` is used for everything shown in order. This module re-exports the
names other packages use, each loaded on first use (so importing ``review.settings``, as
composing a config does, loads neither torch nor pandas). This package may import
``pipeline`` only (docs/architecture.md).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "correlations": ("bootstrap_ci", "leakage", "spearman_ceilings", "spearman_rows"),
    "defaults": ("DEFAULT_RANK_BY",),
    "locality": ("locality_stats",),
    "page": (
        "SELECT_COMMAND",
        "PageInputs",
        "SheetLink",
        "near_misses",
        "preview_of",
        "shown_rows",
        "write_review_page",
        "write_sheet_gallery",
    ),
    "settings": ("ReviewSettings",),
    "steps": ("add_review_columns", "build_review_page", "image_stats", "page_cases"),
    "table": (
        "REVIEW_COLUMNS",
        "rank_by",
        "rank_scores",
        "review_metrics",
        "review_order",
        "review_table",
    ),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'ohlora_eval.review' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ohlora_eval.review.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
