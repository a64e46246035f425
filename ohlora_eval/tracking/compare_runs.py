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
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError
from ohlora_eval.review import compare as pure
from ohlora_eval.tracking import lineage, store
from ohlora_eval.tracking.read_back import RunView, reader_client


@dataclass
class RunRead:
    """One run, read for a comparison."""

    run: RunView
    side: pure.RunSide
    candidates: pure.Candidates


def _first_digest(chain: list[RunView], context: str) -> str | None:
    """The digest of the first dataset logged as ``context`` along the chain, if any."""
    found = (lineage.dataset_of(run.run, context) for run in chain)
    return next((dataset.digest for dataset in found if dataset is not None), None)


def _candidates_digest(chain: list[RunView]) -> str | None:
    digest = _first_digest(chain, lineage.CANDIDATES)
    if digest is not None:
        return digest
    for run in chain:  # a run logged before lineage: the digest of its latents.npy
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = run.file("latents.npy", tmp)
            except Exception:  # noqa: BLE001 - none stored: an import, a re-judge
                continue
            return lineage.latents_digest(np.load(path))
    return None


def _directions(chain: list[RunView]) -> tuple[str | None, str | None]:
    """(directions run id, digest of the directions) of the first run in the chain that
    says; the param ``directions.run_id`` where no run has the tag."""
    tags = (run.directions_run_id for run in chain)
    run_id = next((tag for tag in tags if tag and tag != "none"), None)
    if run_id is None:
        param = chain[0].params.get("directions.run_id")
        run_id = param if param not in (None, "None", "none", "") else None
    return run_id, _first_digest(chain, lineage.DIRECTIONS)


def read_run(client: MlflowClient, run_id: str) -> RunRead:
    """Everything a comparison needs of run ``run_id``."""
    run = RunView.open(client, run_id, why="only finished runs are compared")
    table = run.per_vector
    directions_run, directions_digest = _directions(run.origins)
    digest = _candidates_digest(run.origins)
    side = pure.RunSide(
        run_id=run_id,
        name=run.name,
        kind=run.tags.get("ohlora.kind", "unknown"),
        n_cases=len(table),
        directions_run_id=directions_run,
        directions_digest=directions_digest,
        candidates_digest=digest,
    )
    params = {k: v for k, v in run.params.items() if k in pure.CANDIDATE_PARAMS}
    cases = frozenset(int(c) for c in table["case"])
    return RunRead(run, side, pure.Candidates(digest, cases, params))


def compare_runs(
    client: MlflowClient,
    a: str,
    b: str,
    *,
    force: bool = False,
    list_max: int = pure.LIST_MAX,
) -> pure.Comparison:
    """Compare finished runs ``a`` and ``b``; runs whose candidate vectors differ are a
    ``UserError`` unless ``force`` (then only the case numbers both have are compared)."""
    a, b = str(a), str(b)
    if a == b:
        raise UserError(f"a={a} and b={b} are the same run; name two runs to compare")
    first, second = read_run(client, a), read_run(client, b)
    check = pure.check_candidates(first.candidates, second.candidates)
    shared = len(first.candidates.cases & second.candidates.cases)
    if not check.same and not force:
        raise UserError(
            f"runs {a} and {b} judged different candidate vectors: {check.how};"
            f" force=true compares the {shared:,} case numbers they share"
        )
    if shared == 0:
        raise UserError(f"runs {a} and {b} share no case number: nothing to compare")
    settings = pure.differing_params(first.run.params, second.run.params)
    try:
        return pure.compare_tables(
            first.side,
            second.side,
            (first.run.per_vector, second.run.per_vector),
            check,
            settings,
            forced=force,
            list_max=list_max,
        )
    except ValueError as exc:
        raise UserError(f"runs {a} and {b}: {exc}") from None


def log_report(client: MlflowClient, comparison: pure.Comparison) -> tuple[str, str | None]:
    """The report into run b's artifacts as ``compare/<run a>.md``, with the changes as
    ``compare/<run a>_changes.csv`` when too many to list: (report path, CSV path or None)."""
    a = comparison.a.run_id
    csv_path = None if comparison.listed else f"compare/{a}_changes.csv"
    with tempfile.TemporaryDirectory() as tmp:
        if csv_path:
            comparison.changes.to_csv(Path(tmp) / f"{a}_changes.csv", index=False)
        (Path(tmp) / f"{a}.md").write_text(comparison.markdown(csv_path))
        store.log_whole(client, comparison.b.run_id, tmp, "compare")
    return f"compare/{a}.md", csv_path


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
    client, resolved = reader_client(uri, root)
    with store.usable(resolved):
        return compare_runs(client, a, b, force=force, list_max=list_max)
