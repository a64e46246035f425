"""``python -m ohlora_eval.find_directions``: fit edit directions as a tracked stage.

Composes the same ``directions`` node as the evaluation (``directions/spec.py``), so
with no arguments it fits exactly what a default evaluation looks for.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps import execution
from ohlora_eval.apps.build import ConfigError
from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.apps.config import check_all, measure_settings
from ohlora_eval.directions.stage import run_stage
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.sample import FaceSetup
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)


@hydra_app("find_directions")
def main(cfg: DictConfig) -> None:
    find_directions(cfg)


def find_directions(cfg: DictConfig) -> str:
    """Fit and log one direction run; returns its run id."""
    if cfg.directions.get("run_id"):
        raise ConfigError(
            f"directions.run_id={cfg.directions.run_id}: find_directions fits new directions;"
            " leave run_id unset (it picks a fitted run in the evaluation)"
        )
    where = store.StoreRef(
        store.resolve_uri(cfg.tracking.uri, cfg.tracking.root), cfg.tracking.root
    )
    spec = hydra.utils.instantiate(cfg.directions)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    spec.spec().check()
    measuring = measure_settings(resolved)
    check_all(cfg)  # every schema's checks, execution's included
    generator, scorer, _ = execution.models(resolved)  # as an evaluation (and a worker) builds them
    params = store.flatten(resolved)
    with execution.face_executor(cfg.get("execution"), resolved, measuring) as faces:
        if faces is not None:
            faces.start()  # join Ray and build the workers before a run is opened
        dirs, run_id = run_stage(
            FaceSetup(generator, scorer, cfg.layer, measuring),
            spec,
            where,
            MeasureContext(sys.stderr.isatty(), faces),
            params=params,
        )
    note_run(run_id, where.uri)
    log.info(
        f"\nohlora_eval.find_directions: {dirs.source}\n"
        f"  a default evaluation with these settings uses it; or pin it:"
        f" python -m ohlora_eval directions.run_id={run_id} layer={cfg.layer}\n"
        f"  look at it: {store.ui_hint(where.uri)}",
        extra=STDOUT,
    )
    return run_id


if __name__ == "__main__":
    main()
