"""Contact sheets: one vector's edit grid laid out for people to look at, made on demand,
stored in MLflow once per measurement and linked to from every run that shows it.

Contact sheets are the one place images are made again after measuring. They depend
on the measurement only, so they are kept beside it in the measurement cache and made at
most once per vector (``SheetMaker``), and stored in MLflow once per measurement: a run
logs (under ``review/sheets/``) only the sheets no live run of the same measurement has
logged, and links to the others (``SheetLedger``, ``Logged``). Pages link to them by
relative path when the store keeps its artifacts on this disk (``Linker``), else by run
and path (MLflow's UI); ``linked_sheets`` reads back which sheets a run shows.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import posixpath
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from ohlora_eval import review
from ohlora_eval.formats.pictures import contact_sheet, motion_preview
from ohlora_eval.pipeline.cache import atomic_write, file_lock
from ohlora_eval.pipeline.edit import EditSetup, edited_mids, preview_points
from ohlora_eval.pipeline.model_calls import synthesize, to_mid
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.tracking import store
from ohlora_eval.tracking.read_back import SHEETS, Logged

LEDGER = "logged.json"  # beside the sheet files: case -> the run that logged it


def sheet_title(row: pd.Series) -> str:
    """Measurement facts only (no verdict): the same sheet serves every cutoff."""
    rs = "  ".join(f"{p} r={row[f'{p}_corr']:+.3f}" for p in CORE_PROPERTIES)
    group = f" group {row['svm_group_name']}" if row["svm_group_name"] else ""
    worst = pd.to_numeric(pd.Series([row.get("identity_max")]), errors="coerce").iloc[0]
    identity = f"  identity max {worst:.2f}" if np.isfinite(worst) else ""
    return f"case {int(row['case'])}{group}: {rs}{identity}"


@dataclass(frozen=True)
class IdentityMarks:
    """Which cells of a sheet are marked: each edited face's identity distance from the
    unedited one (``distances``, (n, m) by the run's row, NaN: not measured) past
    ``threshold`` (the identity cutoff, or the identity model's same-person distance)."""

    distances: np.ndarray
    threshold: float

    def cells(self, row: int) -> np.ndarray | None:
        d = self.distances[row]
        return None if np.isnan(d).all() else d


Moved = tuple[torch.Tensor, dict[str, torch.Tensor]]
"""One vector's mid vector and its unit edit directions (what its faces are made from)."""


def moved(setup: EditSetup, latent: np.ndarray, groups: list[str]) -> Moved:
    """The mid vector of ``latent`` (one row) and its directions (its SVM group's, if grouped)."""
    with torch.inference_mode():
        mid = to_mid(setup.generator, torch.as_tensor(latent, dtype=torch.float32), setup.layer)
        return mid, setup.directions.for_vectors(mid, groups if setup.directions.grouped else None)


def _faces(setup: EditSetup, vector: Moved, weights: np.ndarray) -> torch.Tensor:
    """The vector's faces at the intended ``weights`` ((m, 3)), generated again."""
    mid, dirs = vector
    with torch.inference_mode():
        moves = edited_mids(mid, dirs, setup.as_steps(weights))
        return synthesize(setup.generator, moves, setup.layer)


def render_sheet(
    setup: EditSetup,
    vector: Moved,
    title: str,
    min_tile: int = 128,
    max_tile: int = 4096,
    identity: tuple[np.ndarray, float] | None = None,
) -> Image.Image:
    """Generate one vector's edit grid again and lay it out as a labelled contact sheet
    (``identity``: each cell's distance and the threshold past which a cell is marked; the
    unedited face is then shown beside the grid)."""
    images = _faces(setup, vector, setup.grid)
    # the face every distance is taken from, beside the grid
    unedited = None
    if identity is not None:
        with torch.inference_mode():
            unedited = synthesize(setup.generator, vector[0], setup.layer)
    return contact_sheet(
        images,
        setup.grid,
        title,
        min_tile=min_tile,
        max_tile=max_tile,
        identity=identity,
        reference=unedited,
    )


def render_preview(setup: EditSetup, vector: Moved, min_tile: int, max_tile: int) -> bytes:
    """One vector's motion preview (an animated GIF: each property's edits with the others
    at 0, ``preview_points``), generated again."""
    points = preview_points(setup.grid)
    return motion_preview(_faces(setup, vector, points), points, min_tile, max_tile)


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
    marks: IdentityMarks | None = None  # identity distances: cells past the threshold marked

    def __post_init__(self) -> None:
        self.preview_seconds = 0.0  # spent making motion previews (the run says how much)
        self._last: tuple[int, Moved] | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index = {int(c): i for i, c in enumerate(self.per_vector["case"])}

    def _vector(self, i: int) -> Moved:
        """Row ``i``'s mid vector and directions, kept for the next call (a sheet and its
        preview are made one after the other)."""
        if self._last is None or self._last[0] != i:
            row = self.per_vector.iloc[i]
            self._last = (i, moved(self.setup, self.latents[i : i + 1], [row["svm_group_name"]]))
        return self._last[1]

    def file(self, case: int) -> Path:
        """Where the sheet of ``case`` is kept (made or not)."""
        return self.folder / f"case_{int(case):05d}.png"

    def path(self, case: int) -> Path:
        """The sheet of ``case``, made now if it is not kept."""
        path = self.file(case)
        if not path.exists():
            i = self._index[int(case)]
            row = self.per_vector.iloc[i]
            cells = self.marks.cells(i) if self.marks is not None else None
            sheet = render_sheet(
                self.setup,
                self._vector(i),
                sheet_title(row),
                self.min_tile,
                self.max_tile,
                None if cells is None else (cells, self.marks.threshold),  # type: ignore[union-attr]
            )
            buf = io.BytesIO()
            sheet.save(buf, format="PNG")
            atomic_write(path, buf.getvalue())
        return path

    def preview_file(self, case: int) -> Path:
        """Where the motion preview of ``case`` is kept (made or not): beside its sheet."""
        return Path(review.preview_of(str(self.file(case))))

    def preview(self, case: int) -> Path:
        """The motion preview of ``case`` (beside its sheet), made now if it is not kept."""
        path = self.preview_file(case)
        if not path.exists():
            t0 = time.perf_counter()
            vector = self._vector(self._index[int(case)])
            gif = render_preview(self.setup, vector, self.min_tile, self.max_tile)
            atomic_write(path, gif)
            self.preview_seconds += time.perf_counter() - t0
        return path


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


def held_files(client: MlflowClient, run_id: str, folder: str | None = None) -> set[str] | None:
    """The artifact paths run ``run_id`` holds (in ``folder``), or None when the run is
    deleted or cannot be read."""
    try:
        run = store.retry(client.get_run, run_id)
        files = {a.path for a in store.retry(client.list_artifacts, run_id, folder)}
    except Exception:  # noqa: BLE001 - a run or folder that cannot be read is gone
        return None
    return files if run.info.lifecycle_stage == "active" else None


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
            self._runs[run_id] = held_files(self.client, run_id, SHEETS)
        return self._runs[run_id]

    def lookup(self, cases: Iterable[int]) -> dict[int, Logged]:
        """The cases whose sheet and motion preview a live run of this store holds (one
        logged before previews existed is made and logged again)."""
        found = {}
        for case in cases:
            entry = self._entries.get(str(int(case)))
            if not entry or entry.get("uri") != self.uri:
                continue
            held = self._held(entry["run_id"])
            if held is not None and {entry["path"], review.preview_of(entry["path"])} <= held:
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
