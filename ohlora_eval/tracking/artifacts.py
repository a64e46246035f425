"""What an evaluation run leaves in MLflow: tables, latents, plots, contact sheets, review page.

Contact sheets are the one place images are made again after measuring (for
people to look at). They depend on the measurement only, so they are kept beside
it in the measurement cache and made at most once per vector, and stored in MLflow
once per measurement: a run logs (under ``review/sheets/``) only the sheets no live
run of the same measurement has logged, and links to the others (``SheetLedger``).
A cutoff sweep or a re-judge therefore adds tables, not images. The review page and
the ``grids/*/index.html`` galleries show linked sheets from disk (relative paths
within the store) and in MLflow's UI (``review.page``); the local copy of the page
(``review.local_dir``) links to the sheets in the store instead of copying them.
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import posixpath
import shlex
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from ohlora_eval import review
from ohlora_eval.errors import UserError
from ohlora_eval.formats.pictures import contact_sheet, summary_plot
from ohlora_eval.pipeline import fingerprint, judge
from ohlora_eval.pipeline.cache import atomic_write, file_lock
from ohlora_eval.pipeline.edit import EditSetup, edited_mids
from ohlora_eval.pipeline.measure import synthesize, to_mid
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.tracking import store
from ohlora_eval.tracking.runs import log_hydra_files, timed

SHEETS = "review/sheets"  # the one folder of a run's own contact sheets
LEDGER = "logged.json"  # beside the sheet files: case -> the run that logged it


def per_image_table(scores: np.ndarray, grid: np.ndarray, cases: np.ndarray) -> pd.DataFrame:
    n, m, _ = scores.shape
    df = pd.DataFrame({"case": np.repeat(cases, m), "pm_idx": np.tile(np.arange(m), n)})
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_pm"] = np.tile(grid[:, k], n)
    for k, p in enumerate(CORE_PROPERTIES):
        df[f"{p}_score"] = scores[:, :, k].reshape(-1)
    return df


def write_per_image(
    path: Path, scores: np.ndarray, grid: np.ndarray, cases: np.ndarray, block: int = 20_000
) -> None:
    """``per_image_table(...).to_csv(path, index=False)`` written ``block`` vectors at a time
    (the same bytes; the table of a 1,000,000-vector run, 50 million rows, is never whole)."""
    with open(path, "w", newline="") as fh:
        for lo in range(0, max(len(cases), 1), block):
            part = per_image_table(scores[lo : lo + block], grid, cases[lo : lo + block])
            part.to_csv(fh, index=False, header=lo == 0)


def sheet_title(row: pd.Series) -> str:
    """Measurement facts only (no verdict): the same sheet serves every cutoff."""
    rs = "  ".join(f"{p} r={row[f'{p}_corr']:+.3f}" for p in CORE_PROPERTIES)
    group = f" group {row['svm_group_name']}" if row["svm_group_name"] else ""
    return f"case {int(row['case'])}{group}: {rs}"


def render_sheet(
    setup: EditSetup,
    latent: np.ndarray,
    groups: list[str],
    title: str,
    min_tile: int = 128,
    max_tile: int = 4096,
) -> Image.Image:
    """Generate one vector's edit grid again and lay it out as a labelled contact sheet."""
    generator, layer = setup.generator, setup.layer
    with torch.inference_mode():
        mid = to_mid(generator, torch.as_tensor(latent, dtype=torch.float32), layer)
        dirs = setup.directions.for_vectors(mid, groups if setup.directions.grouped else None)
        images = synthesize(generator, edited_mids(mid, dirs, setup.steps), layer)
    return contact_sheet(images, setup.grid, title, min_tile=min_tile, max_tile=max_tile)


