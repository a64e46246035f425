"""Reading two finished runs for a comparison (``review/compare.py`` compares them):
their ``per_vector.csv``, params, directions run and what says which vectors they judged.

Any run with a ``per_vector.csv`` works: a screening, a sweep point, a re-judge, an import, a
re-test. Which vectors a run judged is decided, in this order, by the digest of its
``candidates`` dataset (``tracking/lineage.py``), that of the run it re-used the measurement
of (tag ``ohlora.measurement_files``) or re-judged (tag ``rejudge.source_run_id``), or one
computed from its ``latents.npy`` (runs logged before lineage); an import has none, and is
compared by its case numbers and sampling params instead.

``ohlora_eval.compare(a, b)`` (the Python API) only reads; the command
(``apps/compare.py``) also logs the report into run b.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError
from ohlora_eval.formats.ohlora_results import read_native_table
from ohlora_eval.review import compare as pure
from ohlora_eval.tracking import lineage, store
from ohlora_eval.tracking.read_back import FILES_TAG, run_file

PER_VECTOR = "per_vector.csv"
REJUDGE_SOURCE_TAG = "rejudge.source_run_id"
_MAX_HOPS = 8  # a chain of re-judges of re-judges, followed this far


@dataclass
class RunRead:
    """One run, read for a comparison."""

    run: Run
    table: pd.DataFrame
    side: pure.RunSide
    candidates: pure.Candidates


def _origins(client: MlflowClient, run: Run) -> list[Run]:
    """The run, then the runs it re-used the measurement of or re-judged, in that order."""
    chain, seen = [run], {run.info.run_id}
    while len(chain) <= _MAX_HOPS:
        tags = chain[-1].data.tags
        nxt = tags.get(FILES_TAG) or tags.get(REJUDGE_SOURCE_TAG)
        if not nxt or nxt in seen:
            break
        try:
            chain.append(store.retry(client.get_run, nxt))
        except MlflowException:  # deleted for good: the chain ends here
            break
        seen.add(nxt)
    return chain


def _candidates_digest(client: MlflowClient, chain: list[Run]) -> str | None:
    for run in chain:
        found = lineage.dataset_of(run, lineage.CANDIDATES)
        if found is not None:
            return found.digest
    for run in chain:  # a run logged before lineage: the digest of its latents.npy
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = run_file(client, run.info.run_id, "latents.npy", tmp)
            except Exception:  # noqa: BLE001 - none stored: an import, a re-judge
                continue
            return lineage.latents_digest(np.load(path))
    return None


def _directions(chain: list[Run]) -> tuple[str | None, str | None]:
    """(directions run id, digest of the directions) of the first run in the chain that
    says; the param ``directions.run_id`` where no run has the tag."""
    run_id = digest = None
    for run in chain:
        tag = run.data.tags.get("directions.run_id")
        if run_id is None and tag and tag != "none":
            run_id = tag
        found = lineage.dataset_of(run, lineage.DIRECTIONS)
        if digest is None and found is not None:
            digest = found.digest
    if run_id is None:
        param = chain[0].data.params.get("directions.run_id")
        run_id = param if param not in (None, "None", "none", "") else None
    return run_id, digest


def _read_table(client: MlflowClient, run_id: str) -> pd.DataFrame:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = run_file(client, run_id, PER_VECTOR, tmp)
        except Exception:  # noqa: BLE001 - MLflow raises several kinds for a missing file
            raise UserError(
                f"run_id={run_id} has no {PER_VECTOR}: only runs that judged vectors"
                " (screenings, sweep points, re-judges, imports, re-tests) can be compared"
            ) from None
        return read_native_table(path, f"{PER_VECTOR} of run {run_id}", required=("passed",))


def read_run(client: MlflowClient, run_id: str, where: str) -> RunRead:
    """Everything a comparison needs of run ``run_id``."""
    run = store.finished_run(client, run_id, why="only finished runs are compared")
    table = _read_table(client, run_id)
    chain = _origins(client, run)
    directions_run, directions_digest = _directions(chain)
    digest = _candidates_digest(client, chain)
    side = pure.RunSide(
        run_id=run_id,
        name=run.info.run_name or "",
        kind=run.data.tags.get("ohlora.kind", "unknown"),
        n_cases=len(table),
        directions_run_id=directions_run,
        directions_digest=directions_digest,
        candidates_digest=digest,
    )
    params = {k: v for k, v in run.data.params.items() if k in pure.CANDIDATE_PARAMS}
    cases = frozenset(int(c) for c in table["case"])
    return RunRead(run, table, side, pure.Candidates(digest, cases, params))


def compare_runs(
    client: MlflowClient,
    a: str,
    b: str,
    *,
    force: bool = False,
    list_max: int = pure.LIST_MAX,
    where: str | None = None,
) -> pure.Comparison:
    """Compare finished runs ``a`` and ``b``; runs whose candidate vectors differ are a
    ``UserError`` unless ``force`` (then only the case numbers both have are compared)."""
    where = where or store.display_uri(client.tracking_uri)
    a, b = str(a), str(b)
    if a == b:
        raise UserError(f"a={a} and b={b} are the same run; name two runs to compare")
    first, second = read_run(client, a, where), read_run(client, b, where)
    check = pure.check_candidates(first.candidates, second.candidates)
    shared = len(first.candidates.cases & second.candidates.cases)
    if not check.same and not force:
        raise UserError(
            f"runs {a} and {b} judged different candidate vectors: {check.how};"
            f" force=true compares the {shared:,} case numbers they share"
        )
    if shared == 0:
        raise UserError(f"runs {a} and {b} share no case number: nothing to compare")
    settings = pure.differing_params(first.run.data.params, second.run.data.params)
    try:
        return pure.compare_tables(
            first.side,
            second.side,
            (first.table, second.table),
            check,
            settings,
            forced=force,
            list_max=list_max,
        )
    except ValueError as exc:
        raise UserError(f"runs {a} and {b}: {exc}") from None


def report_paths(comparison: pure.Comparison) -> tuple[str, str]:
    """Where the command logs the report and (when many) the changes in run b."""
    a = comparison.a.run_id
    return f"compare/{a}.md", f"compare/{a}_changes.csv"


def log_report(client: MlflowClient, comparison: pure.Comparison) -> tuple[str, str | None]:
    """The report (and the changes CSV when too many to list) into run b's artifacts:
    (report path, CSV path or None); returns the report's text as logged via ``text``."""
    md_path, csv_path = report_paths(comparison)
    b = comparison.b.run_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "compare"
        folder.mkdir()
        logged_csv = None
        if not comparison.listed:
            comparison.changes.to_csv(folder / Path(csv_path).name, index=False)
            logged_csv = csv_path
        (folder / Path(md_path).name).write_text(comparison.markdown(logged_csv))
        store.log_whole(client, b, folder, "compare")
    return md_path, logged_csv


