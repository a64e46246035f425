"""The Model Registry side of selections: recording picked vectors as a registered model
version (with alias, tags, manifest, contact sheets), and finishing one an interrupted
``select`` left incomplete. Loading one back: ``selections.py``.

The selection is the product's most valuable output, so it is stored where it can
be found (Model Registry, alias), loaded (pyfunc, ``selection_model.py``), audited
(manifest, contact sheets, source-run tags) and re-checked (``verify``). Model names and
aliases are checked and moved in ``aliases.py``.
"""

from __future__ import annotations

import html
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError, succeeded
from ohlora_eval.formats.z_vectors import (
    GRID_DIR,
    MANIFEST,
    Z_FILE,
    group_names_file,
    write_z_csv,
)
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import lineage, store
from ohlora_eval.tracking.aliases import alias_version, model_ref, move_alias
from ohlora_eval.tracking.read_back import RunView, linked_sheets
from ohlora_eval.tracking.runs import tracked_run

log = logging.getLogger(__name__)

SELECTIONS_EXPERIMENT = "ohlora-selections"
_MODEL_CODE = Path(__file__).with_name("selection_model.py")


DEFAULT_ALIAS = "final"
DEFAULT_ALIAS_TAG = "ohlora.alias_default"  # "true": no alias asked ("final" if version 1)
CHOSEN_TAG = "chosen"


@dataclass
class Selection:
    name: str
    version: str
    alias: str | None  # the alias now on this version (None: it got none)
    run_id: str  # the selection run that logged the model
    source_run_id: str
    cases: list[int]
    alias_note: str = ""  # what happened to the alias, as printed


def choose_run(client: MlflowClient, run_id: str) -> str:
    """Tag ``run_id`` as the chosen run of its experiment (tag ``chosen`` = ``true``); the
    tag is taken off the run that had it. Returns what happened, as printed."""
    run = source_run(client, run_id, "choose")
    exp = run.experiment_id
    before = [
        r.info.run_id
        for r in store.retry(
            client.search_runs, [exp], filter_string=f"tags.`{CHOSEN_TAG}` = 'true'"
        )
        if r.info.run_id != run_id
    ]
    for other in before:
        store.retry(client.delete_tag, other, CHOSEN_TAG)
    store.retry(client.set_tag, run_id, CHOSEN_TAG, "true")
    was = f" (was run {', '.join(before)})" if before else ""
    return f"run {run_id} is now the chosen run of its experiment{was}"


SCREENING_KINDS = ("evaluation", "rejudge", "imported")
"""Runs that judged vectors (a table of cases with r): what select and choose take."""


def source_run(client: MlflowClient, run_id: str, verb: str = "select") -> RunView:
    """The run ``run_id`` if it is live, finished and judged vectors; else a UserError."""
    run = RunView.open(client, run_id, why=f"{verb} from a finished screening run")
    if run.kind and run.kind not in SCREENING_KINDS:
        raise UserError(
            f"run_id={run_id} is a {run.kind} run, not a screening; {verb} a screening run"
            " (or a re-judge or import of one)"
        )
    return run


@dataclass(frozen=True)
class SelectionRequest:
    """What a person asked to record: these cases of that run, under this name and alias."""

    source_run_id: str
    cases: list[int]
    name: str = "ohlora-final-latents"
    alias: str | None = None  # None: "final" on a model's first version, else left alone
    note: str = ""
    allow_failed: bool = False  # record cases that failed the cutoffs too