@dataclass
class SheetMaker:
    """Contact sheets of a run's vectors, made on demand and kept in ``folder`` until a run
    stores them in MLflow (``SheetLedger``; a file store's copy is then the one kept)."""

    setup: EditSetup
    per_vector: pd.DataFrame
    latents: np.ndarray
    folder: Path
    min_tile: int = 64  # small faces enlarged to this (tracking.sheet_cell; a page holds hundreds)
    max_tile: int = 128  # large ones (StyleGAN's 256 px) are reduced

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index = {int(c): i for i, c in enumerate(self.per_vector["case"])}

    def file(self, case: int) -> Path:
        """Where the sheet of ``case`` is kept (made or not)."""
        return self.folder / f"case_{int(case):05d}.png"

    def path(self, case: int) -> Path:
        """The sheet of ``case``, made now if it is not kept."""
        path = self.file(case)
        if not path.exists():
            i = self._index[int(case)]
            row = self.per_vector.iloc[i]
            sheet = render_sheet(
                self.setup,
                self.latents[i : i + 1],
                [row["svm_group_name"]],
                sheet_title(row),
                self.min_tile,
                self.max_tile,
            )
            buf = io.BytesIO()
            sheet.save(buf, format="PNG")
            atomic_write(path, buf.getvalue())
        return path

    def render(self, case: int) -> Image.Image:
        return Image.open(self.path(case))


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


