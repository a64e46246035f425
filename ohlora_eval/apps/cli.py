"""Shared behaviour of the command-line apps: how a command starts (``hydra_app``),
what it says and where (the terminal, its Hydra job log), one-line errors for bad input,
non-zero exits, signals."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from ohlora_eval import lifeline
from ohlora_eval.apps.config import CONFIG_DIR, check_all
from ohlora_eval.apps.typos import unknown_key_line, unknown_option_line
from ohlora_eval.errors import Stopped, UserError, succeeded

__all__ = ["CONFIG_DIR", "UserError", "config_error_line", "friendly_errors", "hydra_app"]

PACKAGE = "ohlora_eval"  # the package's loggers: ohlora_eval.<module>
log = logging.getLogger(__name__)


def hydra_app(config_name: str) -> Callable[[Callable[[Any], Any]], Callable[..., Any]]:
    """The one way a command starts: Hydra composes ``conf/<config_name>.yaml`` with the
    command line and runs ``task(cfg)`` under ``friendly_errors``. A config Hydra cannot
    compose (an unknown key, a value of the wrong type, a group option that does not
    exist) is one line naming the key, exit 2, like any other bad input; set
    ``HYDRA_FULL_ERROR=1`` to see Hydra's own report instead."""

    def decorate(task: Callable[[Any], Any]) -> Callable[..., Any]:
        composed = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)(
            _job(friendly_errors(_checked(task)))
        )

        @functools.wraps(task)
        def entry(cfg: Any = None) -> Any:
            lifeline.mark_command()  # what it starts dies with it (lifeline.py)
            if cfg is not None or os.environ.get("HYDRA_FULL_ERROR"):
                with terminal():
                    return composed(cfg)
            # Hydra prints and exits 1 unless asked to raise; raise, then say it in one line.
            os.environ["HYDRA_FULL_ERROR"] = "1"
            _stop_on_signals()  # a sweep's main process too: its parent run must end
            with terminal():  # what is said outside a job too (a sweep's end, these errors)
                try:
                    return composed()
                except BaseException as exc:  # noqa: BLE001 - the boundary: exit_for decides
                    what = "sweep" if _end_open_sweep(exc) else "command"
                    exit_for(exc, what)
                finally:
                    os.environ.pop("HYDRA_FULL_ERROR", None)

        return entry

    return decorate


