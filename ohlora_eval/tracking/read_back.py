"""Reading a run back, one way: ``RunView``, a finished run opened by id, and its files.

``RunView`` gives what a run holds, read when first asked for and kept: its config
(``config.yaml``), its table (``per_vector.csv``), its vectors (``latents.npy``), its
cutoffs, the re-test and the runs it came from. A run's MLflow params are read here and
nowhere else (an import has no ``config.yaml``: its params are all it says of itself).

A run that re-used another run's measurement (a sweep point, a re-judge) does not store
the measurement's files again (``MEASURED_FILES``): its tag ``ohlora.measurement_files``
(``FILES_TAG``) names the run that does, and ``run_file`` follows it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from ohlora_eval.errors import UserError
from ohlora_eval.formats.ohlora_results import read_native_table
from ohlora_eval.pipeline.cutoffs import Cutoffs
from ohlora_eval.tracking import store

SHEETS = "review/sheets"  # the one folder of a run's own contact sheets
PER_VECTOR = "per_vector.csv"
MEASURED_FILES = ("latents.npy", "per_image.csv")  # decided by the measurement and the cases
FILES_TAG = "ohlora.measurement_files"  # the run that stores them, when not this one
REJUDGE_SOURCE_TAG = "rejudge.source_run_id"
_MAX_HOPS = 8  # a chain of re-judges of re-judges, followed this far


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


def reader_client(uri: str | None, root: str | os.PathLike | None) -> tuple[MlflowClient, str]:
    """A client of an existing store (an embedded store that is not there is an error: a
    reader must not create an empty one). Where: explicit ``uri``, explicit ``root``,
    ``MLFLOW_TRACKING_URI``, then ``./mlruns``."""
    resolved = uri or (store.resolve_uri() if root is None else store.default_uri(root))
    if resolved.startswith("sqlite:///"):
        db = Path(resolved[len("sqlite:///") :].split("?", 1)[0])
        if not db.is_file():
            raise UserError(
                f"no MLflow store at {db}: nothing has been tracked there; screen first"
                " (`python -m ohlora_eval` writes ./mlruns), or pass root=<the folder"
                " holding mlflow.db> or uri=<tracking URI> (or set MLFLOW_TRACKING_URI)"
            )
    try:
        client = MlflowClient(resolved, registry_uri=resolved)
        client.search_experiments(max_results=1)  # the store answers (and is one)
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a bad URI
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(
            f"uri={resolved}: not an MLflow store this can read ({first[:200]}); give a"
            " tracking URI such as http://127.0.0.1:5000 or sqlite:///mlruns/mlflow.db"
        ) from None
    return client, resolved


@dataclass(frozen=True, eq=False)
class RunView:
    """A run of the store, read back: each file is read when first asked for, then kept."""

    client: MlflowClient
    run: Run

    @classmethod
    def open(cls, client: MlflowClient, run_id: str, key: str = "run_id", **how) -> RunView:
        """The run ``run_id`` through ``store.finished_run`` (``how``: its ``finished``,
        ``why``, ``hint``): one wording for a missing, deleted or unfinished run."""
        return cls(client, store.finished_run(client, run_id, key, **how))

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    @property
    def name(self) -> str:
        return self.run.info.run_name or ""

    @property
    def experiment_id(self) -> str:
        return self.run.info.experiment_id

    @property
    def tags(self) -> Mapping[str, str]:
        return self.run.data.tags

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.run.data.metrics

    @property
    def params(self) -> Mapping[str, str]:
        """The flattened settings as MLflow keeps them (strings)."""
        return self.run.data.params

    @property
    def kind(self) -> str:
        """``evaluation``, ``rejudge``, ``imported``, ``retest``, ... ("" if untagged)."""
        return self.tags.get("ohlora.kind", "")

    @property
    def layer(self) -> str:
        return self.params.get("layer", "mid")

    @cached_property
    def cutoffs(self) -> Cutoffs | None:
        """The cutoffs it judged at (None: it recorded none)."""
        p = self.params
        try:
            core = [float(p[f"cutoff.{k}"]) for k in ("eyes", "mouth", "pose")]
            identity = p.get("cutoff.identity")
            off = identity in (None, "", "None", "none", "null")
            return Cutoffs(*core, None if off else float(identity))
        except (KeyError, ValueError):
            return None

    @property
    def directions_run_id(self) -> str | None:
        """The direction run it edited along (tag ``directions.run_id``), as recorded."""
        return self.tags.get("directions.run_id")

    @property
    def retest_run_id(self) -> str | None:
        """Its latest re-test (tag ``ohlora.retest``), if any."""
        return self.tags.get("ohlora.retest") or None

    @cached_property
    def origins(self) -> list[RunView]:
        """This run, then the runs it re-used the measurement of (tag
        ``ohlora.measurement_files``) or re-judged (tag ``rejudge.source_run_id``), in order."""
        chain, seen = [self], {self.run_id}
        while len(chain) <= _MAX_HOPS:
            tags = chain[-1].tags
            nxt = tags.get(FILES_TAG) or tags.get(REJUDGE_SOURCE_TAG)
            if not nxt or nxt in seen:
                break
            try:
                chain.append(RunView(self.client, store.retry(self.client.get_run, nxt)))
            except MlflowException:  # deleted for good: the chain ends here
                break
            seen.add(nxt)
        return chain

    def file(self, name: str, dst: str | Path) -> str:
        """Its artifact ``name`` downloaded into ``dst`` (``run_file``)."""
        return run_file(self.client, self.run_id, name, dst)

    def csv(self, name: str, **read) -> pd.DataFrame:
        """Its artifact ``name`` read as a CSV (``pd.read_csv(..., **read)``)."""
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(self.file(name, tmp), **read)

    @cached_property
    def per_vector(self) -> pd.DataFrame:
        """``per_vector.csv``, checked (``read_native_table``); none: one ``UserError`` line."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.file(PER_VECTOR, tmp)
            except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing file
                raise UserError(
                    f"run_id={self.run_id} ({self.name}) has no {PER_VECTOR}: only runs that"
                    " judged vectors (screenings, sweep points, imports, re-judges, re-tests,"
                    " verifications) log one; sweep parents, direction fits and selections do not"
                ) from None
            what = f"{PER_VECTOR} of run {self.run_id}"
            return read_native_table(path, what, required=("passed",))

    def chosen(self, cases: list[int], doing: str) -> list[int]:
        """``cases`` checked against its table: none, one listed twice or one it does not
        have is a ``UserError`` line (``doing``: what the cases are for, as the line says)."""
        if not cases:
            raise UserError(f"cases=[] is empty; list the cases to {doing}, e.g. cases=[39,269]")
        dupes = sorted({c for c in cases if cases.count(c) > 1})
        if dupes:
            raise UserError(f"cases lists {dupes} more than once")
        known = set(self.per_vector["case"].astype(int))
        missing = [c for c in cases if c not in known]
        if missing:
            raise UserError(
                f"cases {missing} are not in the run (run {self.run_id} has cases"
                f" {min(known)}...{max(known)})"
            )
        return cases

    def _vector_file(self, name: str, read):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.file(name, tmp)
            except Exception:  # noqa: BLE001 - not stored: an import, a re-judge of one
                raise UserError(
                    f"run_id={self.run_id} has no per_vector.csv, latents.npy and config.yaml:"
                    " only screening runs carry their vectors (imported results and re-judges"
                    " do not)"
                ) from None
            return read(path)

    @cached_property
    def latents(self) -> np.ndarray:
        """``latents.npy`` (followed to the run that stores it): row i is the vector of
        ``per_vector`` row i."""
        latents = self._vector_file("latents.npy", np.load)
        if len(self.per_vector) != len(latents):
            raise UserError(
                f"run_id={self.run_id}: per_vector.csv has {len(self.per_vector)} rows and"
                f" latents.npy {len(latents)} vectors; the run's files do not belong together"
            )
        return latents

    @cached_property
    def config(self) -> dict:
        """``config.yaml``: the config the run was made with, as a dict."""
        return self._vector_file(
            "config.yaml", lambda path: OmegaConf.to_container(OmegaConf.load(path))
        )


@dataclass(frozen=True)
class Logged:
    """A contact sheet stored in MLflow: the run and the artifact path."""

    run_id: str
    path: str


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
