"""Where an evaluation's directions come from (the ``directions`` config group).

Every source has ``resolve(generator, scorer, layer, where, progress) -> Directions``
(``where``: the store, a ``tracking.store.StoreRef``); it is also passed ``measure`` (how
faces are measured) and, under ``execution=ray``, ``executor`` (where sampled faces are
scored; ``pipeline.executor.Executor``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ohlora_eval.directions.spec import TrackedSpec, method_label, spec_hash
from ohlora_eval.directions.stage import find_latest, load_run, run_stage
from ohlora_eval.directions.store import read_directions
from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.cache import file_lock
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.sample import FaceSetup
from ohlora_eval.progress import say
from ohlora_eval.tracking.store import StoreRef, store_root


@dataclass
class TrackedDirections(TrackedSpec):
    """Directions from a direction run: ``run_id`` if given, else the newest finished run
    fitted with exactly this spec (the ``FitSpec`` fields) on this generator and scorer,
    else fit one now (``directions=latest``, the default; its fields: ``TrackedSpec``)."""

    def resolve(
        self, faces: FaceSetup, where: StoreRef, context: MeasureContext = MeasureContext()
    ) -> Directions:
        client, layer = where.client(), faces.layer
        if self.run_id:
            return load_run(client, str(self.run_id), layer)
        spec = self.spec()
        spec.check()
        ident = spec.identity(faces)
        # Parallel sweep jobs wanting the same missing directions: one fits, the others
        # wait and then find its run.
        with file_lock(store_root(where.root) / "locks" / f"directions-{spec_hash(ident)}.lock"):
            found = find_latest(client, ident)
            if found:
                dirs = load_run(client, found, layer)
                say(f"directions from {dirs.source}")
                return dirs
            why = (
                f"no finished direction run for layer {layer} with spec {spec_hash(ident)}"
                f" ({method_label(spec.method)}, n={spec.n:,}, seed {spec.seed}) on"
                f" {type(faces.generator).__name__} and {type(faces.scorer).__name__}"
            )
            if not self.fit_if_missing:
                raise ConfigError(
                    f"{why}; run python -m ohlora_eval.find_directions first or set"
                    " directions.fit_if_missing=true"
                )
            say(f"{why}: fitting one now (directions.run_id=<run> picks an existing one)")
            dirs, _ = run_stage(
                faces, spec, where, context, extra_tags={"fitted_for": "evaluation"}
            )
        return dirs


@dataclass
class FileDirections:
    """Directions read from a folder of Oh-LoRA vector CSVs (``directions=files``)."""

    path: str = "???"

    def resolve(
        self, faces: FaceSetup, where: StoreRef, context: MeasureContext = MeasureContext()
    ) -> Directions:
        if self.path in ("???", "", None):
            raise ConfigError(
                "directions=files needs directions.path=<folder with property_score_vectors/*.csv>"
            )
        return read_directions(self.path, faces.layer)
