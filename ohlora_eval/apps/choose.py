"""``python -m ohlora_eval.choose run_id=<screening run>``: tag the run a person chose
(tag ``chosen`` = ``true``, shown in the MLflow UI); the run that had the tag loses it."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.registry import choose_run
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)


@hydra_app("choose")
def main(cfg: DictConfig) -> None:
    log.info(f"ohlora_eval.choose: {choose(cfg)}", extra=STDOUT)


def choose(cfg: DictConfig) -> str:
    uri = store.resolve_uri(cfg.tracking.uri, cfg.tracking.root)
    with store.usable(uri):
        said = choose_run(store.StoreRef(uri, cfg.tracking.root).client(), str(cfg.run_id))
    note_run(str(cfg.run_id), uri)
    return said


if __name__ == "__main__":
    main()