def _checked(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``task(cfg)`` after every schema's checks on the composed config (``config.check_all``):
    a value out of range anywhere is one line before the command does anything."""

    @functools.wraps(task)
    def run(cfg: Any) -> Any:
        check_all(cfg)
        return task(cfg)

    return run


def job_folder() -> Path | None:
    """The Hydra output folder of the running command (a multirun point's own), if any."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # not under Hydra (tests, the Python API)
        return None


class Terminal(logging.StreamHandler):
    """The package's records on the terminal as ``print`` wrote its lines: the message
    alone, on stdout for a record logged with ``extra=progress.STDOUT`` and on stderr for
    any other, to the ``sys.stdout``/``sys.stderr`` of the moment (a redirection, a test's
    capture, is followed). An error writing (a closed pipe) reaches the caller, as print's.
    A command's job gets two from conf/hydra/job_logging/ohlora.yaml; ``terminal`` adds
    them outside a job."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self.stream_name = stream_name
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(lambda record: getattr(record, "stream", "stderr") == stream_name)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, _value: Any) -> None:  # StreamHandler.__init__ sets one; sys's is used
        pass

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.stream
        stream.write(self.format(record) + self.terminator)
        stream.flush()


_shown: list[list[logging.Handler]] = []  # the handlers of the open ``terminal`` blocks


@contextlib.contextmanager
def terminal() -> Iterator[None]:
    """The package's loggers (``ohlora_eval.*``) shown on the terminal for the block, at
    INFO, and only there (not passed on to the root logger, whose console handler Hydra
    formats); then as they were. Nested, repeated or inside a job (whose ``job_logging``
    shows them): set up once."""
    pkg = logging.getLogger(PACKAGE)
    if any(isinstance(h, Terminal) for h in pkg.handlers):
        yield
        return
    saved = pkg.level, pkg.propagate
    handlers: list[logging.Handler] = [Terminal("stdout"), Terminal("stderr")]
    for handler in handlers:
        pkg.addHandler(handler)
    pkg.setLevel(logging.INFO)
    pkg.propagate = False
    _shown.append(handlers)
    try:
        yield
    finally:
        _shown.remove(handlers)
        for handler in handlers:
            pkg.removeHandler(handler)
        pkg.setLevel(saved[0])
        pkg.propagate = saved[1]


def _after_job() -> None:
    """The package's logger as before the job (Hydra's ``job_logging`` set it for the job):
    shown by the ``terminal`` block around the command, if any, else left to the root."""
    pkg = logging.getLogger(PACKAGE)
    pkg.handlers = list(_shown[-1]) if _shown else []
    pkg.propagate = not _shown
    pkg.setLevel(logging.INFO if _shown else logging.NOTSET)


@contextlib.contextmanager
def job_log() -> Iterator[Path | None]:
    """In a Hydra job, what the terminal shows also goes to the job's log file for the block
    (yielded; None outside a job, or when Hydra's job logging writes no file).

    The log is Hydra's: its ``job_logging`` (conf/hydra/job_logging/ohlora.yaml) gives the
    root logger and the package's a file handler, ``<output folder>/<job name>.log``. Added
    to it for the block, through that same handler (any file handler of the root that
    writes in the job's folder): loggers that write to the terminal themselves (MLflow's,
    configured when first imported); and Python's warnings go to the root's handlers
    (``logging.captureWarnings``). Progress bars are not logged."""
    folder = job_folder()
    if folder is None:
        yield None
        return
    files = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.FileHandler)
        and Path(h.baseFilename).resolve().is_relative_to(folder.resolve())
    ]
    if not files:
        yield None
        return
    loggers = _self_shown_loggers()  # the package's: conf/hydra/job_logging/ohlora.yaml
    for logger in loggers:
        for handler in files:
            logger.addHandler(handler)
    logging.captureWarnings(True)  # Python's warnings: logger py.warnings -> the root's
    try:
        yield Path(files[0].baseFilename)
    finally:
        logging.captureWarnings(False)
        for logger in loggers:
            for handler in files:
                logger.removeHandler(handler)


def _self_shown_loggers() -> list[logging.Logger]:
    """Loggers that write to the terminal with handlers of their own instead of passing
    records on to the root (MLflow's ``mlflow``, ``alembic``, ...); not the package's."""
    found = []
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger) or logger.propagate:
            continue
        if name == PACKAGE or name.startswith(PACKAGE + "."):
            continue
        if any(type(h) is logging.StreamHandler for h in logger.handlers):
            found.append(logger)
    return found


STARTING = "starting: loading torch and MLflow, opening the tracking store, building the models"
"""What a command says when it has been silent for a while at its start (``progress.starting``)."""


def _job(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A command's job: what it says on the terminal and in Hydra's job log (its
    ``job_logging``, ``terminal`` where a job has none, ``job_log``), MLflow's noise held
    back while it uses the store (``store.quiet``), and a line every few seconds while it
    starts (``progress.starting``: imports, the store, the models) until it says something.
    After it, the package's logger is as before the job (a command run in-process leaves
    no handler of its job behind)."""

    @functools.wraps(task)
    def run(cfg: Any) -> Any:
        from ohlora_eval import progress
        from ohlora_eval.tracking import store

        try:
            with terminal(), job_log(), progress.starting(STARTING), store.quiet():
                return task(cfg)
        finally:
            _after_job()

    return run


def config_error_line(exc: BaseException) -> str:
    """One line for an error of Hydra or OmegaConf: what went wrong and the key it names
    (their messages span several lines: a summary, the cause, ``full_key: ...``); a key or
    group option that does not exist names the nearest ones."""
    typo = unknown_key_line(exc) or unknown_option_line(exc) or _wrong_type_line(exc)
    if typo:
        return typo
    cause: BaseException | None = exc
    while cause is not None:  # ours, raised while Hydra composed (a resolver): its own line
        if isinstance(cause, UserError):
            return " ".join(str(cause).split())
        cause = cause.__cause__ or cause.__context__
    noise = ("full_key:", "object_type=", "reference_type=", "See https://hydra.cc")
    parts: list[str] = []
    key = getattr(exc, "override", None)  # an override Hydra cannot parse
    seen: BaseException | None = exc
    while seen is not None:
        key = key or getattr(seen, "full_key", None)
        text = str(getattr(seen, "msg", None) or seen).split("Config search path:")[0]
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        lines = [ln for ln in lines if not ln.startswith(noise)]
        if lines and not lines[0].startswith("Error executing job"):
            parts.append(" ".join(lines))
        seen = seen.__cause__
    line = "; ".join(dict.fromkeys(parts)) or type(exc).__name__
    if key and key not in line:
        line = f"{key}: {line}"
    return line


_CONVERT = re.compile(r"Value '(.*)' of type '\w+' could not be converted to (\w+)", re.S)
_NOT_BOOL = re.compile(r"Value '(.*)' is not a valid bool", re.S)
_WANTED = {
    "Integer": "must be an integer",
    "Float": "is not a number",
    "Boolean": "must be true or false",
}


def _wrong_type_line(exc: BaseException) -> str | None:
    """A value a schema's field cannot hold (``generator.seed=abc``, ``cutoff.eyes=null``),
    in the house's words: ``<key>=<value> must be ...``."""
    seen: BaseException | None = exc
    while seen is not None:
        key, text = getattr(seen, "full_key", None), str(getattr(seen, "msg", "") or "")
        found = _CONVERT.search(text)
        if key and found and found.group(2) in _WANTED:
            return f"{key}={found.group(1)!r} {_WANTED[found.group(2)]}"
        found = _NOT_BOOL.search(text)
        if key and found:
            return f"{key}={found.group(1)!r} {_WANTED['Boolean']}"
        if key and "is not Optional" in text:
            return f"{key}=null is not allowed: {key} needs a value (see --cfg job)"
        seen = seen.__cause__
    return None


BUG_LINE = (
    "ohlora_eval: this is a bug in ohlora_eval, not in your input; please report it with"
    " the traceback above."
)


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The one error boundary of a command. Bad input (our ``UserError``s, a config that
    Hydra or OmegaConf cannot compose or read, a tracking store that stopped answering) is
    one line, ``ohlora_eval: error: ...``, and exit status 2. Anything else is a bug of
    ours: its traceback, then a line that says so, and exit status 1. Both go to the
    terminal and to the command's job log (logged as ``ohlora_eval.apps.cli``)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _stop_on_signals()
        with _store_waits(args):  # its error lines name the command's wait too
            try:
                out = fn(*args, **kwargs)
                succeeded()  # a late SIGTERM (while the process winds down) is exit 0
                return out
            except BaseException as exc:  # noqa: BLE001 - the boundary: exit_for decides
                exit_for(exc)

    return wrapper


def exit_for(exc: BaseException, what: str = "") -> NoReturn:
    """How a command ends on ``exc`` (the one mapping; ``friendly_errors`` inside a job and
    ``hydra_app`` outside it, where Hydra composes, both end here). ``what``: "command" or
    "sweep" when said outside a job."""
    if not isinstance(exc, (Exception, KeyboardInterrupt)):  # SystemExit, GeneratorExit, ...
        raise exc
    if isinstance(exc, (Stopped, KeyboardInterrupt)):
        name = exc.name if isinstance(exc, Stopped) else "Ctrl-C"
        code = 128 + exc.signum if isinstance(exc, Stopped) else 130
        if what:
            said = f"{what} stopped by {name}"
        else:
            said = f"stopped by {name}" if isinstance(exc, Stopped) else "interrupted"
        with terminal():
            log.error(f"\nohlora_eval: {said}; what was measured is kept.")
        sys.exit(code)
    if isinstance(exc, BrokenPipeError):  # `... --help | head`: the reader left; so do we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    # Outside a job, Hydra's own errors are about the command line; inside one, only those of
    # reading a config (an instantiate that failed is the model's error, not the input's).
    inside = (OmegaConfBaseException, ConfigCompositionException, MissingConfigException)
    if isinstance(exc, (OmegaConfBaseException, HydraException) if what else inside):
        _bad_input(config_error_line(exc))  # a key or interpolation the config lacks
    if isinstance(exc, UserError):
        _bad_input(" ".join(str(exc).split()) or type(exc).__name__)
    gone = _store_gone(exc)  # an Exception by now (the others are handled above)
    if gone is not None:
        _bad_input(gone)
    _bug(exc)


def _bad_input(line: str) -> NoReturn:
    """``ohlora_eval: error: <line>`` on the terminal (once) and in the job log; exit 2."""
    with terminal():
        log.error(f"ohlora_eval: error: {line}")
    sys.exit(2)


def _bug(exc: BaseException) -> NoReturn:
    """``exc`` is a bug of ours: its traceback and ``BUG_LINE`` on the terminal and in the
    job log; exit 1."""
    trace = "".join(traceback.format_exception(exc)).rstrip("\n")
    with terminal():
        log.error(f"{trace}\n{BUG_LINE}")
    sys.exit(1)


def _store_waits(args: tuple) -> Any:
    """A tracking server that stops answering ends the command after about
    ``tracking.store_wait_s`` seconds (``store.bounded_waits``)."""
    from ohlora_eval.tracking import store

    cfg = args[0] if args else None
    try:
        seconds = float(cfg.tracking.get("store_wait_s", 60))
    except Exception:  # noqa: BLE001 - a config without tracking settings
        seconds = 60.0
    return store.bounded_waits(seconds)


def _store_gone(exc: BaseException) -> str | None:
    """One line for a tracking store that stopped answering (MLflow's own report is pages of
    retries) or an SQLite store another process kept locked, or None for any other error."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException

    from ohlora_eval.tracking import store

    if store.locked(exc):  # an SQLite store locked past its busy timeout, outside ``retry``
        return store.locked_line(os.environ.get("MLFLOW_TRACKING_URI") or _active_uri())
    if not isinstance(exc, (MlflowException, RequestException, ConnectionError, TimeoutError)):
        return None
    why = store.unavailable(exc)
    if why is None:
        return None
    uri = os.environ.get("MLFLOW_TRACKING_URI") or _active_uri()
    return (
        f"the MLflow store {uri} stopped answering ({why}); what was measured is kept in the"
        " cache: start the store again and run the same command to resume (the unfinished"
        " run is marked by the next one)"
    )


def _active_uri() -> str:
    import mlflow

    from ohlora_eval.tracking import store

    return store.display_uri(mlflow.get_tracking_uri())


def _end_open_sweep(exc: BaseException) -> bool:
    """A sweep cut short (a signal, Ctrl-C, a job that exited with an error status): its
    workers are stopped and its parent and unfinished points end KILLED with the reason
    (``tracking.sweep.stop_open_sweep``). A clean exit of a sweep's last job leaves it be."""
    if isinstance(exc, SystemExit) and exc.code in (0, None):
        return False
    sweep = sys.modules.get("ohlora_eval.tracking.sweep")  # not loaded: no sweep was opened
    if sweep is None or not sweep.sweep_open():
        return False
    status = "KILLED"
    if isinstance(exc, Stopped):
        reason = f"sweep stopped by {exc.name}"
    elif isinstance(exc, KeyboardInterrupt):
        reason = "sweep interrupted (Ctrl-C)"
    else:
        code = exc.code if isinstance(exc, SystemExit) else "?"
        reason, status = f"sweep ended by a job that exited with status {code}", "FAILED"
        if isinstance(code, int) and code > 128:
            reason, status = f"sweep stopped by {signal.Signals(code - 128).name}", "KILLED"
    sweep.stop_open_sweep(reason, status=status)
    return True


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP end a command like Ctrl-C does (schedulers such as SLURM,
    Kubernetes and ``timeout`` stop jobs with SIGTERM): the run is marked KILLED with the
    signal's name, the measurements are kept, and the exit status is 128 + the signal."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum: int, _frame: object) -> None:
        raise Stopped(signum, signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)
