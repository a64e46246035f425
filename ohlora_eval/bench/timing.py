"""Timing primitives: wall and process-CPU seconds of a call (after the device has finished),
repeated runs of named variants with their medians, and the machine the numbers came from.

Nothing here knows about the pipeline; every section times its variants with ``Runs``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch


def sync(device: str) -> None:
    """Wait for queued CUDA work, so a timer stops when the device is done."""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str = "cpu") -> tuple[float, Any]:
    """Wall seconds of ``fn()`` (waiting for the device to finish) and its result."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def minor_faults() -> int:
    """Page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # not on Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def ratio(a: float | None, b: float | None) -> float:
    """``a / b``, NaN where either is missing or ``b`` is not a positive finite number."""
    if a is None or b is None or not np.isfinite(b) or b <= 0:
        return float("nan")
    return float(a / b)


class Runs:
    """Wall and process-CPU seconds (and page faults) of repeated runs of named variants.

    CPU seconds (all threads of this process) are kept next to wall seconds
    because a shared machine inflates wall time far more than CPU time; with a
    quiet machine, CPU s is about threads x wall s. Minor page faults are kept
    because fresh large buffers (which the C allocator maps and unmaps on every
    big tensor) cost more than the arithmetic on CPU.
    """

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self.faults: dict[str, list[int]] = {}

    def time(self, name: str, fn: Callable[[], Any], device: str = "cpu") -> Any:
        """Run ``fn`` once as variant ``name``, record its costs, return its result."""
        c0, f0 = time.process_time(), minor_faults()
        seconds, out = timed(fn, device)
        self.wall.setdefault(name, []).append(seconds)
        self.cpu.setdefault(name, []).append(time.process_time() - c0)
        self.faults.setdefault(name, []).append(minor_faults() - f0)
        return out

    def rate(self, name: str, images: int) -> float:
        """Images per median wall second of variant ``name``."""
        return ratio(images, median(self.wall.get(name, [])))

    def cpu_rate(self, name: str, images: int) -> float:
        """Images per median CPU second of variant ``name``."""
        return ratio(images, median(self.cpu.get(name, [])))


def loadavg() -> list[float] | None:
    """The 1/5/15-minute load averages, rounded (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, torch build and threads, load at the start."""
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    start = loadavg()
    if start is not None:
        info["loadavg_start"] = start
    return info
