"""The life cycle every tracked run shares: tags for sweeps, FINISHED/FAILED/KILLED endings
with the reason, resuming the work of runs whose process died, Hydra's files, and the
closing summary printed to the terminal. One place for all of it (docs/architecture.md).

What a person sees of a run in MLflow's UI is decided here too: its name says what makes
it differ (``run_name``; a sweep point: its swept values), its description
(``mlflow.note.content``, shown on the run page and as the runs table's Description) is
the closing summary in markdown, and the links printed open the runs view
(``ui_links.ui_url``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import Stopped
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store, system_metrics
from ohlora_eval.tracking.dead_runs import DIED, close_abandoned_runs, died_here, process_tags
from ohlora_eval.tracking.ui_links import ui_url

log = logging.getLogger(__name__)


def sweep_id() -> str | None:
    """The Hydra multirun this job belongs to (its sweep folder's name), else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # not running under @hydra.main (tests, API use)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def hydra_output_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None


RUN_FILE = "mlflow_run.txt"


def note_run(run_id: str, uri: str | None = None) -> None:
    """Name the run a job made or wrote into in its Hydra folder (``mlflow_run.txt``: the
    run id, then the store), so each job folder, a multirun point's too, says which run
    holds its results. ``tracked_run`` calls it; commands that write into another run
    (frontier, compare, sheets, choose, alias) call it with that run."""
    folder = hydra_output_dir()
    if folder is not None and folder.is_dir():
        where = store.display_uri(uri or mlflow.get_tracking_uri())
        (folder / RUN_FILE).write_text(f"{run_id}\n{where}\n")


def log_hydra_files() -> None:
    """Hydra's own record of the job (config, overrides) into the active run, if any."""
    folder = hydra_output_dir()
    if folder is not None and (folder / ".hydra").is_dir():
        store.retry(mlflow.log_artifacts, str(folder / ".hydra"), "hydra")


def _ending(exc: BaseException | None) -> tuple[str, dict[str, str]]:
    """How a run ends: its status and the tags that say why (the one place that decides)."""
    if exc is None:
        return "FINISHED", {}
    if isinstance(exc, Stopped):
        return "KILLED", {"ohlora.end_reason": f"stopped by {exc.name}"}
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED", {"ohlora.end_reason": "interrupted (Ctrl-C)"}
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:5000]
    return "FAILED", {"ohlora.failure_reason": reason}


def _sweep_tags() -> dict[str, str]:
    """Inside a Hydra multirun job: the sweep, the job number and the parent run."""
    sweep = sweep_id()
    if not sweep:
        return {}
    from hydra.core.hydra_config import HydraConfig

    from ohlora_eval.tracking.sweep import parent_run_id

    tags = {"sweep_id": sweep, "sweep.job": str(HydraConfig.get().job.num)}
    parent = parent_run_id()
    if parent:
        tags["mlflow.parentRunId"] = parent
    return tags


SLOW_S = 2.0  # steps that take longer say how long they took


@contextlib.contextmanager
def timed(what: str, slow_s: float = SLOW_S) -> Iterator[None]:
    """One line on stderr with the elapsed time when the block takes over ``slow_s``."""
    t0 = time.perf_counter()
    yield
    took = time.perf_counter() - t0
    if took > slow_s:
        log.info(f"ohlora_eval: {what}: {took:.1f} s")


DEFAULT_CHOICES = {"measure": "default", "experiment": None}
"""Config group options a run name leaves out (the defaults)."""


def differences(cfg: Mapping, choices: Mapping[str, Any] | None = None) -> list[str]:
    """What makes a run's numbers differ from a default run, shortest first in importance:
    the experiment, the generator and scorer when not the synthetic ones, the direction
    method (and one group for all, or a file source), the layer when not mapping_split1,
    and a measure preset. Settings that change no number (execution, cache) are tags."""
    choices = dict(choices or {})
    out = []
    if choices.get("experiment") not in (None, "null", "None", DEFAULT_CHOICES["experiment"]):
        out.append(str(choices["experiment"]))
    for key in ("generator", "scorer"):
        target = str((cfg.get(key) or {}).get("_target_", ""))
        module = target.rsplit(".", 2)[-2] if target.count(".") >= 2 else target
        if module and module != "synthetic":
            out.append(module)
    directions = cfg.get("directions") or {}
    if str(directions.get("_target_", "")).endswith("FileDirections"):
        out.append("directions files")
    elif directions:
        method = directions.get("method", "gradient")
        label = (
            method if isinstance(method, str) else ",".join(f"{k}={v}" for k, v in method.items())
        )
        if label != "gradient":
            out.append(str(label))
        if directions.get("grouped") is False and label != "gradient":
            out.append("one group")
        if directions.get("run_id"):
            out.append(f"directions {str(directions['run_id'])[:8]}")
    layer = cfg.get("layer")
    if layer and layer != "mapping_split1":
        out.append(str(layer))
    measure = choices.get("measure")
    if measure not in (None, DEFAULT_CHOICES["measure"]):
        out.append(f"measure {measure}")
    return out


