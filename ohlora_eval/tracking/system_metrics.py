"""What a run cost: MLflow's system metrics, sampled on a thread while a run is open.

Every run that ``tracking.runs.tracked_run`` or ``side_run`` opens records, under MLflow's
own names (``system/cpu_utilization_percentage``, ``system/system_memory_usage_megabytes``,
``system/disk_usage_percentage``, ``system/network_receive_megabytes``, ...; with
``pynvml`` and an NVIDIA GPU also ``system/gpu_0_utilization_percentage``,
``system/gpu_0_memory_usage_megabytes``, ...), one point per ``interval_s``. They are
machine-wide figures: on a shared machine other people's work counts too.

MLflow's monitors (``mlflow.system_metrics.metrics``) take the readings; this module only
changes when they are logged. MLflow's own thread (``start_run(log_system_metrics=True)``)
logs a point after each full interval and drops the last, partial one, so a run shorter
than the interval gets none, and its CPU figure is psutil's process-wide ``cpu_percent``,
which two monitors at once (a screening and the direction fit it starts) reset for each
other. Here each point describes the window before it (CPU: the busy share of the CPU
time between this monitor's own two readings; memory, disk, GPU: at the window's end), and
closing the run logs the last, partial window (when it is at least a second long, or the
only one): every monitored run has at least one point.

On by default. Commands take ``tracking.system_metrics`` (true/false) and
``tracking.system_metrics_interval_s`` from their config, for the length of their Hydra job
(``FromConfig``, ``ENV``); the Python API (``screen.evaluate(cfg)`` called directly) uses
the process setting, ``configure(...)``. A monitor's errors never end a run: the first is
logged as a warning and the monitor stops.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import ConfigError, number_in

log = logging.getLogger(__name__)

PREFIX = "system/"
METRICS = "mlflow.system_metrics.metrics"  # MLflow's monitors, one module each
DEFAULT_INTERVAL_S = 10.0  # MLflow's own default sampling interval
# Each point is a write to the store beside the run's own: a tester saw 0.1 s slow a
# screening 2.5-3.8x (issue 32). 1 s is the floor: a 300-vector screening on a 2-core CPU
# and an SQLite store took 48.0 s at 1 s and 45.9 s at 10 s (two runs each, 2026-12-07).
MIN_INTERVAL_S = 1.0
_FLOOR = "each point is a write to the store; shorter intervals slow the run itself"
TAIL_S = 1.0  # the last window is logged when at least this long (or when it is the only one)


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    interval_s: float = DEFAULT_INTERVAL_S


_process = Settings()  # the Python API's setting (``configure``)

# A command's config reaches its runs through these, so ``tracked_run`` needs no config
# passed down: ``FromConfig`` writes them when a Hydra job starts, and as conf/hydra/
# default.yaml lists them in ``hydra.job.env_set``, Hydra puts them back when the job ends,
# however it ends (its ``on_job_end`` is skipped when a job exits, e.g. on a bad value).
ENV = "OHLORA_SYSTEM_METRICS"
ENV_INTERVAL = "OHLORA_SYSTEM_METRICS_INTERVAL_S"


def check(enabled: Any, interval_s: Any) -> Settings:
    """The setting, or a one-line ConfigError naming the key."""
    if not isinstance(enabled, bool):
        raise ConfigError(f"tracking.system_metrics={enabled!r} must be true or false")
    interval = number_in(
        "tracking.system_metrics_interval_s", interval_s, MIN_INTERVAL_S, 3600, hint=_FLOOR
    )
    return Settings(enabled, interval)


def configure(enabled: bool | None = None, interval_s: float | None = None) -> Settings:
    """Set the process's setting (for runs opened outside a command's Hydra job); returns
    the previous one."""
    global _process
    before = _process
    _process = check(
        before.enabled if enabled is None else enabled,
        before.interval_s if interval_s is None else interval_s,
    )
    return before


def _parsed(text: str) -> Any:
    """An environment value as the config wrote it: a bool, a number, else the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