def record(where: store.StoreRef, request: SelectionRequest) -> Selection:
    """Check the cases against the source run and register a new model version."""
    client = where.client()
    source_run_id, cases, allow_failed = (
        request.source_run_id,
        list(request.cases),
        request.allow_failed,
    )
    run = source_run(client, source_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "source"
        src.mkdir()
        per_vector, latents = run.per_vector, run.latents
        cases = _check_passed(per_vector, run.chosen(cases, "record"), allow_failed)
        rows = per_vector.set_index("case").loc[cases].reset_index()
        index = {int(c): i for i, c in enumerate(per_vector["case"])}
        chosen = latents[[index[c] for c in cases]]
        out = Path(tmp) / "selection"
        (out / GRID_DIR).mkdir(parents=True)
        write_z_csv(chosen, out / Z_FILE)
        rows[["case", "svm_group_name", "passed", *judge.CORR_COLUMNS, "sum_abs_corr"]].to_csv(
            out / group_names_file(run.layer), index=False
        )
        _collect_sheets(client, source_run_id, cases, out / GRID_DIR, src)
        nan = dict.fromkeys(CORE_PROPERTIES, float("nan"))
        manifest: dict[str, Any] = {
            "cases": cases,
            "source_run_id": source_run_id,
            "cutoffs": run.cutoffs.core() if run.cutoffs else nan,
            "layer": run.layer,
            "directions_run_id": run.directions_run_id,
            "directions_source": run.tags.get("directions.source"),
            "generator_weights_id": run.tags.get("generator.weights_id"),
            "recorded": rows.to_dict(orient="records"),
            "allow_failed": allow_failed,
            "note": request.note,
            "config": run.config,
            "git_commit": store.git_commit(),
            "source_git_commit": run.tags.get("git_commit"),
            "stability": _stability(run, cases),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
        return _register(where, out, manifest, run, request, chosen)


def _stability(run: RunView, cases: list[int]) -> dict | None:
    """The chosen cases' re-pass probabilities from the source run's latest re-test
    (``python -m ohlora_eval.retest``), when there is one: {retest_run_id, k, per case}."""
    retest_id = run.retest_run_id
    if not retest_id:
        return None
    try:
        retest = RunView(run.client, run.client.get_run(retest_id))
        table = retest.csv("retest.csv")
    except Exception:  # noqa: BLE001 - a re-test that cannot be read is not recorded
        return None
    rows = table.set_index("case")
    per_case = {
        int(c): {
            "re_pass_prob": float(rows.loc[c, "re_pass_prob"]),
            "re_pass_lo": float(rows.loc[c, "re_pass_lo"]),
            "re_pass_hi": float(rows.loc[c, "re_pass_hi"]),
        }
        for c in cases
        if c in rows.index
    }
    return {
        "retest_run_id": retest_id,
        "k": int(float(retest.metrics.get("k", 0))),
        "ci_level": retest.tags.get("retest.ci_level"),
        "cases": per_case,
    }


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(type(o))


def _check_passed(per_vector: pd.DataFrame, cases: list[int], allow_failed: bool) -> list[int]:
    table = per_vector.set_index("case")
    failed = [c for c in cases if table.loc[c, "passed"] != "O"]
    if failed and not allow_failed:
        reasons = "; ".join(f"case {c}: {table.loc[c, 'fail_reason']}" for c in failed)
        raise UserError(
            f"{len(failed)} chosen case(s) did not pass: {reasons}"
            " (allow_failed=true records them anyway)"
        )
    return cases


def _collect_sheets(
    client: MlflowClient, run_id: str, cases: list[int], out: Path, tmp: Path
) -> None:
    """Copy the contact sheets the source run shows for the chosen cases: its own, or those
    of the run it links to (a sweep point or re-judge that re-used a measurement); also the
    sheets requested later with ``python -m ohlora_eval.sheets``."""
    shown = linked_sheets(client, run_id)
    logged = {case: (where.run_id, where.path) for case, where in shown.items()}
    for folder in ("sheets/requested", "grids/passed", "grids/best"):
        try:
            items = client.list_artifacts(run_id, folder)
        except Exception:
            continue
        for a in items:
            stem = Path(a.path).stem
            if a.path.endswith(".png") and stem.startswith("case_") and stem[5:].isdigit():
                logged.setdefault(int(stem[5:]), (run_id, a.path))
    for c in cases:
        if c in logged:
            holder, path = logged[c]
            try:
                local = client.download_artifacts(holder, path, str(tmp))
            except Exception:  # noqa: BLE001 - a sheet whose run was deleted: none recorded
                continue
            shutil.copy(local, out / f"case_{c:05d}.png")


COMPLETE_TAG = "ohlora.complete"
"""Version tag: "false" from the moment the version exists until every step of ``select``
(alias, description, the source run's tags) is done, then "true". A version left "false"
by an interruption is finished by the next ``select`` or ``verify`` (``repair``)."""


def _register(
    where: store.StoreRef,
    folder: Path,
    manifest: dict,
    source: RunView,
    request: SelectionRequest,
    vectors: np.ndarray,
) -> Selection:
    """Log the selection, then create its version with every tag at once (a cut-off
    ``select`` leaves no version, or one tagged incomplete that ``repair`` finishes)."""
    client, uri = where.client(), where.uri
    name, note = request.name, request.note
    cases = manifest["cases"]
    source_metrics = source.metrics
    tags = {
        "ohlora.kind": "selection",
        "source_run_id": manifest["source_run_id"],
        "n_selected": str(len(cases)),
        "git_commit": store.git_commit(),
    }
    exp_id = store.ensure_experiment(SELECTIONS_EXPERIMENT, uri, where.root)
    # A tracked run: KILLED with its reason when stopped, closed by the next command if killed.
    with tracked_run(tags, run_name=f"select {name}", experiment_id=exp_id) as sel_run_id:
        mlflow.log_artifacts(str(folder), "selection")
        artifacts = {
            "z_vectors": str(folder / Z_FILE),
            "group_names": str(folder / group_names_file(manifest["layer"])),
            "manifest": str(folder / MANIFEST),
            "grids": str(folder / GRID_DIR),
        }
        info = store.retry(
            mlflow.pyfunc.log_model,
            name="selection_model",
            python_model=str(_MODEL_CODE),
            artifacts=artifacts,
            pip_requirements=["mlflow", "pandas"],
        )
        held = lineage.log_selection(vectors, cases, manifest["source_run_id"], info.model_id)
        # The alias asked for, recorded on the version so a repair after an interruption sets
        # what select would have set; none asked: "final" on the model's first version only
        # (decided by the version number the registry gives, so concurrent selects agree).
        wanted = request.alias or ""
        version_tags = {
            "source_run_id": manifest["source_run_id"],
            "cutoffs": json.dumps(manifest["cutoffs"]),
            "n_selected": str(len(cases)),
            "source_pass_rate": _rounded(source_metrics.get("pass_rate")),
            "cases": json.dumps(cases),
            "allow_failed": str(manifest["allow_failed"]).lower(),
            "directions_run_id": str(manifest["directions_run_id"]),
            "ohlora.alias_wanted": wanted,
            DEFAULT_ALIAS_TAG: "false" if request.alias else "true",
            "ohlora.note": note[:4000],
            COMPLETE_TAG: "false",
            **held,  # the dataset of the vectors it holds (tracking/lineage.py)
        }
        if manifest.get("stability"):
            probs = [v["re_pass_prob"] for v in manifest["stability"]["cases"].values()]
            version_tags["retest_run_id"] = manifest["stability"]["retest_run_id"]
            version_tags["re_pass_prob_min"] = f"{min(probs):.3f}" if probs else "none"
        version_tags["select_run_id"] = sel_run_id
        mv = store.retry(_new_version, client, name, info, version_tags)
    version = str(mv.version)
    alias, alias_note = _finish(client, name, version, version_tags)
    src = manifest["source_run_id"]
    ref = model_ref(name, alias, version)
    succeeded()
    log.info(
        f"\nohlora_eval.select: recorded {len(cases)} vector(s) from run {src} as {name} version"
        f" {version}\n"
        f"  {alias_note}\n"
        f"  load: mlflow.pyfunc.load_model({'models:/' + ref.strip(chr(39))!r}).predict(None)\n"
        f"  re-check: python -m ohlora_eval.verify model={ref}\n"
        f"  look at it: {store.ui_hint(uri)}",
        extra=STDOUT,
    )
    return Selection(name, version, alias, sel_run_id, src, cases, alias_note)


def _new_version(client: MlflowClient, name: str, info: Any, tags: dict[str, str]) -> Any:
    """A version of ``name`` (made if missing) for the logged selection model, with all its tags
    at once. Its source run is the screening the vectors came from, so that MLflow's "Source
    run" link on the version page opens it; the ``select`` run that logged the model is the
    tag ``select_run_id`` (and the logged model's own source)."""
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(
        name, info.model_uri, run_id=tags["source_run_id"], tags=tags, model_id=info.model_id
    )


def _finish(
    client: MlflowClient, name: str, version: str, tags: dict[str, str]
) -> tuple[str | None, str]:
    """Every step after the version exists, each safe to repeat: description, alias, the
    source run's tags, then the version marked complete. (the alias now on it, a note)."""
    note = tags.get("ohlora.note", "")
    if note:
        # MLflow's UI renders a description as markdown with inline HTML (<b>, <img src=...>
        # shown, seen in Chromium with MLflow 3.17): a note is text, so its HTML is escaped.
        description = html.escape(note, quote=False)
        store.retry(client.update_model_version, name, version, description=description)
    wanted = tags.get("ohlora.alias_wanted") or None
    if not wanted and version == "1" and tags.get(DEFAULT_ALIAS_TAG) != "false":
        if alias_version(client, name, DEFAULT_ALIAS) in (None, version):  # not moved since
            wanted = DEFAULT_ALIAS  # the model's first version gets "final" unasked
    if wanted:
        alias, alias_note = wanted, move_alias(client, name, version, wanted)
    else:
        current = alias_version(client, name, DEFAULT_ALIAS)
        where = f"stays on version {current}" if current else "is on no version"
        alias, alias_note = (
            None,
            (
                f"alias {DEFAULT_ALIAS!r} {where} (version {version} is not the model's first);"
                f" to move it: python -m ohlora_eval.alias model={model_ref(name, version=version)}"
                f" alias={DEFAULT_ALIAS} (or select with alias={DEFAULT_ALIAS})"
            ),
        )
    src = tags.get("source_run_id")
    if src:
        try:
            store.retry(client.set_tag, src, "ohlora.selected", "true")
            store.retry(client.set_tag, src, "ohlora.selection", f"{name}/{version}")
        except Exception:  # noqa: BLE001 - a source run deleted since: the version stands
            pass
    store.retry(client.set_model_version_tag, name, version, COMPLETE_TAG, "true")
    return alias, alias_note


def repair(client: MlflowClient, name: str) -> list[str]:
    """Finish the versions of ``name`` that an interrupted ``select`` left incomplete (tag
    ``ohlora.complete`` = "false"); what was done, one line each."""
    try:
        versions = store.retry(
            client.search_model_versions, f"name = '{name.replace(chr(39), chr(39) * 2)}'"
        )
    except Exception:  # noqa: BLE001 - no such model yet
        return []
    done = []
    for mv in versions:
        if mv.tags.get(COMPLETE_TAG) != "false":
            continue
        # An alias another version holds by now is left there (moving it back would undo
        # a later choice); one that points nowhere is set as select would have.
        tags = dict(mv.tags)
        wanted = tags.get("ohlora.alias_wanted")
        if wanted and alias_version(client, name, wanted) not in (None, str(mv.version)):
            tags["ohlora.alias_wanted"] = ""
        _finish(client, name, str(mv.version), tags)
        done.append(
            f"finished version {mv.version} of {name}, which an interrupted select left incomplete"
        )
    return done


def _rounded(value: float | None, digits: int = 4) -> str:
    """A metric as a tag shows it: rounded (the metric itself keeps full precision)."""
    return "unknown" if value is None else f"{float(value):.{digits}g}"
