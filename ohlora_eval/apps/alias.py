"""``python -m ohlora_eval.alias model=<name>/<version> alias=final``: point an alias of a
recorded selection at another version (``select`` moves one only when told)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from ohlora_eval.apps.cli import UserError, hydra_app
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.aliases import check_alias, check_model_name, move_alias
from ohlora_eval.tracking.registry import SELECTIONS_EXPERIMENT
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


@hydra_app("alias")
def main(cfg: DictConfig) -> None:
    log.info(f"ohlora_eval.alias: {set_alias(cfg)}", extra=STDOUT)


def set_alias(cfg: DictConfig) -> str:
    """Move ``cfg.alias`` of the registered model to the version in ``cfg.model``."""
    model = str(cfg.model)
    name, _, version = model.rpartition("/")
    if not name or not version.isdigit():
        raise UserError(f"model={model}: use <name>/<version>, e.g. model=ohlora-final-latents/3")
    check_model_name(name, "model")
    alias = check_alias("" if cfg.alias is None else str(cfg.alias))
    uri, _ = store.setup(SELECTIONS_EXPERIMENT, cfg.tracking.uri, cfg.tracking.root)
    client = store.StoreRef(uri, cfg.tracking.root).client()
    said = move_alias(client, name, version, alias)
    note_run(store.retry(client.get_model_version, name, version).run_id or "", uri)
    return said


if __name__ == "__main__":
    main()
