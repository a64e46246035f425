"""MLflow at the edge: where the store is, creating it safely, logging with retries."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import ConfigError, UserError, signals_held
from ohlora_eval.pipeline.cache import file_lock

T = TypeVar("T")

# Artifact downloads are small and many; MLflow's per-download progress bars are noise, and
# so are its notes about creating the SQLite tables of a new store, and its note that a
# folder it was asked to download is empty (we say what that means). Held back by ``quiet``.
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
_NOISY_LOGGERS = (
    "mlflow.store.db.utils",
    "alembic.runtime.migration",
    "mlflow.store.artifact.artifact_repo",
)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """MLflow's noise held back while the store is used (a command, ``usable``), then as it
    was: its artifact progress bars (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` unless
    the environment has a value) and its INFO notes (those loggers at WARNING at least).
    Set here only, never at import: a program that imports the package keeps its state."""
    had = os.environ.get(_PROGRESS_BAR)
    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    if had is None:
        os.environ[_PROGRESS_BAR] = "false"
    for lg in loggers:
        lg.setLevel(max(lg.level, logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        if had is None:
            os.environ.pop(_PROGRESS_BAR, None)


# How long a command waits for a store that does not answer: a tracking server, or an SQLite
# file another process holds locked (``tracking.store_wait_s``, set by ``bounded_waits``).
_store_wait_s = 60.0
DIRECTIONS_EXPERIMENT = "ohlora-directions"

# What MLflow's UI shows of our experiments. The kind says "machine learning, compare runs"
# (not a GenAI app); MLflow 3.17's UI itself picks its mode from a global toggle (GenAI /
# Model training) or the link's ``workflowType=machine_learning``, which our links carry.
# The view is a shared view state (the UI's own "share" format, an experiment tag) that
# the printed links name (``viewStateShareKey``): the columns a person compares.
UI_VIEW_KEY = "ohlora"
NOTE_TAG = "mlflow.note.content"  # a run's description in MLflow's UI (markdown)
_UI_COLUMNS = [  # the decision, metrics, then params (the UI groups them so), the description
    "tags.`chosen`",  # "true" on the experiment's chosen run (python -m ohlora_eval.choose)
    "tags.`ohlora.selection`",  # <model>/<version> recorded from it (python -m ohlora_eval.select)
    "metrics.`passed`",
    "metrics.`pass_rate`",
    "metrics.`sum_abs_corr_mean`",
    "params.`cutoff.eyes`",
    "params.`cutoff.mouth`",
    "params.`cutoff.pose`",
    "params.`sampling.n_vectors`",
    "attributes.`Dataset`",  # the candidates and directions a run used (tracking/lineage.py)
    "attributes.`Description`",
]
_RUN_NAME = "attributes.`Run Name`"
UI_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{UI_VIEW_KEY}": json.dumps(
        {
            "orderByKey": "attributes.start_time",
            "orderByAsc": False,
            "selectedColumns": _UI_COLUMNS,
            "columnOrder": [_RUN_NAME, *_UI_COLUMNS],
            "columnWidths": {
                _RUN_NAME: 300,
                "tags.`chosen`": 80,
                "tags.`ohlora.selection`": 150,
                "attributes.`Description`": 360,
            },
        },
        separators=(",", ":"),
    ),
}


@dataclass(frozen=True)
class StoreRef:
    """Where runs go: the tracking URI and the embedded store's folder (for locks and caches)."""

    uri: str
    root: str

    def client(self) -> MlflowClient:
        return MlflowClient(self.uri, registry_uri=self.uri)


def store_root(root: str | os.PathLike = "mlruns") -> Path:
    return Path(root).expanduser().resolve()


def default_uri(root: str | os.PathLike = "mlruns") -> str:
    """The embedded store: ``sqlite:///<root>/mlflow.db`` whose busy timeout is
    ``tracking.store_wait_s`` (how long one statement waits for another process's lock)."""
    return f"sqlite:///{store_root(root) / 'mlflow.db'}?timeout={sqlite_timeout_s()}"


def sqlite_timeout_s() -> int:
    """SQLite's busy timeout: the store wait, whole seconds, at least 1."""
    return max(1, int(_store_wait_s))


def resolve_uri(uri: str | None = None, root: str | os.PathLike = "mlruns") -> str:
    """``MLFLOW_TRACKING_URI`` wins, then an explicit ``tracking.uri``, then the embedded store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or uri or default_uri(root)


def display_uri(uri: str) -> str:
    """The URI as a user would type it (without our connection options)."""
    return uri.split("?", 1)[0] if uri.startswith("sqlite:") else uri


def _is_transient(exc: BaseException) -> bool:
    """A lock held by another process, or two processes creating the tables at once."""
    return locked(exc) or "duplicate column" in str(exc).lower()


def retry(fn: Callable[..., T], *args: Any, attempts: int = 8, **kwargs: Any) -> T:
    """Call ``fn``, retrying SQLite lock/migration races with backoff, for at most
    ``store_wait_s`` seconds in all (each try also waits up to SQLite's busy timeout): a
    store another process keeps locked then raises ``StoreLocked``, one line."""
    start = time.monotonic()
    for i in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - only transient store errors are retried
            if not _is_transient(exc):
                raise
            waited = time.monotonic() - start
            pause = min(5.0, 0.2 * 2**i)
            if i == attempts - 1 or waited + pause > _store_wait_s:
                if locked(exc):
                    raise StoreLocked(waited) from exc
                raise
            time.sleep(pause)
    raise AssertionError("unreachable")


def log_whole(client: MlflowClient, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Log the files of one result (a folder prepared beforehand) in one step that a stop
    (SIGTERM, SIGHUP, Ctrl-C) does not cut: they appear all together (``signals_held``)."""
    with signals_held():
        retry(client.log_artifacts, run_id, str(folder), artifact_path)


def locked(exc: BaseException) -> bool:
    """Whether ``exc`` says an SQLite store was locked by another process."""
    text = str(exc).lower()
    return "database is locked" in text or "database is busy" in text


class StoreLocked(UserError):
    """An SQLite store another process held locked for longer than ``store_wait_s``."""

    def __init__(self, waited_s: float | None = None) -> None:
        super().__init__(locked_line(mlflow.get_tracking_uri(), waited_s))


def locked_line(uri: str, waited_s: float | None = None) -> str:
    """The one line for a store another process keeps locked."""
    waited = f"{waited_s:.0f} s" if waited_s is not None else f"{_store_wait_s:.0f} s"
    return (
        f"the MLflow store {display_uri(uri)} stayed locked by another process (waited"
        f" {waited}, tracking.store_wait_s={_store_wait_s:g}); what was measured is kept in the"
        " cache: let the other command finish (or stop it) and run the same command again,"
        " or raise tracking.store_wait_s"
    )


@contextlib.contextmanager
def bounded_waits(seconds: float) -> Iterator[None]:
    """For the block (a command), how long it waits for a store that does not answer
    (``tracking.store_wait_s``). An SQLite store another process keeps locked: SQLite's busy
    timeout and ``retry`` end after about ``seconds`` (``StoreLocked``). A tracking server:
    each request times out after a quarter of it and is tried 4 times, 1 + 2 + 4 s apart
    (plus up to 1 s of jitter each), so a server that is down ends the command after about
    ``seconds`` + 10 s, not MLflow's default ~12 minutes. A user's own
    ``MLFLOW_HTTP_REQUEST_*`` settings are left as they are; ours are gone after the block."""
    global _store_wait_s
    ours = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(2, int(seconds) // 4)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    ours = {k: v for k, v in ours.items() if k not in os.environ}
    saved = _store_wait_s
    os.environ.update(ours)
    _store_wait_s = float(seconds)
    try:
        yield
    finally:
        _store_wait_s = saved
        for key, value in ours.items():
            if os.environ.get(key) == value:
                os.environ.pop(key)


_GONE = (
    "max retries exceeded",
    "connection refused",
    "connection reset",
    "connection aborted",
    "read timed out",
    "timed out",
    "remote end closed",
    "error code 500",
    "error code 502",
    "error code 503",
    "error code 504",
    "too many 50",
)


def unavailable(exc: BaseException) -> str | None:
    """Why the tracking store stopped answering, if that is what ``exc`` says (a server or
    its database gone: connection errors, timeouts, 5xx answers); else None. A server that
    answers 5xx with an MLflow error body (``TEMPORARILY_UNAVAILABLE: ...``) once the
    retries are spent is recognised by its status, not its text."""
    from mlflow.exceptions import RestException

    if isinstance(exc, RestException) and exc.get_http_status_code() in (500, 502, 503, 504):
        said = " ".join(str(exc).split())[:120]
        return f"the server answered {exc.get_http_status_code()}: {said}"
    text = " ".join(str(exc).split()).lower()
    found = next((s for s in _GONE if s in text), None)
    if found is None:
        return None
    return {
        "max retries exceeded": "no answer after retries",
        "error code 503": "the server answered 503 (its database is down?)",
        "error code 500": "the server answered 500 (its database is down?)",
    }.get(found, found)


# What the store says when it cannot be used at all (as opposed to a bug of ours).
_UNUSABLE = (
    "readonly database",
    "read-only",
    "unable to open database",
    "file is not a database",
    "permission denied",
    "disk i/o error",
    "no space left",
    "connection refused",
    "max retries exceeded",
    "failed to resolve",
    "could not connect",
)


@contextlib.contextmanager
def usable(uri: str) -> Iterator[None]:
    """Errors of a store that cannot be opened or written become one ``UserError`` line
    naming the store and what to change; any other error passes unchanged (with its
    traceback: MLflow's own log of the database error is held back meanwhile, so the user
    does not read it twice)."""
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.CRITICAL)
    try:
        with quiet():
            yield
    except UserError:
        raise
    except Exception as exc:
        text = str(exc)
        if not (isinstance(exc, OSError) or any(s in text.lower() for s in _UNUSABLE)):
            raise
        if "connection refused" in text.lower():
            why = "nothing answers there (connection refused)"
        else:
            lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            why = next((ln for ln in lines if any(s in ln.lower() for s in _UNUSABLE)), None)
            why = (why or (lines[0] if lines else type(exc).__name__))[:200]
        raise UserError(
            f"the MLflow store {display_uri(uri)} cannot be used: {why}; point"
            " tracking.uri (or MLFLOW_TRACKING_URI) at a store you can write, or set"
            " tracking.root=<a writable folder> for the embedded one"
        ) from None
    finally:
        db_log.setLevel(level)


_NO_SUCH_RUN = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def finished_run(
    client_or_uri: MlflowClient | str,
    run_id: str,
    key: str = "run_id",
    *,
    finished: bool = True,
    why: str = "",
    hint: str = "",
) -> Run:
    """The run ``run_id`` of the store, for a command that reads it; a ``UserError`` naming
    ``key`` (the setting that gave the id) if there is no such run, if it was deleted, or
    (``finished``, the default) if it did not finish. ``why`` says what needs a finished
    run; ``hint``, where to find run ids. A store that stopped answering is not a missing
    run: its error passes unchanged (``apps/cli`` reports it in one line)."""
    client = MlflowClient(client_or_uri) if isinstance(client_or_uri, str) else client_or_uri
    try:
        run = retry(client.get_run, str(run_id))
    except MlflowException as exc:
        if unavailable(exc) or exc.error_code not in _NO_SUCH_RUN:
            raise
        where = display_uri(client.tracking_uri)
        raise UserError(
            f"{key}={run_id}: no such run in {where}" + (f"; {hint}" if hint else "")
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise UserError(
            f"{key}={run_id} was deleted (restore it in the MLflow UI or pick another run)"
        )
    if finished and run.info.status != "FINISHED":
        raise UserError(
            f"{key}={run_id} did not finish (status {run.info.status})"
            + (f"; {why}" if why else "")
        )
    return run


def check_experiment_name(name: object, key: str = "tracking.experiment") -> str:
    """An experiment name MLflow takes and that is safe as a folder name of the embedded
    store (``<root>/artifacts/<name>``): 1-200 printable characters, no path separator, not
    ``.`` or ``..``. Else a ConfigError naming ``key``."""
    text = "" if name is None else str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif len(text) > 200:
        problem = f"is {len(text)} characters long (at most 200)"
    elif any(c in text for c in "/\\") or text.strip() in (".", ".."):
        problem = "would be a path (no / or \\, not . or ..)"
    elif not text.isprintable():
        problem = "holds a control character"
    if problem:
        raise ConfigError(f"{key}={text!r} {problem}; give a name such as {key}=my-screenings")
    return text


def ensure_experiment(experiment: str, uri: str, root: str | os.PathLike = "mlruns") -> str:
    """Create/migrate the store and the experiment once, under a file lock; return its id.

    Parallel jobs against a fresh SQLite store otherwise race on schema
    migration and experiment creation. Touches no fluent (active-run) state.
    """
    check_experiment_name(experiment)
    root_path = store_root(root)
    lock = root_path / ".setup.lock" if uri.startswith("sqlite:") else None
    ctx = file_lock(lock) if lock else contextlib.nullcontext()
    with usable(uri), ctx:
        client = MlflowClient(uri, registry_uri=uri)
        exp = retry(client.get_experiment_by_name, experiment)
        if exp is not None:
            for key, value in UI_TAGS.items():  # experiments made before these tags
                kind = key == "mlflow.experimentKind"  # a person's own choice stays
                if (key not in exp.tags) if kind else exp.tags.get(key) != value:
                    retry(client.set_experiment_tag, exp.experiment_id, key, value)
            return exp.experiment_id
        location = (root_path / "artifacts" / experiment).as_uri() if lock else None
        return retry(client.create_experiment, experiment, artifact_location=location, tags=UI_TAGS)


def setup(
    experiment: str, uri: str | None = None, root: str | os.PathLike = "mlruns"
) -> tuple[str, str]:
    """Point MLflow (fluent API included) at the store and ``experiment``; (uri, experiment id)."""
    uri = resolve_uri(uri, root)
    # mlflow.set_*_uri() also export the URI as environment variables (for subprocesses);
    # undo that, so only a user's own MLFLOW_TRACKING_URI ever counts as theirs.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    exp_id = ensure_experiment(experiment, uri, root)
    mlflow.set_experiment(experiment_id=exp_id)
    return uri, exp_id


def flatten(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"cutoff.eyes": "0.92", ...} (lists as their string form)."""
    out: dict[str, str] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def log_params(params: Mapping[str, str]) -> None:
    """Log params in batches (MLflow limits a batch to 100), values clipped to its limit."""
    items = [(k, v[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        retry(mlflow.log_params, dict(items[i : i + 100]))


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the checkout the package runs from ("unknown" outside git)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def ui_hint(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return f"make ui   (or: mlflow ui --host 127.0.0.1 --backend-store-uri {display_uri(uri)})"
    return f"open the MLflow UI of {uri}"
