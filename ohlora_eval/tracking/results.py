"""The results in Python: runs as a table, one run's ``per_vector.csv``, a recorded selection.

``import ohlora_eval`` gives these lazily (``ohlora_eval.runs``, ``ohlora_eval.per_vector``,
``ohlora_eval.selection``), so importing the package stays cheap. They only read: a store
that does not exist is an error, never created. Where they look, first match wins: an
explicit ``uri=``, an explicit ``root=`` (the embedded store ``<root>/mlflow.db``),
``MLFLOW_TRACKING_URI``, then ``mlruns/mlflow.db`` under the current directory (the
commands' default ``tracking.root``). See docs/mlflow.md, "Results in Python", and
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service.utils import _use_tracking_uri

from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store
from ohlora_eval.tracking.read_back import PER_VECTOR, RunView, reader_client
from ohlora_eval.tracking.selections import load_selection

DEFAULT_EXPERIMENT = "ohlora-eval"
DEFAULT_SELECTION = "ohlora-final-latents@final"
# The run attributes that come first in ``runs()``, before params.*, metrics.*, tags.*.
RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "end_time")
_PASSED = {"O": True, "X": False}
TRACKING_ENV = "MLFLOW_TRACKING_URI"  # set by mlflow.set_tracking_uri, put back after


# --- runs -------------------------------------------------------------------------------


def runs(
    experiment: str = DEFAULT_EXPERIMENT,
    filter: str | None = None,
    *,
    uri: str | None = None,
    root: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The experiment's runs, one row each, newest first (ties by run id).

    Columns: ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time`` (UTC
    timestamps), then ``params.<key>`` (strings, as MLflow stores them: the flattened
    config, e.g. ``params.cutoff.eyes``), ``metrics.<key>`` (floats, the latest value, e.g.
    ``metrics.passed``) and ``tags.<key>`` (strings, e.g. ``tags.layer``), each group sorted
    by key; a run without a key has NaN there. ``filter`` is an MLflow search filter, e.g.
    ``"metrics.passed > 10"`` or ``"params.`cutoff.eyes` = '0.92'"``. Deleted runs are left
    out. The table is ``mlflow.search_runs``'s, its columns ordered."""
    client, resolved = reader_client(uri, root)
    with store.usable(resolved):
        exp = store.retry(client.get_experiment_by_name, experiment)
        if exp is None:
            known = sorted(e.name for e in store.retry(client.search_experiments))
            raise UserError(
                f"experiment={experiment!r} is not in the store {store.display_uri(resolved)}"
                f" (it has: {', '.join(known) or 'no experiments'}); pass one of those, or"
                " point uri=/root= (or MLFLOW_TRACKING_URI) at the store that has it"
            )
        try:
            with _searching(resolved):
                frame = store.retry(
                    mlflow.search_runs,
                    [exp.experiment_id],
                    filter or "",
                    order_by=["attributes.start_time DESC", "attributes.run_id ASC"],
                )
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            why = exc.message.splitlines()[0][:300]
            raise UserError(
                f"filter={filter or ''!r} is not an MLflow search filter ({why}); write"
                ' e.g. "metrics.passed > 10" or "params.`cutoff.eyes` = \'0.92\'"'
                " (keys with dots in backticks, param values quoted)"
            ) from None
    if frame.empty:  # no run: mlflow.search_runs types none of the columns
        times = pd.to_datetime(pd.Series([], dtype="int64"), unit="ms", utc=True)
        typed = {c: pd.Series(dtype=str) for c in RUN_COLUMNS[:3]}
        return pd.DataFrame(typed).assign(start_time=times, end_time=times)
    frame = frame.assign(
        run_name=frame.get("tags.mlflow.runName"),
        start_time=pd.to_datetime(frame["start_time"], utc=True),
        end_time=pd.to_datetime(frame["end_time"], utc=True),
    )
    group = {"params": 0, "metrics": 1, "tags": 2}
    data = sorted(
        (c for c in frame.columns if c.split(".", 1)[0] in group),
        key=lambda c: (group[c.split(".", 1)[0]], c),
    )
    frame = frame[[*RUN_COLUMNS, *data]].replace({None: np.nan})
    frame = frame.sort_values(["start_time", "run_id"], ascending=[False, True], kind="stable")
    return frame.reset_index(drop=True)


