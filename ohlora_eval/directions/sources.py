"""Where an evaluation's directions come from (the ``directions`` config group).

Every source has ``resolve(generator, scorer, layer, uri, root, progress) -> Directions``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from mlflow.tracking import MlflowClient

from ..protocols import Generator, PropertyScorer
from ..tracking import file_lock, store_root
from .base import Directions
from .stage import FitSpec, find_latest, load_run, run_stage, spec_hash
from .store import read_directions


@dataclass
class TrackedDirections(FitSpec):
    """Directions from a direction run: ``run_id`` if given, else the newest finished run
    fitted with exactly this spec (the ``FitSpec`` fields) on this generator and scorer,
    else fit one now (``directions=latest``, the default)."""

    run_id: str | None = None
    fit_if_missing: bool = True

    def spec(self) -> FitSpec:
        return FitSpec(**{f.name: getattr(self, f.name) for f in fields(FitSpec)})

    def resolve(
        self,
        generator: Generator,
        scorer: PropertyScorer,
        layer: str,
        uri: str,
        root: str,
        progress: bool = False,
    ) -> Directions:
        client = MlflowClient(uri, registry_uri=uri)
        if self.run_id:
            return load_run(client, str(self.run_id), layer)
        spec = self.spec()
        spec.check()
        ident = spec.identity(generator, scorer, layer)
        # Parallel sweep jobs wanting the same missing directions: one fits, the others
        # wait and then find its run.
        with file_lock(store_root(root) / "locks" / f"directions-{spec_hash(ident)}.lock"):
            found = find_latest(client, ident)
            if found:
                return load_run(client, found, layer)
            if not self.fit_if_missing:
                raise ValueError(
                    "no finished direction run matches this generator, layer and spec;"
                    " run python -m ohlora_eval.find_directions first or set"
                    " directions.fit_if_missing=true"
                )
            dirs, _ = run_stage(
                generator,
                scorer,
                layer,
                spec,
                uri,
                root,
                progress,
                extra_tags={"fitted_for": "evaluation"},
            )
        return dirs


@dataclass
class FileDirections:
    """Directions read from a folder of Oh-LoRA vector CSVs (``directions=files``)."""

    path: str = "???"

    def resolve(
        self,
        generator: Generator,
        scorer: PropertyScorer,
        layer: str,
        uri: str,
        root: str,
        progress: bool = False,
    ) -> Directions:
        if self.path in ("???", "", None):
            raise ValueError(
                "directions=files needs directions.path=<folder with property_score_vectors/*.csv>"
            )
        return read_directions(self.path, layer)
