"""Where an evaluation's directions come from (the ``directions`` config group)."""

from __future__ import annotations

from dataclasses import dataclass

from ..groups import medians
from ..protocols import CORE_PROPERTIES, GROUP_PROPERTIES, Generator, PropertyScorer
from ..sample import sample_and_score
from .base import ALL_GROUPS, Directions
from .svm import fit_svm_direction


@dataclass
class FitDirections:
    """Fit directions inside the evaluation run (``directions=svm``)."""

    n: int = 10_000
    ratio: float = 0.2
    seed: int = 1_000_003
    method: str = "svm"
    grouped: bool = False

    def resolve(
        self, generator: Generator, scorer: PropertyScorer, layer: str, progress: bool = False
    ) -> Directions:
        if self.method != "svm" or self.grouped:
            raise ValueError(
                f"directions.method={self.method!r} grouped={self.grouped} is not supported by "
                "in-run fitting; use directions.method=svm directions.grouped=false"
            )
        _, mid, scores = sample_and_score(
            generator, scorer, self.n, self.seed, layer, progress=progress
        )
        x = mid.cpu().numpy()
        vectors = {}
        for p in CORE_PROPERTIES:
            d, _ = fit_svm_direction(x, scores[p], self.ratio, seed=self.seed)
            vectors[p] = {ALL_GROUPS: d}
        has_groups = all(p in scores for p in GROUP_PROPERTIES)
        return Directions(
            layer=layer,
            dim=x.shape[1],
            vectors=vectors,
            method=dict.fromkeys(CORE_PROPERTIES, "svm"),
            source=f"fitted in run: svm n={self.n} ratio={self.ratio}",
            medians=medians(scores) if has_groups else None,
        )
