"""``python -m ohlora_eval.sheets run_id=<run> cases=[...]`` (or ``near_miss=0.05``):
contact sheets of any vectors of a screening run, failed ones included, generated again
from the run's latents, config and directions, and logged into that run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps.build import (
    edit_setup,
    int_list,
    preflight,
    replay_config,
    set_device,
)
from ohlora_eval.apps.cli import UserError, hydra_app
from ohlora_eval.errors import int_in, number_in
from ohlora_eval.pipeline import judge
from ohlora_eval.progress import STDOUT, phase
from ohlora_eval.tracking import store
from ohlora_eval.tracking.contact_sheets import IdentityMarks, SheetMaker
from ohlora_eval.tracking.read_back import RunView
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)

ARTIFACT_DIR = "sheets/requested"


@dataclass
class Sheets:
    run_id: str
    cases: list[int]
    files: list[Path]  # local copies, one per case
    artifact_dir: str  # where they are in the run's artifacts


@hydra_app("sheets")
def main(cfg: DictConfig) -> None:
    render_sheets(cfg)


def render_sheets(cfg: DictConfig) -> Sheets:
    run_id = str(cfg.run_id)
    uri = store.resolve_uri(cfg.tracking.uri, cfg.tracking.root)
    where = store.StoreRef(uri, cfg.tracking.root)
    client = where.client()
    with store.usable(uri):
        run = RunView.open(client, run_id, finished=False)  # any run with vectors
    per_vector, latents, config = run.per_vector, run.latents, OmegaConf.create(run.config)
    cases = _which_cases(cfg, run, config)
    rec = replay_config(
        config, cfg.tracking, run.tags.get("mlflow.experimentName", "-"), run.directions_run_id
    )
    if cfg.get("device"):
        set_device(rec, cfg.device)
    checked = preflight(rec, OmegaConf.to_container(rec, resolve=True))
    setup = edit_setup(rec, checked, where)
    folder = store.store_root(cfg.tracking.root) / "sheets" / run_id
    cell = int(config.get("tracking", {}).get("sheet_cell", SheetMaker.min_tile))
    marks = _identity_marks(run, setup.m)
    if marks is not None:
        folder = folder / f"identity-{marks.threshold:g}"
    maker = SheetMaker(setup, per_vector, latents, folder, min_tile=cell, marks=marks)
    files = []
    with phase(f"rendering contact sheets of run {run_id}", len(cases), "sheets") as step:
        for case in cases:
            files.append(maker.path(case))
            step.advance()
    for path in files:
        store.retry(client.log_artifact, run_id, str(path), ARTIFACT_DIR)
    note_run(run_id, uri)
    table = per_vector.set_index("case")
    log.info(f"\nohlora_eval.sheets: {len(files)} contact sheet(s) of run {run_id}", extra=STDOUT)
    for case, path in zip(cases, files, strict=True):
        verdict = "passed" if table.loc[case, "passed"] == "O" else table.loc[case, "fail_reason"]
        log.info(f"  case {case}: {path}  ({verdict})", extra=STDOUT)
    log.info(
        f"  logged in the run under {ARTIFACT_DIR}/; look at it: {store.ui_hint(uri)}",
        extra=STDOUT,
    )
    return Sheets(run_id, cases, files, ARTIFACT_DIR)


def _identity_marks(run: RunView, m: int) -> IdentityMarks | None:
    """A run that measured identity: each cell's distance (its per_image.csv) and the
    threshold it counted at, so the sheets frame the cells past it as the run's did."""
    threshold, per_vector = run.metrics.get("identity_threshold"), run.per_vector
    if "identity_max" not in per_vector.columns or threshold is None:
        return None
    try:
        cells = run.csv("per_image.csv", usecols=["case", "pm_idx", "identity_distance"])
    except Exception:  # noqa: BLE001 - no per-image table (tracking.per_image=false)
        return None
    table = cells.pivot(index="case", columns="pm_idx", values="identity_distance")
    table = table.reindex(index=per_vector["case"].astype(int), columns=range(m))
    return IdentityMarks(table.to_numpy(dtype=float), float(threshold))


def _which_cases(cfg: DictConfig, run: RunView, config: DictConfig) -> list[int]:
    per_vector = run.per_vector
    if cfg.cases is not None:
        if cfg.near_miss is not None:
            raise UserError("give cases=[...] or near_miss=<margin>, not both")
        return run.chosen(list(dict.fromkeys(int_list("cases", cfg.cases))), "draw")
    if cfg.near_miss is None:
        raise UserError("give cases=[...] or near_miss=<margin>, e.g. near_miss=0.05")
    margin = number_in("near_miss", cfg.near_miss, 0.0, 1.0, low_open=True)
    limit = int_in("max_cases", cfg.max_cases, 1)
    cutoffs = judge.check_cutoffs(config.cutoff)
    gap = judge.shortfall(per_vector, cutoffs)
    near = per_vector.assign(shortfall=gap)[judge.near_misses(per_vector, cutoffs, margin)]
    if near.empty:
        raise UserError(
            f"no failed vector of run {cfg.run_id} missed its cutoffs {cutoffs} by at most"
            f" {margin}; try a larger near_miss"
        )
    return [int(c) for c in near.sort_values(["shortfall", "case"])["case"].head(limit)]


if __name__ == "__main__":
    main()