class FromConfig(Callback):
    """Hydra callback: the job's ``tracking.system_metrics*`` for the runs it opens (checked
    when a run opens, inside the command, so that a bad value is one line and exit 2)."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        tracking = config.get("tracking") if hasattr(config, "get") else None
        for key, name in (("system_metrics", ENV), ("system_metrics_interval_s", ENV_INTERVAL)):
            value = tracking.get(key) if tracking is not None else None
            if value is not None:
                os.environ[name] = str(value)


def current() -> Settings:
    """The setting a run opened now uses: its command's config, else the process's."""
    enabled = os.environ.get(ENV) or None  # "" (the job's placeholder): not set
    interval = os.environ.get(ENV_INTERVAL) or None
    return check(
        _process.enabled if enabled is None else _parsed(enabled),
        _process.interval_s if interval is None else _parsed(interval),
    )


def _busy_share(before: Any, after: Any) -> float:
    """The share of CPU time spent busy between two ``psutil.cpu_times()`` readings, as
    psutil's ``cpu_percent`` counts it (guest time is inside user time on Linux; idle and
    I/O wait are not busy)."""

    def parts(t: Any) -> tuple[float, float]:  # fields a platform lacks count as 0
        total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
        return total, total - t.idle - getattr(t, "iowait", 0.0)

    total0, busy0 = parts(before)
    total1, busy1 = parts(after)
    if total1 - total0 <= 0:
        return 0.0
    return min(1.0, max(0.0, (busy1 - busy0) / (total1 - total0)))


def _monitors() -> list[Any]:
    """MLflow's monitors: CPU and memory (CPU from our own readings), disk, network, and an
    NVIDIA (pynvml) or AMD GPU where one is found."""
    import psutil
    from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
    from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
    from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

    class WindowCPU(CPUMonitor):
        """MLflow's CPU and memory readings; CPU busy over the window since the last one."""

        def __init__(self) -> None:
            super().__init__()
            self._last = psutil.cpu_times()

        def collect_metrics(self) -> None:
            now = psutil.cpu_times()
            self._metrics["cpu_utilization_percentage"].append(100.0 * _busy_share(self._last, now))
            self._last = now
            memory = psutil.virtual_memory()
            self._metrics["system_memory_usage_megabytes"].append(memory.used / 1e6)
            self._metrics["system_memory_usage_percentage"].append(memory.used / memory.total * 100)

    found: list[Any] = [WindowCPU(), DiskMonitor(), NetworkMonitor()]
    for module, name in (("gpu_monitor", "GPUMonitor"), ("rocm_monitor", "ROCMMonitor")):
        try:
            found.append(getattr(importlib.import_module(f"{METRICS}.{module}"), name)())
            break
        except Exception:  # noqa: BLE001 - no such GPU, or its library is not installed
            continue
    return found


class RunMonitor:
    """One run's system metrics: a point every ``interval_s`` on a daemon thread, and the
    last, partial window when ``close`` is called."""

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self.monitors = _monitors()
        self.step = 0
        self._last = time.monotonic()  # when the window being measured began
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._failed = False
        self._thread = threading.Thread(
            target=self._loop, name=f"system-metrics-{run_id[:8]}", daemon=True
        )

    def start(self) -> RunMonitor:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        """Read every monitor and log one point (step = points so far)."""
        from mlflow.entities import Metric

        from ohlora_eval.tracking import store

        with self._lock:
            if self._failed:
                return
            try:
                values: dict[str, float] = {}
                for monitor in self.monitors:
                    monitor.collect_metrics()
                    values.update(monitor.aggregate_metrics())
                    monitor.clear_metrics()
                now = int(time.time() * 1000)
                metrics = [Metric(PREFIX + k, float(v), now, self.step) for k, v in values.items()]
                store.retry(self.client.log_batch, self.run_id, metrics=metrics)
                self.step += 1
                self._last = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - never the run's problem
                self._failed = True
                log.warning(
                    f"ohlora_eval: system metrics of run {self.run_id} stopped: "
                    + " ".join(str(exc).split())[:300]
                )

    def close(self) -> None:
        """Stop the thread and log the last window (it is part of the run's cost), unless a
        point was logged less than a second ago (CPU time is counted in 10 ms ticks: a
        shorter window says little)."""
        self._stop.set()
        self._thread.join()
        if self.step == 0 or time.monotonic() - self._last >= min(TAIL_S, self.interval_s):
            self.sample()


@contextlib.contextmanager
def monitored(
    client: MlflowClient, run_id: str, settings: Settings, what: str = "run"
) -> Iterator[None]:
    """System metrics of run ``run_id`` for the block (nothing when switched off); the
    thread is stopped, and the last window logged, however the block ends. ``what`` names
    the run in the warning when they cannot be taken (a sweep's parent: "sweep run")."""
    monitor = None
    if settings.enabled:
        try:
            monitor = RunMonitor(client, run_id, settings.interval_s).start()
        except Exception as exc:  # noqa: BLE001 - e.g. psutil missing: the run goes on
            log.warning(f"ohlora_eval: no system metrics for {what} {run_id}: {exc}")
    try:
        yield
    finally:
        if monitor is not None:
            monitor.close()
