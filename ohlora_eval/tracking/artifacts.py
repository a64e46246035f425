"""What an evaluation run leaves in MLflow: tables, latents, plots, contact sheets (each with its
motion preview, an animated GIF), review page.

``log_artifacts`` writes all of it into the active run, once, at the end of the run
(``RunOutputs``). Contact sheets are made and stored once per measurement
(``tracking/contact_sheets.py``): a cutoff sweep or a re-judge therefore adds tables, not
images. The latents and per-image scores are the measurement's too: a run that re-uses a
measurement points to the run that stores them (``tracking/read_back.py`` follows the
pointer). The review page and the ``grids/*/index.html`` galleries show linked sheets from
disk (relative paths within the store) and in MLflow's UI (``review.page``); the local copy
of the page (``review.local_dir``) links to the sheets in the store instead of copying them
(``LinkedPage``).
"""

from __future__ import annotations

import html
import json
import logging
import os
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ohlora_eval import review
from ohlora_eval.formats.pictures import summary_plot
from ohlora_eval.pipeline import fingerprint, judge
from ohlora_eval.pipeline.cache import atomic_write, file_lock
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.progress import Step, phase
from ohlora_eval.tracking import store
from ohlora_eval.tracking.contact_sheets import (
    Linker,
    SheetLedger,
    SheetMaker,
    held_files,
    local_dir,
    sheet_title,
)
from ohlora_eval.tracking.read_back import FILES_TAG, SHEETS, Logged
from ohlora_eval.tracking.runs import log_hydra_files, timed

log = logging.getLogger(__name__)