def client_for(uri: str | None, root: str | os.PathLike | None) -> tuple[MlflowClient, str]:
    """A client of an existing store for the Python API: explicit ``uri``, explicit
    ``root``, ``MLFLOW_TRACKING_URI``, then ``./mlruns`` (never creating one)."""
    if uri:
        resolved = uri
    elif root is not None:
        resolved = store.default_uri(root)
    else:
        resolved = store.resolve_uri(None, "mlruns")
    if resolved.startswith("sqlite:///"):
        db = Path(resolved[len("sqlite:///") :].split("?", 1)[0])
        if not db.is_file():
            raise UserError(f"no MLflow store at {db}; pass root= or uri= of the store")
    return MlflowClient(resolved, registry_uri=resolved), resolved


def compare(
    a: str,
    b: str,
    force: bool = False,
    *,
    list_max: int = pure.LIST_MAX,
    uri: str | None = None,
    root: str | os.PathLike | None = None,
) -> pure.Comparison:
    """``ohlora_eval.compare(a, b)``: what ``python -m ohlora_eval.compare a=... b=...``
    reports, as data (``.markdown()`` is the report); reads only, logs nothing."""
    client, resolved = client_for(uri, root)
    with store.usable(resolved):
        return compare_runs(
            client, a, b, force=force, list_max=list_max, where=store.display_uri(resolved)
        )