def run_name(
    cfg: Mapping,
    n_vectors: int,
    cutoffs: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    choices: Mapping[str, Any] | None = None,
) -> str:
    """A screening run's name, leading with what makes it differ from a default run
    (``differences``; the MLflow table cuts long names at the end), then its vector count
    and cutoffs, e.g. ``svm | 300 vectors | eyes0.92 mouth0.88 pose0.88`` (a verification
    or re-test repetition says so first). ``cutoffs``: the checked ones the run judges with;
    ``choices``: Hydra's config group choices."""
    tags = tags or {}
    cut = " ".join(f"{p}{cutoffs[p]:g}" for p in CORE_PROPERTIES)
    if cutoffs.get("identity") is not None:
        cut += f" identity{cutoffs['identity']:g}"
    name = " | ".join([*differences(cfg, choices), f"{n_vectors} vectors", cut])
    if "retest.repetition" in tags:
        return f"retest repetition {int(tags['retest.repetition']) + 1} | {name}"
    if "verify.model" in tags:
        seed = tags.get("verify.noise_seed")
        return f"verify {tags['verify.model']}" + (f" noise seed {seed}" if seed else "")
    return name


def _side_name(tags: Mapping[str, str]) -> str | None:
    """A name for a run made beside the active one, from its tags (a direction fit)."""
    if tags.get("mlflow.runName"):
        return tags["mlflow.runName"]
    if tags.get("ohlora.kind") == "directions":
        grouped = " grouped" if tags.get("grouped") == "True" else ""
        return f"directions {tags.get('method', '?')}{grouped} | {tags.get('layer', '?')}"
    return None


@contextlib.contextmanager
def tracked_run(
    tags: Mapping[str, str], run_name: str | None = None, experiment_id: str | None = None
) -> Iterator[str]:
    """The active (fluent) MLflow run of a command: it ends FINISHED, or FAILED with the
    reason in a tag, or KILLED on Ctrl-C. Sweep jobs are tagged and nested under their
    sweep's parent run, and named by their swept values. While it is open it records
    MLflow's system metrics (``tracking.system_metrics``; ``system_metrics.py``)."""
    cost = system_metrics.current()  # a bad setting is an error before any run opens
    sweep_tags = _sweep_tags()
    from ohlora_eval.tracking.sweep import point_name

    point = point_name() if sweep_tags else None
    name = tags.get("mlflow.runName") or point or run_name
    with store.usable(mlflow.get_tracking_uri()):
        run = store.retry(
            mlflow.start_run,
            run_name=name,
            tags={**process_tags(), **tags, **sweep_tags},
            experiment_id=experiment_id,
            log_system_metrics=False,  # ours (system_metrics.monitored), never MLflow's too
        )
    client = MlflowClient(mlflow.get_tracking_uri())
    note_run(run.info.run_id)
    close_abandoned_runs(client, keep=run.info.run_id)
    try:
        with system_metrics.monitored(client, run.info.run_id, cost):
            yield run.info.run_id
    except BaseException as exc:
        status, why = _ending(exc)
        _best_effort(lambda: store.retry(mlflow.set_tags, why))
        _best_effort(lambda: store.retry(mlflow.end_run, status))
        raise
    store.retry(mlflow.end_run, "FINISHED")


