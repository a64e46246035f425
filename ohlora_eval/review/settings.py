"""The ``review`` settings (``ReviewSettings``): one dataclass for their defaults and their
checks, registered by ``apps/config.py`` as the ``review=default`` config schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ohlora_eval.errors import ConfigError, int_in, number_in
from ohlora_eval.review.defaults import DEFAULT_FACE_BOX, DEFAULT_RANK_BY


@dataclass
class ReviewSettings:
    """The ``review`` settings, with their defaults: one source for both (``apps/config.py``
    registers this dataclass as the ``review=default`` config schema), checked by ``checked``.

    Review aids for the human pick: per-vector bootstrap intervals of r, Spearman's rho,
    cross-property leakage and edit locality (extra per_vector.csv columns and run
    metrics), a review ranking, and the offline page review/index.html. The ranking is
    an expression over per_vector.csv columns (+ - * / **, abs, sqrt, log, exp, minimum,
    maximum) or a {column: weight} mapping, e.g.
    ``python -m ohlora_eval 'review.rank_by=sum_abs_corr - 0.5*max_leak - 2*bg_drift'``.
    """

    rank_by: Any = DEFAULT_RANK_BY  # an expression or a {column: weight} mapping
    n_boot: int = 200  # bootstrap resamples of each vector's grid images
    ci_level: float = 0.95  # confidence level of the interval of each r
    seed: int = 0  # the resamples are drawn from this seed (the same for every vector)
    # face region: the ellipse in [x0, y0, x1, y1], x and y in [-1, 1], y down
    face_box: list[float] = field(default_factory=lambda: list(DEFAULT_FACE_BOX))
    analysis_size: int = 32  # images are area-averaged to this size for drift and face IoU
    page: bool = True  # write review/index.html with the run's artifacts
    max_cards: int | None = 300  # at most this many cards (passed first, then near misses)
    # near misses: failed vectors whose every |r| is within this of its cutoff, shown after the
    # passed ones with their contact sheets (0 = none)
    near_miss_margin: float = 0.05
    local_dir: str | None = None  # a local copy of the page: <local_dir>/<run_id>/index.html

    @classmethod
    def from_cfg(cls, node: Any | None) -> ReviewSettings:
        """From the ``review`` config node as a plain mapping (None = defaults).

        Raises ConfigError (a ValueError) naming the ``review.*`` field on bad values, before any
        heavy work, so the run can fail with a one-line reason.
        """
        if node is None:
            return cls().checked()
        raw = dict(node)
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"review.{unknown[0]} is not a review setting;"
                f" known: {', '.join(cls.__dataclass_fields__)}"
            )
        return cls(**raw).checked()

    def checked(self) -> ReviewSettings:
        if isinstance(self.rank_by, Mapping):
            self.rank_by = {str(k): v for k, v in self.rank_by.items()}
        _check_rank_spec(self.rank_by)
        int_in("review.n_boot", self.n_boot, 2, 100_000)
        int_in("review.seed", self.seed, 0, 2**32 - 1)
        number_in(
            "review.ci_level", self.ci_level, 0, 1, low_open=True, high_open=True, hint="e.g. 0.95"
        )
        from ohlora_eval.review.locality import check_face_box  # torch: only when checking

        self.face_box = check_face_box(self.face_box)
        int_in("review.analysis_size", self.analysis_size, 8, 1024)
        if not isinstance(self.page, bool):
            raise ConfigError(f"review.page={self.page!r} must be true or false")
        self.near_miss_margin = number_in(
            "review.near_miss_margin",
            self.near_miss_margin,
            0,
            1,
            hint="0 = no near misses; e.g. 0.05",
        )
        if self.max_cards is not None:
            int_in("review.max_cards", self.max_cards, 0, hint="or null: no limit")
        return self


def _check_rank_spec(spec: str | Mapping[str, float]) -> None:
    """Evaluate ``spec`` on an empty table with every column a run has: bad names fail now.
    (pandas and the table are imported here, not with the schema: composing a config, as
    ``--help`` does, needs neither.)"""
    import pandas as pd

    from ohlora_eval.pipeline.judge import IDENTITY_COLUMNS, PER_VECTOR_COLUMNS
    from ohlora_eval.review.table import REVIEW_COLUMNS, rank_scores

    cols = [*PER_VECTOR_COLUMNS, *IDENTITY_COLUMNS, *REVIEW_COLUMNS]
    empty = pd.DataFrame({c: pd.Series(dtype=object if c in _TEXT else float) for c in cols})
    rank_scores(empty, spec)


_TEXT = {"svm_group_name", "passed", "fail_reason", "identity_note"}
