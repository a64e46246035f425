"""The direction-finding stage: sample, score, fit, and record it all as an MLflow run.

Used by ``python -m ohlora_eval.find_directions`` and, when no matching run exists,
by an evaluation with ``directions=latest``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ohlora_eval.directions.fit import Fitted, fit_directions
from ohlora_eval.directions.spec import FitSpec, method_label, spec_hash
from ohlora_eval.directions.store import read_directions, write_directions
from ohlora_eval.errors import ConfigError, UserError
from ohlora_eval.pipeline.context import MeasureContext
from ohlora_eval.pipeline.directions import Directions
from ohlora_eval.pipeline.groups import can_group, group_properties
from ohlora_eval.pipeline.groups import medians as sample_medians
from ohlora_eval.pipeline.protocols import (
    CORE_PROPERTIES,
)
from ohlora_eval.pipeline.sample import FaceSetup, sample_and_score
from ohlora_eval.progress import HEARTBEAT_S, phase, say
from ohlora_eval.tracking import store
from ohlora_eval.tracking.read_back import RunView
from ohlora_eval.tracking.runs import side_run

KIND_TAG = "ohlora.kind"
SPEC_TAG = "directions.spec_hash"


def run_stage(
    faces: FaceSetup,
    spec: FitSpec,
    where: store.StoreRef,
    context: MeasureContext = MeasureContext(),
    *,
    extra_tags: Mapping[str, str] | None = None,
    params: Mapping[str, str] | None = None,
) -> tuple[Directions, str]:
    """Sample, score, fit and log a finished run in ``ohlora-directions``; return the directions.

    ``faces``: the models, the layer and how the sampled faces are scored (the screening's
    ``measure`` settings). ``context.executor``: where they are scored (``execution=ray``'s
    workers; None: here); the numbers, and so the directions, are the same either way."""
    generator, scorer, layer = faces.generator, faces.scorer, faces.layer
    executor = context.executor
    spec = spec.spec()
    spec.check()
    ident = spec.identity(faces)
    client = where.client()
    exp_id = store.ensure_experiment(store.DIRECTIONS_EXPERIMENT, where.uri, where.root)
    tags = {
        KIND_TAG: "directions",
        SPEC_TAG: spec_hash(ident),
        "layer": layer,
        "method": method_label(spec.method),
        "grouped": str(bool(spec.grouped)),
        "generator": type(generator).__name__,
        "generator.weights_id": str(ident["generator"]["weights"]),
        "scorer.weights_id": str(ident["scorer"]["weights"]),
        "git_commit": store.git_commit(),
        **(extra_tags or {}),
    }
    with side_run(client, exp_id, tags) as run_id:
        say(
            f"direction run {run_id}: {tags['method']} directions for layer {layer}"
            f" from n={spec.n:,} faces"
        )
        t0 = time.perf_counter()
        where_faces = " on Ray workers" if executor is not None else ""
        # A bar on a terminal (context.progress), else the phase's lines, every few seconds.
        beat = 1e6 if context.progress else HEARTBEAT_S
        sampling = f"  sampling, generating and scoring {spec.n:,} faces{where_faces}"
        with phase(sampling, total=spec.n, unit="faces", every_s=beat) as step:
            _, mid, scores = sample_and_score(faces, spec.n, spec.seed, context=context, step=step)
        t_sample = time.perf_counter() - t0
        faces_on = executor.stats.line("face batches") if executor is not None else "this process"
        if executor is not None:
            say(f"  {faces_on}")
        fixed = getattr(scorer, "group_medians", None)
        props = group_properties(scorer)
        has_group_props = can_group(scorer) and all(p in scores for p in props)
        if spec.grouped and not has_group_props:
            raise ConfigError(
                f"grouped directions need a scorer measuring grouping properties"
                f" ({type(scorer).__name__} offers {list(props)});"
                " set directions.grouped=false"
            )
        med = dict(fixed) if fixed else (sample_medians(scores, props) if has_group_props else None)
        unmeasured = {p: int((~np.isfinite(scores[p])).sum()) for p in CORE_PROPERTIES}
        if any(unmeasured.values()):
            say(
                "  left out of the fit (no face found): "
                + ", ".join(f"{p} {k:,} of {spec.n:,}" for p, k in unmeasured.items())
            )
        t1 = time.perf_counter()
        with phase("  fitting") as step:  # fit_directions counts its epochs / SVM fits
            fitted = fit_directions(
                mid.cpu().numpy(), scores, layer, spec, med, step=step, group_props=props
            )
        t_fit = time.perf_counter() - t1
        all_params = {
            **{
                f"spec.{k}": json.dumps(v) if isinstance(v, dict) else str(v)
                for k, v in ident.items()
            },
            **(params or {}),
        }
        timings = {"sample_seconds": t_sample, "fit_seconds": t_fit}
        with phase("  logging the directions"):
            late_tags = {"faces_scored_on": faces_on}
            dirs = _log(client, run_id, fitted, ident, all_params, timings, late_tags)
    dirs.run_id = run_id
    dirs.source = f"direction run {run_id} ({tags['method']}, n={spec.n}, layer {layer})"
    return dirs, run_id


def _log(
    client: MlflowClient,
    run_id: str,
    fitted: Fitted,
    ident: dict,
    params: Mapping[str, str],
    timings: dict[str, float],
    tags: Mapping[str, str],
) -> Directions:
    """Log the fit into its run; return the directions read back from the logged files, so an
    evaluation that fitted them uses exactly what a later one loads from the run."""
    dirs, regressors, report = fitted.directions, fitted.regressors, fitted.report
    now = int(time.time() * 1000)
    metrics = {**report.metrics(), **timings}
    if dirs.medians:
        metrics.update({f"median_{k}": float(v) for k, v in dirs.medians.items()})
    store.retry(
        client.log_batch,
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        tags=[
            RunTag("fallback_groups", ",".join(report.fallbacks) or "none"),
            *(RunTag(k, v) for k, v in tags.items()),
        ],
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_directions(out, dirs, regressors, {"identity": ident, "fallbacks": report.fallbacks})
        (out / "medians.json").write_text(json.dumps(dirs.medians, indent=2))
        report.group_table().to_csv(out / "group_sizes.csv", index=False)
        rows = [
            {"property": p, "group": g, "val_accuracy": a}
            for (p, g), a in report.svm_val_acc.items()
        ]
        rows += [
            {"property": p, "group": "", "val_mse": v} for p, v in report.gradient_val_mse.items()
        ]
        import pandas as pd

        pd.DataFrame(rows).to_csv(out / "validation.csv", index=False)
        store.retry(client.log_artifacts, run_id, str(out))
        return read_directions(out, dirs.layer)


_REFIT_HINT = (
    "delete run {run_id} in the MLflow UI (make ui, experiment 'ohlora-directions') so the"
    " evaluation fits the directions again, or set directions.run_id=<another direction run>"
)


def load_run(client: MlflowClient, run_id: str, layer: str) -> Directions:
    """Directions logged by a finished direction run (the layer must match)."""
    run = RunView.open(client, run_id, key="directions.run_id")
    if run.kind != "directions":
        raise UserError(
            f"directions.run_id={run_id} is not a direction run"
            " (made by python -m ohlora_eval.find_directions)"
        )
    run_layer = run.tags.get("layer")
    if run_layer != layer:
        raise UserError(
            f"directions.run_id={run_id} holds directions for layer {run_layer!r} but"
            f" the evaluation uses layer {layer!r}"
        )
    where = f"direction run {run_id}"
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(client.download_artifacts(run_id, "", tmp))
        except Exception as exc:  # the artifact folder deleted or unreachable
            raise UserError(
                f"{where}: its artifacts cannot be read ({type(exc).__name__}: {exc});"
                f" {_REFIT_HINT.format(run_id=run_id)}"
            ) from None
        if not any(local.iterdir()):
            raise UserError(
                f"{where} has no files in its artifacts (deleted?);"
                f" {_REFIT_HINT.format(run_id=run_id)}"
            )
        dirs = read_directions(local, layer, source=where)
    dirs.run_id = run_id
    method, n = run.tags.get("method", "?"), run.params.get("spec.n", "?")
    dirs.source = f"direction run {run_id} ({method}, n={n}, layer {layer})"
    return dirs


def find_latest(client: MlflowClient, ident: Mapping[str, Any]) -> str | None:
    """Newest finished direction run with exactly this identity (spec + generator + scorer)."""
    exp = store.retry(client.get_experiment_by_name, store.DIRECTIONS_EXPERIMENT)
    if exp is None:
        return None
    runs = store.retry(
        client.search_runs,
        [exp.experiment_id],
        filter_string=(
            f"tags.`{SPEC_TAG}` = '{spec_hash(ident)}' and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None
