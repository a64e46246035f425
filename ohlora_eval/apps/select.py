"""``python -m ohlora_eval.select``: record the vectors a person picked as a registered model.

The selection is the product's most valuable output, so it is stored where it can
be found (Model Registry, alias), loaded (pyfunc), audited (manifest, contact
sheets, source-run tags) and re-checked (``python -m ohlora_eval.verify``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps.build import int_list
from ohlora_eval.apps.cli import UserError, hydra_app
from ohlora_eval.formats.z_vectors import read_z_table
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.aliases import check_alias, check_model_name
from ohlora_eval.tracking.registry import (
    SELECTIONS_EXPERIMENT,
    Selection,
    SelectionRequest,
    choose_run,
    record,
    repair,
    source_run,
)

log = logging.getLogger(__name__)


@hydra_app("select")
def main(cfg: DictConfig) -> None:
    select(cfg)


def select(cfg: DictConfig) -> Selection:
    # Everything that can be checked is checked before anything is written.
    name = check_model_name(cfg.name)
    alias = check_alias(cfg.alias) if cfg.alias not in (None, "") else None
    note = "" if cfg.note is None else str(cfg.note)
    if cfg.z_csv:
        if cfg.run_id or cfg.cases:
            raise UserError("give either z_csv=<file> or run_id=<run> cases=[...], not both")
    elif not cfg.run_id or cfg.cases is None:
        raise UserError("give run_id=<evaluation run> cases=[...] (or z_csv=<file>)")
    uri, _ = store.setup(SELECTIONS_EXPERIMENT, cfg.tracking.uri, cfg.tracking.root)
    where = store.StoreRef(uri, cfg.tracking.root)
    for line in repair(where.client(), name):
        log.warning(f"ohlora_eval.select: {line}", extra=STDOUT)
    if cfg.z_csv:
        source_run_id, cases = _evaluate_z_csv(cfg)
    else:
        source_run_id = str(cfg.run_id)
        cases = int_list("cases", cfg.cases)
        source_run(where.client(), source_run_id)  # exists, live, finished, a screening
    request = SelectionRequest(source_run_id, cases, name, alias, note, bool(cfg.allow_failed))
    selection = record(where, request)
    if cfg.choose:
        log.info(f"  {choose_run(where.client(), source_run_id)}", extra=STDOUT)
    return selection


def _evaluate_z_csv(cfg: DictConfig) -> tuple[str, list[int]]:
    """Evaluate the vectors of a z-vector file first; its ``case`` column (if any) numbers
    them, else they are cases 0..k-1 of the new run."""
    from ohlora_eval.apps.screen import evaluate

    eval_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in _SELECT_KEYS])
    z, cases = read_z_table(cfg.z_csv)  # a file that is not one: a UserError naming it
    res = evaluate(
        eval_cfg,
        latents=z,
        cases=np.arange(len(z)) if cases is None else cases,
        tags={"latents.source": str(Path(cfg.z_csv).resolve())},
    )
    return res.run_id, [int(c) for c in res.per_vector["case"]]


_SELECT_KEYS = ("run_id", "cases", "z_csv", "name", "alias", "note", "allow_failed", "choose")


if __name__ == "__main__":
    main()