def per_image_table(
    scores: np.ndarray,
    grid: np.ndarray,
    cases: np.ndarray,
    identity: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per image: case, pm_idx, the intended weights, the measured scores and, when
    the run measured identity, ``identity_distance`` (from the vector's unedited face;
    empty where the vector was not measured)."""
    n, m, _ = scores.shape
    df = pd.DataFrame({"case": np.repeat(cases, m), "pm_idx": np.tile(np.arange(m), n)})
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_pm"] = np.tile(grid[:, k], n)
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_score"] = scores[:, :, k].reshape(-1)
    if identity is not None:
        df["identity_distance"] = np.asarray(identity, dtype=np.float64).reshape(-1)
    return df


def write_per_image(
    path: Path,
    scores: np.ndarray,
    grid: np.ndarray,
    cases: np.ndarray,
    block: int = 20_000,
    identity: np.ndarray | None = None,
) -> None:
    """``per_image_table(...).to_csv(path, index=False)`` written ``block`` vectors at a time
    (the same bytes; the table of a 1,000,000-vector run, 50 million rows, is never whole)."""
    with open(path, "w", newline="") as fh:
        for lo in range(0, max(len(cases), 1), block):
            ids = None if identity is None else identity[lo : lo + block]
            part = per_image_table(scores[lo : lo + block], grid, cases[lo : lo + block], ids)
            part.to_csv(fh, index=False, header=lo == 0)


@dataclass
class RunOutputs:
    """Everything a screening run logs, gathered once at the end of the run."""

    run_id: str
    config: dict  # the resolved run config (config.yaml)
    per_vector: pd.DataFrame
    scores: np.ndarray  # (n, m, 3) measured
    grid: np.ndarray  # (m, 3) intended
    latents: np.ndarray  # (n, latent_dim)
    metrics: dict[str, float]
    cutoffs: dict[str, float]
    sheets: SheetMaker
    review: review.ReviewSettings
    identity: np.ndarray | None = None  # (n, m) identity distances (NaN: not measured)


FILES_LEDGER = "files.json"  # beside the cache's sheet folder: who stored them


def _shared_files_run(
    client: MlflowClient, ledger: Path, entry: Mapping[str, Any], names: Iterable[str]
) -> str | None:
    """A live run of this store that holds ``names`` for exactly what ``entry`` describes
    (store, cases of this measurement and the digest of their identity distances, None when
    the run measured none), as recorded in ``ledger``, or None."""
    try:
        found = json.loads(ledger.read_text())
    except (OSError, ValueError):
        return None
    if any(found.get(key) != value for key, value in entry.items() if key != "run_id"):
        return None
    held = held_files(client, str(found.get("run_id")))  # None: gone, this run stores them
    return str(found["run_id"]) if held is not None and set(names) <= held else None


def log_artifacts(out: RunOutputs) -> None:
    """Tables, latents, config, plot, contact sheets (and their motion previews) and the review
    page into the active run."""
    with phase("writing the run's artifacts (tables, plot, contact sheets, review page)") as step:
        _log_artifacts(out, step)


def _log_artifacts(out: RunOutputs, step: Step) -> None:
    settings = out.config["tracking"]
    client = MlflowClient(mlflow.get_tracking_uri())
    run_dir = local_dir(mlflow.get_artifact_uri())
    linker = Linker(client, out.run_id, run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_vector = out.per_vector
        per_vector.to_csv(folder / "per_vector.csv", index=False)
        judge.statistics(per_vector).to_csv(folder / "statistics.csv")
        # Latents and per-image scores are the measurement's: a run that re-uses it (a sweep
        # point, a re-judge) points to the run that stores them instead of storing them again.
        cases = per_vector["case"].to_numpy()
        names = ["latents.npy", *(["per_image.csv"] if settings["per_image"] else [])]
        files_ledger = out.sheets.folder.parent / FILES_LEDGER
        entry = {
            "uri": store.display_uri(client.tracking_uri),
            "run_id": out.run_id,
            "cases": fingerprint.digest(np.asarray(cases, dtype=np.int64).tolist()),
            "identity": None if out.identity is None else fingerprint.digest(out.identity)[:32],
        }
        with file_lock(out.sheets.folder.parent / ".files.lock"):
            shared = _shared_files_run(client, files_ledger, entry, names)
            if shared is None:
                if settings["per_image"]:
                    write_per_image(
                        folder / "per_image.csv", out.scores, out.grid, cases, identity=out.identity
                    )
                if hasattr(out.latents, "save_npy"):  # drawn from the seed block by block
                    out.latents.save_npy(folder / "latents.npy")
                else:
                    np.save(folder / "latents.npy", out.latents)
                atomic_write(files_ledger, json.dumps(entry).encode())
            else:
                store.retry(mlflow.set_tag, FILES_TAG, shared)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(out.config))
        summary_plot(per_vector, out.cutoffs, folder / "summary.png")
        (folder / "run_summary.json").write_text(json.dumps(out.metrics, indent=2, sort_keys=True))
        ranked = review.review_order(per_vector, out.review.rank_by)
        passed = ranked.loc[ranked["passed"] == "O", "case"].head(settings["grids"]["passed"])
        best = ranked["case"].head(settings["grids"]["best"])
        page_cases = review.page_cases(per_vector, out.cutoffs, out.review)
        needed = list(dict.fromkeys(int(c) for group in (page_cases, passed, best) for c in group))
        step.count(len(needed), "contact sheets")  # the heartbeat counts them from here
        with (
            timed(f"contact sheets and review page ({len(needed)} sheets)"),
            SheetLedger.open(out.sheets.folder, client) as ledger,
        ):
            where = ledger.lookup(needed)
            own = {c: f"{SHEETS}/case_{c:05d}.png" for c in needed if c not in where}
            step.advance(len(needed) - len(own))  # stored by another run: linked, not made
            where.update({c: Logged(out.run_id, path) for c, path in own.items()})
            if own:
                (folder / SHEETS).mkdir(parents=True, exist_ok=True)
            for case, path in own.items():  # each sheet with its motion preview beside it
                shutil.copyfile(out.sheets.path(case), folder / path)
                shutil.copyfile(out.sheets.preview(case), folder / review.preview_of(path))
                step.advance()
            if own:
                log.info(
                    f"ohlora_eval:   {len(own)} motion previews (animated GIFs) made in"
                    f" {out.sheets.preview_seconds:.1f} s"
                )
            note = _sheets_note(len(own), len(needed) - len(own))
            page = LinkedPage(
                out.run_id, per_vector, out.cutoffs, out.review, out.grid, note,
                select_command(settings), out.metrics.get("identity_threshold"),
            )  # fmt: skip
            page.write(folder, where, linker, run_dir)
            for name, cases in (("passed", passed), ("best", best)):
                home = run_dir / "grids" / name if run_dir else None
                review.write_sheet_gallery(
                    folder / "grids" / name,
                    f"run {out.run_id}: contact sheets of the {name} vectors",
                    [
                        (
                            sheet_title(_row(per_vector, c)),
                            linker.link(where[c], home, f"grids/{name}"),
                        )
                        for c in cases
                    ],
                )
            store.retry(mlflow.log_artifacts, str(folder))
            ledger.record(out.run_id, own)
            if run_dir is not None:  # stored on this disk now: the cache's copy is redundant
                for case in own:
                    out.sheets.file(case).unlink(missing_ok=True)
                    out.sheets.preview_file(case).unlink(missing_ok=True)
        log_hydra_files()
    page.write_local(where, linker, fallback=out.sheets.path)


def _sheets_note(own: int, linked: int) -> str:
    if not linked:
        return ""
    return (
        f"{own} contact sheets stored with this run, {linked} linked from the runs of the same"
        " measurement that stored them"
    )


def _row(per_vector: pd.DataFrame, case: int) -> pd.Series:
    return per_vector.loc[per_vector["case"] == int(case)].iloc[0]


@dataclass
class LinkedPage:
    """A run's review page whose sheets are ``Logged`` anywhere in the store: the artifact
    (``review/index.html`` and ``review/sheets.json``, case -> run and path) and the local
    copy (``<review.local_dir>/<run id>/index.html``)."""

    run_id: str
    per_vector: pd.DataFrame
    cutoffs: Mapping[str, float]
    settings: review.ReviewSettings
    grid: np.ndarray | None = None
    note: str = ""
    command: str = review.SELECT_COMMAND  # with the store's key when not ./mlruns
    identity_threshold: float | None = None  # cells and cards past it are flagged

    def _write(self, out_dir: Path, sheets: Mapping[int, Path | review.SheetLink]) -> None:
        inputs = review.PageInputs(
            self.run_id,
            self.per_vector,
            self.cutoffs,
            grid=self.grid,
            note=self.note,
            command=self.command,
            identity_threshold=self.identity_threshold,
        )
        review.write_review_page(out_dir, inputs, sheets, self.settings)

    def write(
        self, folder: Path, where: Mapping[int, Logged], linker: Linker, run_dir: Path | None
    ) -> None:
        """Into ``folder`` (the run's artifacts, before logging) whose logged place is
        ``run_dir`` (None: not a local folder)."""
        if not self.settings.page:
            return
        home = run_dir / "review" if run_dir else None
        links = {c: linker.link(w, home, "review") for c, w in where.items()}
        self._write(folder / "review", links)
        index = {str(c): {"run_id": w.run_id, "path": w.path} for c, w in sorted(where.items())}
        (folder / "review" / "sheets.json").write_text(json.dumps(index, indent=1))

    def write_local(
        self,
        where: Mapping[int, Logged],
        linker: Linker,
        fallback: Callable[[int], Path] | None = None,
    ) -> None:
        """The local copy: links to the sheets in the store when it keeps artifacts in local
        folders; else copies beside it (of ``fallback(case)``, a local file of the sheet)."""
        if not (self.settings.page and self.settings.local_dir):
            return
        dest = Path(self.settings.local_dir) / self.run_id
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        home = linker.run_dir(self.run_id)
        logged_page = home / "review" / "index.html" if home is not None else None
        if logged_page is not None and logged_page.is_file():
            # The logged page is on this disk and links into the store relatively: the local
            # copy only forwards to it (a few hundred bytes instead of a second page).
            target = Path(os.path.relpath(logged_page, dest.resolve())).as_posix()
            (dest / "index.html").write_text(_FORWARD.format(target=html.escape(target)))
            return
        sheets: dict[int, Path | review.SheetLink] = {}
        for case, logged in where.items():
            link = linker.link(logged, dest.resolve())
            sheets[case] = link if link.src or fallback is None else fallback(case)
        self._write(dest, sheets)


_FORWARD = """<!doctype html>
<meta charset="utf-8">
<meta http-equiv="refresh" content="0; url={target}">
<title>ohlora_eval review</title>
<p>The review page is <a href="{target}">{target}</a> (in the run's artifacts).</p>
"""


def select_command(tracking: Mapping[str, Any]) -> str:
    """The select command the review page builds, naming the store when it is not the
    default ``./mlruns`` (a pasted command must find the run): ``tracking.uri`` when one is
    set (or ``MLFLOW_TRACKING_URI``), else ``tracking.root``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or tracking.get("uri")
    if uri:
        return f"{review.SELECT_COMMAND} tracking.uri={shlex.quote(str(uri))}"
    root = str(tracking.get("root") or "mlruns")
    if Path(root).expanduser().resolve() == Path("mlruns").resolve():
        return review.SELECT_COMMAND
    absolute = str(Path(root).expanduser().resolve())
    return f"{review.SELECT_COMMAND} tracking.root={shlex.quote(absolute)}"