def _best_effort(step: Callable[[], object]) -> None:
    """Ending a run that already failed: if the store is gone too, the first error is the
    one to report (the run stays RUNNING; the next run of its measurement marks it, as after
    a kill)."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - reported only when it is not the store's
        if store.unavailable(exc) is None:
            raise


@contextlib.contextmanager
def side_run(client: MlflowClient, experiment_id: str, tags: Mapping[str, str]) -> Iterator[str]:
    """A run made through the client, beside whatever run is active (a direction fit
    started by an evaluation): the same endings and system metrics as ``tracked_run``."""
    cost = system_metrics.current()
    with store.usable(client.tracking_uri):
        run = store.retry(
            client.create_run,
            experiment_id,
            tags={**process_tags(), **tags},
            run_name=_side_name(tags),
        )
    run_id = run.info.run_id
    try:
        with system_metrics.monitored(client, run_id, cost):
            yield run_id
    except BaseException as exc:
        status, why = _ending(exc)
        for k, v in why.items():
            _best_effort(lambda k=k, v=v: store.retry(client.set_tag, run_id, k, v))
        _best_effort(lambda: store.retry(client.set_terminated, run_id, status))
        raise
    store.retry(client.set_terminated, run_id, "FINISHED")


def close_dead_runs(uri: str, measure_key: str, run_id: str) -> None:
    """Runs of this measurement whose process died (left RUNNING, or already closed by
    ``close_abandoned_runs``): mark them FAILED and link them to ``run_id``, which resumes
    their work."""
    client = MlflowClient(uri)
    exp = mlflow.get_experiment(mlflow.active_run().info.experiment_id)
    same = f"tags.`ohlora.measure_key` = '{measure_key}'"
    runs = [
        *store.retry(
            client.search_runs, [exp.experiment_id], f"{same} and attributes.status = 'RUNNING'"
        ),
        *store.retry(client.search_runs, [exp.experiment_id], f"{same} and tags.`{DIED}` != ''"),
    ]
    host = socket.gethostname()
    dead = []
    for r in runs:
        if r.info.run_id == run_id or r.data.tags.get("ohlora.resumed_by"):
            continue
        mine = r.data.tags.get("ohlora.pid") == str(os.getpid())  # left open by this process
        if (
            DIED in r.data.tags
            or died_here(r, host)
            or (mine and r.data.tags.get("ohlora.host") == host)
        ):
            dead.append(r.info.run_id)
            why = f"process died; resumed by run {run_id}"
            store.retry(client.set_tag, r.info.run_id, "ohlora.failure_reason", why)
            store.retry(client.set_tag, r.info.run_id, "ohlora.resumed_by", run_id)
            store.retry(client.set_terminated, r.info.run_id, "FAILED")
    if dead:
        mlflow.set_tag("ohlora.resumed_from", ",".join(dict.fromkeys(dead)))


def describe(
    per_vector: pd.DataFrame,
    metrics: Mapping[str, float],
    cutoffs: Mapping[str, float],
    notes: list[str],
    tags: Mapping[str, str] | None = None,
    review_page: bool = False,
) -> str:
    """A judging run's description (markdown): passed x of N, mean |r|, directions, notes."""
    tags = tags or {}
    n = len(per_vector)
    lines = [
        f"passed {int(metrics['passed'])} of {n} ({metrics['pass_rate']:.1%}) at cutoffs"
        f" |r| >= {', '.join(f'{p} {cutoffs[p]:g}' for p in CORE_PROPERTIES)}"
        + _identity_rule(cutoffs),
        "",
        "| | " + " | ".join(CORE_PROPERTIES) + " |",
        "|---|" + "---|" * len(CORE_PROPERTIES),
        "| mean abs r | "
        + " | ".join(f"{metrics[f'{p}_abs_corr_mean']:.3f}" for p in CORE_PROPERTIES)
        + " |",
    ]
    if all(f"{p}_pass_rate" in metrics for p in CORE_PROPERTIES):
        lines.append(
            "| pass rate | "
            + " | ".join(f"{metrics[f'{p}_pass_rate']:.1%}" for p in CORE_PROPERTIES)
            + " |"
        )
    lines.append("")
    source = tags.get("directions.source")
    if source:
        run = tags.get("directions.run_id", "none")
        lines.append(
            f"- directions: {source}" + (f" (direction run `{run}`)" if run != "none" else "")
        )
    if tags.get("layer"):
        lines.append(f"- layer: {tags['layer']}")
    lines += [f"- {note}" for note in notes]
    if review_page:
        lines.append("- review page: artifact `review/index.html` (tick vectors to pick)")
    return "\n".join(lines)


def _identity_rule(cutoffs: Mapping[str, Any]) -> str:
    """``, identity distance <= 0.6`` when the cutoffs have an identity cutoff."""
    limit = cutoffs.get("identity")
    return "" if limit is None else f", identity distance <= {float(limit):g}"


def print_summary(*args: Any, **kwargs: Any) -> None:
    """``summarize`` (the same arguments), printed: the closing lines of every judging run."""
    log.info(summarize(*args, **kwargs), extra=STDOUT)


def summarize(
    run_id: str,
    per_vector: pd.DataFrame,
    metrics: Mapping[str, float],
    cutoffs: Mapping[str, float],
    *,
    experiment: str,
    uri: str,
    notes: list[str],
) -> str:
    """The closing lines of a judging run, with ``notes`` on where the numbers came from,
    returned; the same summary, in markdown, becomes the run's description in MLflow (set
    here). ``print_summary`` prints them; a re-test's repetitions report as one instead."""
    cut = ", ".join(f"{p} {float(cutoffs[p]):g}" for p in CORE_PROPERTIES) + _identity_rule(cutoffs)
    means = ", ".join(f"{p} {metrics[f'{p}_abs_corr_mean']:.4f}" for p in CORE_PROPERTIES)
    signed = ", ".join(f"{metrics[f'{p}_corr_mean']:+.4f}" for p in CORE_PROPERTIES)
    client = MlflowClient(uri)
    run = store.retry(client.get_run, run_id)
    page = "review" in {a.path for a in store.retry(client.list_artifacts, run_id)}
    note = describe(per_vector, metrics, cutoffs, notes, run.data.tags, review_page=page)
    store.retry(client.set_tag, run_id, store.NOTE_TAG, note)
    lines = [
        f"\nohlora_eval: passed {int(metrics['passed'])} of {len(per_vector)}"
        f" ({metrics['pass_rate']:.2%}) at cutoffs {cut}",
        f"  mean |r|: {means} (signed r: {signed}); mean sum|r| {metrics['sum_abs_corr_mean']:.4f}",
        *(f"  {n}" for n in notes),
        f"  run {run_id} ({run.info.run_name}) in experiment {experiment!r}"
        f" ({store.display_uri(uri)})",
        f"  look at it: {store.ui_hint(uri)}, then {ui_url(uri, run.info.experiment_id, run_id)}",
    ]
    return "\n".join(lines)