def local_dir(artifact_uri: str | None) -> Path | None:
    """The folder of a ``file:`` (or plain path) artifact URI; None for any remote store."""
    if not artifact_uri:
        return None
    parsed = urlparse(artifact_uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return Path(artifact_uri)
    return None


@dataclass(frozen=True)
class Logged:
    """A contact sheet stored in MLflow: the run and the artifact path."""

    run_id: str
    path: str


class SheetLedger:
    """Which run stored each contact sheet of one measurement (``<sheet folder>/logged.json``),
    so that runs re-using a measurement link to its sheets instead of storing them again.

    Entries are checked against the store before use (the run is live and still holds
    the file); a sheet whose run was deleted is logged again. Used under ``open``,
    which holds a lock on the folder: parallel sweep jobs take turns, and a later one
    links to what an earlier one logged.
    """

    def __init__(self, folder: Path, client: MlflowClient) -> None:
        self.folder = folder
        self.client = client
        self.uri = store.display_uri(client.tracking_uri)
        self._entries: dict[str, dict[str, str]] = {}
        self._runs: dict[str, set[str] | None] = {}

    @classmethod
    @contextlib.contextmanager
    def open(cls, folder: Path, client: MlflowClient) -> Iterator[SheetLedger]:
        with file_lock(folder / ".ledger.lock"):
            ledger = cls(folder, client)
            ledger._load()
            yield ledger

    def _load(self) -> None:
        try:
            data = json.loads((self.folder / LEDGER).read_text())
        except (OSError, ValueError):
            data = {}
        self._entries = {k: v for k, v in data.items() if isinstance(v, dict)}

    def _held(self, run_id: str) -> set[str] | None:
        """The sheet paths ``run_id`` holds, or None when the run is gone."""
        if run_id not in self._runs:
            try:
                run = store.retry(self.client.get_run, run_id)
                ok = run.info.lifecycle_stage == "active"
                files = {a.path for a in store.retry(self.client.list_artifacts, run_id, SHEETS)}
            except Exception:  # noqa: BLE001 - a run or folder that cannot be read is gone
                ok, files = False, set()
            self._runs[run_id] = files if ok else None
        return self._runs[run_id]

    def lookup(self, cases: Iterable[int]) -> dict[int, Logged]:
        """The cases whose sheet a live run of this store holds."""
        found = {}
        for case in cases:
            entry = self._entries.get(str(int(case)))
            if not entry or entry.get("uri") != self.uri:
                continue
            held = self._held(entry["run_id"])
            if held is not None and entry["path"] in held:
                found[int(case)] = Logged(entry["run_id"], entry["path"])
        return found

    def record(self, run_id: str, logged: Mapping[int, str]) -> None:
        for case, path in logged.items():
            self._entries[str(int(case))] = {"uri": self.uri, "run_id": run_id, "path": path}
        if logged:
            text = json.dumps(self._entries, indent=0, sort_keys=True)
            atomic_write(self.folder / LEDGER, text.encode())


class Linker:
    """Relative links from a page to sheets in the store (``SheetLink``), when the store keeps
    its artifacts in local folders; otherwise only the run and path (MLflow's UI)."""

    def __init__(self, client: MlflowClient, run_id: str, run_dir: Path | None) -> None:
        self.client = client
        self.run_id = run_id
        self._dirs: dict[str, Path | None] = {run_id: run_dir}

    def run_dir(self, run_id: str) -> Path | None:
        if run_id not in self._dirs:
            try:
                uri = store.retry(self.client.get_run, run_id).info.artifact_uri
            except Exception:  # noqa: BLE001 - no link from disk, MLflow's UI still works
                uri = None
            self._dirs[run_id] = local_dir(uri)
        return self._dirs[run_id]

    def link(
        self, logged: Logged, page_dir: Path | None, artifact_dir: str | None = None
    ) -> review.SheetLink:
        """``page_dir``: the folder the page will be in on disk; ``artifact_dir``: where the
        page is in this run's artifacts (its own sheets are then linked relatively)."""
        target = self.run_dir(logged.run_id)
        src = None
        if target is not None and page_dir is not None:
            src = Path(os.path.relpath(target / logged.path, page_dir)).as_posix()
        elif artifact_dir and logged.run_id == self.run_id:
            src = posixpath.relpath(logged.path, artifact_dir)
        return review.SheetLink(src, logged.run_id, logged.path)


def _unique(*groups: Iterable[int]) -> list[int]:
    seen: dict[int, None] = {}
    for group in groups:
        for c in group:
            seen.setdefault(int(c), None)
    return list(seen)


MEASURED_FILES = ("latents.npy", "per_image.csv")  # decided by the measurement and the cases
FILES_TAG = "ohlora.measurement_files"  # the run that stores them, when not this one
FILES_LEDGER = "files.json"  # beside the cache's sheet folder: who stored them


def _shared_files_run(
    client: MlflowClient, ledger: Path, cases: np.ndarray, names: Iterable[str]
) -> str | None:
    """A live run of this store that holds ``names`` for exactly these cases of this
    measurement (recorded in ``ledger``), or None."""
    try:
        entry = json.loads(ledger.read_text())
    except (OSError, ValueError):
        return None
    if entry.get("uri") != store.display_uri(client.tracking_uri):
        return None
    if entry.get("cases") != fingerprint.digest(np.asarray(cases, dtype=np.int64).tolist()):
        return None
    try:
        run = store.retry(client.get_run, entry["run_id"])
        held = {a.path for a in store.retry(client.list_artifacts, entry["run_id"])}
    except Exception:  # noqa: BLE001 - gone: this run stores them itself
        return None
    if run.info.lifecycle_stage != "active" or not set(names) <= held:
        return None
    return str(entry["run_id"])


def run_file(client: MlflowClient, run_id: str, name: str, dst: str | Path) -> str:
    """Download ``name`` of ``run_id``; a run that re-used another run's measurement points
    to the run that stores its latents and per-image scores (tag ``ohlora.measurement_files``)."""
    try:
        return client.download_artifacts(run_id, name, str(dst))
    except Exception:
        source = store.retry(client.get_run, run_id).data.tags.get(FILES_TAG)
        if not source or name not in MEASURED_FILES:
            raise
        return client.download_artifacts(source, name, str(dst))


@dataclass
class RunVectors:
    """What a screening run measured, read back: its table, its vectors and its config."""

    per_vector: pd.DataFrame
    latents: np.ndarray  # row i is the vector of per_vector row i
    config: dict


def read_run_vectors(client: MlflowClient, run_id: str) -> RunVectors:
    """``per_vector.csv``, ``latents.npy`` (followed to the run that stores them) and
    ``config.yaml`` of a screening run; a run without them is one ``UserError`` line."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            per_vector = pd.read_csv(
                client.download_artifacts(run_id, "per_vector.csv", tmp),
                keep_default_na=False,
                na_values=[""],
            )
            latents = np.load(run_file(client, run_id, "latents.npy", tmp))
            config = OmegaConf.to_container(
                OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
            )
        except Exception:
            raise UserError(
                f"run_id={run_id} has no per_vector.csv, latents.npy and config.yaml: only"
                " screening runs carry their vectors (imported results and re-judges do not)"
            ) from None
    return RunVectors(per_vector, latents, config)


def log_artifacts(out: RunOutputs) -> None:
    """Tables, latents, config, plot, contact sheets and the review page into the active run."""
    with timed("writing the run's artifacts"):
        _log_artifacts(out)


def _log_artifacts(out: RunOutputs) -> None:
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
        with file_lock(out.sheets.folder.parent / ".files.lock"):
            shared = _shared_files_run(client, files_ledger, cases, names)
            if shared is None:
                if settings["per_image"]:
                    write_per_image(folder / "per_image.csv", out.scores, out.grid, cases)
                if hasattr(out.latents, "save_npy"):  # drawn from the seed block by block
                    out.latents.save_npy(folder / "latents.npy")
                else:
                    np.save(folder / "latents.npy", out.latents)
                entry = {
                    "uri": store.display_uri(client.tracking_uri),
                    "run_id": out.run_id,
                    "cases": fingerprint.digest(np.asarray(cases, dtype=np.int64).tolist()),
                }
                atomic_write(files_ledger, json.dumps(entry).encode())
            else:
                store.retry(mlflow.set_tag, FILES_TAG, shared)
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(out.config))
        summary_plot(per_vector, out.cutoffs, folder / "summary.png")
        (folder / "run_summary.json").write_text(json.dumps(out.metrics, indent=2, sort_keys=True))
        ranked = review.review_order(per_vector, out.review.rank_by)
        passed = ranked.loc[ranked["passed"] == "O", "case"].head(settings["grids"]["passed"])
        best = ranked["case"].head(settings["grids"]["best"])
        needed = _unique(review.page_cases(per_vector, out.cutoffs, out.review), passed, best)
        with (
            timed(f"contact sheets and review page ({len(needed)} sheets)"),
            SheetLedger.open(out.sheets.folder, client) as ledger,
        ):
            where = ledger.lookup(needed)
            own = {c: f"{SHEETS}/case_{c:05d}.png" for c in needed if c not in where}
            where.update({c: Logged(out.run_id, path) for c, path in own.items()})
            if own:
                (folder / SHEETS).mkdir(parents=True, exist_ok=True)
            for case, path in own.items():
                shutil.copyfile(out.sheets.path(case), folder / path)
            note = _sheets_note(len(own), len(needed) - len(own))
            page = LinkedPage(
                out.run_id, per_vector, out.cutoffs, out.review, out.grid, note,
                select_command(settings),
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

    def _write(self, out_dir: Path, sheets: Mapping[int, Path | review.SheetLink]) -> None:
        s = self.settings
        review.write_review_page(
            out_dir,
            self.run_id,
            self.per_vector,
            sheets,
            self.cutoffs,
            rank_spec=s.rank_by,
            ci_level=s.ci_level,
            max_cards=s.max_cards,
            spearman_max=review.spearman_ceilings(self.grid),
            near_miss_margin=s.near_miss_margin,
            note=self.note,
            command=self.command,
        )

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


def linked_sheets(client: MlflowClient, run_id: str) -> dict[int, Logged]:
    """The contact sheets a run shows (``review/sheets.json``), else those it holds."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, "review/sheets.json", tmp)
            data = json.loads(Path(path).read_text())
            return {int(k): Logged(v["run_id"], v["path"]) for k, v in data.items()}
        except Exception:  # noqa: BLE001 - older runs: the sheets they hold themselves
            pass
    try:
        files = store.retry(client.list_artifacts, run_id, SHEETS)
    except Exception:  # noqa: BLE001 - no sheets: cards without pictures
        return {}
    found = {}
    for a in files:
        stem = Path(a.path).stem
        if stem.startswith("case_") and stem[5:].isdigit():
            found[int(stem[5:])] = Logged(run_id, a.path)
    return found