@contextlib.contextmanager
def _searching(uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` searches MLflow's process-wide store: ``uri``'s while it runs,
    then the store and the environment variable it sets back as they were."""
    had = os.environ.get(TRACKING_ENV)
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if had is None:
            os.environ.pop(TRACKING_ENV, None)
        else:
            os.environ[TRACKING_ENV] = had


# --- per_vector -------------------------------------------------------------------------


def per_vector(
    run_id: str, *, uri: str | None = None, root: str | os.PathLike | None = None
) -> pd.DataFrame:
    """Run ``run_id``'s ``per_vector.csv``, one row per vector, in the file's order.

    ``case`` is an int; ``passed`` is a bool (the file's Oh-LoRA "O"/"X" is kept, as
    written, in ``passed_ox`` right after it); empty cells are NaN (an undefined r), and
    text such as ``fail_reason`` is read as written."""
    client, resolved = reader_client(uri, root)
    with store.usable(resolved):
        run = RunView.open(client, run_id, finished=False, hint=_FIND_RUN_IDS)
        table = run.per_vector
    return as_booleans(table, f"{PER_VECTOR} of run {run_id}")


_FIND_RUN_IDS = (
    "find run ids in ohlora_eval.runs() (column run_id) or the MLflow UI (make ui), or point"
    " uri=/root= (or MLFLOW_TRACKING_URI) at the store that has it"
)


def as_booleans(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``passed`` "O"/"X" -> True/False (the original kept as ``passed_ox`` right after
    it), ``case`` -> int."""
    table = table.copy()
    if "case" in table.columns:
        table["case"] = table["case"].astype("int64")
    if "passed" not in table.columns:
        raise UserError(f"{what} has no 'passed' column: not an ohlora_eval result table")
    ox = table["passed"].astype(str)
    odd = sorted(set(ox) - set(_PASSED))
    if odd:
        raise UserError(f"{what}: 'passed' holds {odd[:5]}; only 'O' and 'X' are known")
    at = table.columns.get_loc("passed")
    table["passed"] = ox.map(_PASSED).astype(bool)
    table.insert(at + 1, "passed_ox", ox)
    return table


# --- selection --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedSelection:
    """A registered selection: the chosen vectors and what was recorded with them.

    ``z[i]`` is the latent vector of ``cases[i]``; ``recorded`` holds the source run's
    ``per_vector.csv`` rows of those cases as recorded (``passed`` a bool, ``passed_ox``
    the "O"/"X"); ``manifest`` is the whole ``selection.json``."""

    model: str  # "<name>/<version>"
    cases: list[int]
    z: np.ndarray = field(repr=False)  # (n, latent_dim) float32
    recorded: pd.DataFrame = field(repr=False)
    manifest: dict = field(repr=False)

    @property
    def source_run_id(self) -> str:
        return str(self.manifest["source_run_id"])

    @property
    def cutoffs(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.manifest["cutoffs"].items()}

    @property
    def layer(self) -> str:
        return str(self.manifest.get("layer"))

    @property
    def vectors(self) -> pd.DataFrame:
        """``z`` as a table: index ``case``, columns "0".."d-1" (as the pyfunc returns it)."""
        columns = [str(i) for i in range(self.z.shape[1])]
        return pd.DataFrame(self.z, index=pd.Index(self.cases, name="case"), columns=columns)


def selection(
    model: str = DEFAULT_SELECTION,
    *,
    uri: str | None = None,
    root: str | os.PathLike | None = None,
) -> RecordedSelection:
    """The selection registered as ``model`` (``<name>@<alias>`` or ``<name>/<version>``),
    loaded as ``python -m ohlora_eval.verify`` loads it (``selections.load_selection``)."""
    client, resolved = reader_client(uri, root)
    with store.usable(resolved), tempfile.TemporaryDirectory() as tmp:
        manifest, z, label = load_selection(client, model, Path(tmp))
    cases = [int(c) for c in manifest["cases"]]
    recorded = as_booleans(pd.DataFrame(manifest["recorded"]), f"model={model} (recorded rows)")
    return RecordedSelection(label, cases, z, recorded, manifest)
