"""Sweeps in MLflow: a parent run per ``-m`` sweep that compares its points.

A Hydra callback (registered in conf/config.yaml) opens the parent run before
the jobs start (named by the sweep, e.g. ``sweep cutoff.eyes=0.86,0.88``) and,
when they are done, logs a table and a plot of passed and pass rate against the
swept values, sets the table (markdown) as the parent's description and prints it,
with what the sweep cost: its wall time and the images its points measured (also the
parent's metrics ``wall_seconds`` and ``images_measured``).
Each job's run is nested under it (tag ``mlflow.parentRunId``) and named by its
swept values (``point_name``, e.g. ``cutoff.eyes=0.9``), so the MLflow UI shows
the sweep as one expandable row. Works with the joblib launcher too: jobs find
the parent and the swept keys through files in the sweep folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from ohlora_eval.progress import STDOUT
from ohlora_eval.tracking import store
from ohlora_eval.tracking.ui_links import ui_url

log = logging.getLogger(__name__)

_OPEN: dict[str, str] = {}
"""The sweep this process opened and has not ended yet: its parent run and store."""
_MONITOR: list[Any] = []
"""The open sweep's system-metrics monitor (``system_metrics.RunMonitor``), if any."""

PARENT_FILE = ".mlflow_parent_run"
SWEPT_FILE = ".ohlora_swept_keys"
NOTE_TAG = "mlflow.note.content"
PROPS = ("eyes", "mouth", "pose")
COMPARED = [
    "passed",
    "pass_rate",
    "eyes_pass_rate",
    "mouth_pass_rate",
    "pose_pass_rate",
    "eyes_corr_mean",
    "mouth_corr_mean",
    "pose_corr_mean",
    "eyes_abs_corr_mean",
    "mouth_abs_corr_mean",
    "pose_abs_corr_mean",
    "sum_abs_corr_mean",
    "images_per_sec",
    "measure_seconds",
    "measured_chunks",
    "measured_images",
    "reused_chunks",
    "pass_rate_ci_lo",
    "pass_rate_ci_hi",
    *(f"{p}_abs_corr_ci_{end}" for p in PROPS for end in ("lo", "hi")),
]


def parent_run_id() -> str | None:
    """Inside a sweep job: the sweep's parent run, if the callback made one."""
    try:
        folder = Path(HydraConfig.get().sweep.dir)
    except Exception:
        return None
    path = folder / PARENT_FILE
    return path.read_text().strip() if path.is_file() else None


def swept_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a ``-m`` command line that sweep (``key=a,b``, ``range(..)``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports a bad override itself
        return []
    return [o.input_line for o in parsed if o.is_sweep_override() and o.input_line]


def point_name() -> str | None:
    """Inside a sweep job: its swept values, e.g. ``cutoff.eyes=0.9`` (the run's name)."""
    try:
        hc = HydraConfig.get()
        folder = Path(hc.sweep.dir)
        mine = [str(o) for o in hc.overrides.task]
    except Exception:
        return None
    try:
        keys = json.loads((folder / SWEPT_FILE).read_text())
    except (OSError, ValueError):
        keys = []
    values = {o.partition("=")[0].lstrip("+~"): o.partition("=")[2] for o in mine}
    shown = [f"{k}={values[k]}" for k in keys if k in values]
    return " ".join(shown) if shown else f"sweep job {hc.job.num}"


class SweepParent(Callback):
    """Hydra callback: the parent run of a multirun sweep."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or "tracking" not in config:
            return
        folder = Path(config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        uri = store.resolve_uri(config.tracking.uri, config.tracking.root)
        exp_id = store.ensure_experiment(config.tracking.experiment, uri, config.tracking.root)
        client = MlflowClient(uri)
        overrides = list(config.hydra.overrides.task)
        swept = swept_overrides(overrides)
        keys = [o.partition("=")[0].lstrip("+~") for o in swept]
        (folder / SWEPT_FILE).write_text(json.dumps(keys))
        name = "sweep " + (" ".join(swept) or folder.name)
        n_vectors = (config.get("sampling") or {}).get("n_vectors")
        if n_vectors is not None and "sampling.n_vectors" not in keys:
            name += f" | {int(n_vectors)} vectors"  # two sweeps of other sizes differ by name
        run = store.retry(
            client.create_run,
            exp_id,
            run_name=name if len(name) <= 250 else name[:247] + "...",
            tags={
                "ohlora.kind": "sweep",
                "sweep_id": folder.name,
                "sweep.overrides": " ".join(overrides)[:5000],
                "git_commit": store.git_commit(),
            },
        )
        (folder / PARENT_FILE).write_text(run.info.run_id)
        _OPEN.update(parent=run.info.run_id, uri=uri)
        _watch(client, run.info.run_id, config.tracking)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled or "tracking" not in config:
            return
        folder = Path(config.hydra.sweep.dir)
        parent = (
            (folder / PARENT_FILE).read_text().strip() if (folder / PARENT_FILE).is_file() else None
        )
        if parent is None:
            return
        _OPEN.clear()
        _unwatch()
        uri = store.resolve_uri(config.tracking.uri, config.tracking.root)
        client = MlflowClient(uri)
        table = compare(client, parent, folder)
        started = store.retry(client.get_run, parent).info.start_time
        wall_s = max(0.0, time.time() - started / 1000) if started else float("nan")
        cost = sweep_cost(table, wall_s)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            table.to_csv(out / "sweep_comparison.csv", index=False)
            plot_sweep(table, out / "sweep_comparison.png")
            store.retry(client.log_artifacts, parent, str(out))
        finished = table["status"].eq("FINISHED") if len(table) else pd.Series([], dtype=bool)
        text = sweep_note(table, cost)
        store.retry(client.set_tag, parent, NOTE_TAG, text)
        if len(table):
            store.retry(client.log_metric, parent, "points", float(len(table)))
            store.retry(client.log_metric, parent, "points_finished", float(finished.sum()))
        if wall_s == wall_s:
            store.retry(client.log_metric, parent, "wall_seconds", wall_s)
        store.retry(client.log_metric, parent, "images_measured", float(cost["images"]))
        status = "FINISHED" if len(table) and finished.all() else "FAILED"
        store.retry(client.set_terminated, parent, status)
        exp_id = client.get_run(parent).info.experiment_id
        log.info(
            f"\nohlora_eval: sweep {folder.name}: {int(finished.sum())} of {len(table)} points"
            f" finished\n\n{text}\n\n  parent run {parent}: {ui_url(uri, exp_id, parent)}"
            f"\n  all runs (after make ui): {ui_url(uri, exp_id)}",
            extra=STDOUT,
        )


def _watch(client: MlflowClient, parent: str, tracking: Any) -> None:
    """The parent run records the system metrics of the whole sweep (``tracking.system_metrics``;
    a bad value is left for the first job to report in one line)."""
    from ohlora_eval.tracking import system_metrics

    try:
        settings = system_metrics.check(
            tracking.get("system_metrics", True),
            tracking.get("system_metrics_interval_s", system_metrics.DEFAULT_INTERVAL_S),
        )
    except ValueError:
        return
    if settings.enabled:
        try:
            _MONITOR.append(system_metrics.RunMonitor(client, parent, settings.interval_s).start())
        except Exception as exc:  # noqa: BLE001 - the sweep goes on without them
            log.warning(f"ohlora_eval: no system metrics for sweep run {parent}: {exc}")


def _unwatch() -> None:
    while _MONITOR:
        _MONITOR.pop().close()


def sweep_open() -> bool:
    """Whether this process opened a sweep's parent run that has not ended yet."""
    return bool(_OPEN)


def stop_open_sweep(reason: str, grace_s: float = 8.0, status: str = "KILLED") -> None:
    """A sweep stopped midway (SIGTERM, SIGINT, a job that exited): its worker processes
    (a parallel launcher's) get SIGTERM, then SIGKILL after ``grace_s``; the parent run and
    every point still RUNNING end ``status`` (KILLED; FAILED for a job's error) with
    ``reason``. Running the sweep again resumes from the measurement cache. Nothing to do
    when this process opened no sweep."""
    if not _OPEN:
        return
    parent, uri = _OPEN["parent"], _OPEN["uri"]
    _OPEN.clear()
    _unwatch()
    _stop_children(grace_s)
    client = MlflowClient(uri)
    try:
        exp_id = store.retry(client.get_run, parent).info.experiment_id
        points = store.retry(
            client.search_runs,
            [exp_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent}' and attributes.status = 'RUNNING'"
            ),
        )
        for run_id in [p.info.run_id for p in points] + [parent]:
            store.retry(client.set_tag, run_id, "ohlora.end_reason", reason)
            store.retry(client.set_terminated, run_id, status)
    except Exception as exc:  # noqa: BLE001 - the store may be what failed
        line = f"ohlora_eval: could not mark sweep run {parent} as stopped ({exc})"
        log.warning(line.splitlines()[0], extra=STDOUT)


def _children() -> list[int]:
    """This process's child processes (Linux: from /proc; elsewhere none are found)."""
    me, found = os.getpid(), []
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(name))
    return found


def _stop_children(grace_s: float) -> None:
    pids = _children()
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our finished child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if Path(f"/proc/{pid}/stat").exists()
        else "?"
    )
    return state != "Z"


def compare(client: MlflowClient, parent: str, folder: Path) -> pd.DataFrame:
    """One row per job: its swept values (Hydra overrides), run id, status and metrics."""
    exp_id = client.get_run(parent).info.experiment_id
    runs = store.retry(
        client.search_runs,
        [exp_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
    )
    by_job = {r.data.tags.get("sweep.job"): r for r in runs}
    rows = []
    for job_dir in sorted(
        (p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    ):
        overrides = _overrides(job_dir)
        run = by_job.get(job_dir.name)
        row: dict[str, Any] = {
            "job": int(job_dir.name),
            **overrides,
            "run_id": run.info.run_id if run else "",
            "status": run.info.status if run else "MISSING",
            "wall_s": _run_seconds(run),
        }
        for m in COMPARED:
            row[m] = run.data.metrics.get(m) if run else None
        rows.append(row)
    return pd.DataFrame(rows)


def _run_seconds(run: Any) -> float:
    """A run's wall time from its start to its end (NaN while it has no end)."""
    if run is None or not run.info.start_time or not run.info.end_time:
        return float("nan")
    return (run.info.end_time - run.info.start_time) / 1000


def images_measured(row: Mapping[str, Any]) -> int:
    """How many images one point generated and scored itself (its ``measured_images``
    metric; 0 for a point that measured nothing: re-used chunks, a re-judge)."""
    try:
        v = float(row.get("measured_images"))
    except (TypeError, ValueError):
        return 0
    return 0 if v != v else int(v)


def sweep_cost(table: pd.DataFrame, wall_s: float) -> dict[str, float]:
    """What the sweep cost: its wall time (the parent's start to now), its points' run times
    summed (more than the wall time when they ran in parallel), the images they measured and
    how many points measured any."""
    rows = [r for _, r in table.iterrows()] if len(table) else []
    images = [images_measured(r) for r in rows]
    points = [float(r.get("wall_s")) for r in rows if r.get("wall_s") == r.get("wall_s")]
    return {
        "wall_s": wall_s,
        "points_s": float(sum(points)) if points else float("nan"),
        "images": int(sum(images)),
        "measuring_points": int(sum(1 for i in images if i > 0)),
        "points": len(rows),
    }


def _duration(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {sec:02d} s"


def cost_line(cost: Mapping[str, float]) -> str:
    """One line: wall time, the points' summed run time, images measured and by how many."""
    images = int(cost["images"])
    if images:
        by = f"by {cost['measuring_points']} of {cost['points']} points"
        measured = f"{images:,} images measured ({by}; the others re-used measured chunks)"
        if cost["measuring_points"] == cost["points"]:
            measured = f"{images:,} images measured (by every point)"
    else:
        measured = "no image measured (every point re-used a measurement or re-judged one)"
    return (
        f"cost: {_duration(cost['wall_s'])} wall time from the sweep's start to its end"
        f" (its points' runs {_duration(cost['points_s'])} in all); {measured}"
    )


def _overrides(job_dir: Path) -> dict[str, Any]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}
    out = {}
    for item in yaml.safe_load(path.read_text()) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = _number(value)
    return out


def _number(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return text


def swept_keys(table: pd.DataFrame) -> list[str]:
    fixed = {"job", "run_id", "run_name", "status", "wall_s", *COMPARED}
    return [c for c in table.columns if c not in fixed and table[c].nunique(dropna=False) > 1]


def _fmt(value: Any, spec: str) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else format(v, spec)


def _with_interval(r: pd.Series, key: str, lo: str, hi: str, spec: str) -> str:
    """``value [lo, hi]`` where the run logged the interval, else the value."""
    value = _fmt(r.get(key), spec)
    if _fmt(r.get(lo), spec) == "n/a":
        return value
    return f"{value} [{_fmt(r.get(lo), spec)}, {_fmt(r.get(hi), spec)}]"


def markdown_table(table: pd.DataFrame) -> str:
    """The sweep's points as a markdown table: swept values -> passed, pass rate and each
    mean |r|, with their 95 % intervals where the runs logged them."""
    if table.empty:
        return "_no points_"
    keys = swept_keys(table) or ["job"]
    intervals = "pass_rate_ci_lo" in table and table["pass_rate_ci_lo"].notna().any()
    ci = " (95 % CI)" if intervals else ""
    head = [*keys, "passed", f"pass rate{ci}", *(f"mean abs r {p}{ci}" for p in PROPS), "status"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.sort_values(list(dict.fromkeys([*keys, "job"]))).iterrows():
        rate = _with_interval(r, "pass_rate", "pass_rate_ci_lo", "pass_rate_ci_hi", ".1%")
        means = [
            _with_interval(
                r, f"{p}_abs_corr_mean", f"{p}_abs_corr_ci_lo", f"{p}_abs_corr_ci_hi", ".3f"
            )
            for p in PROPS
        ]
        cells = [*(str(r[k]) for k in keys), _fmt(r.get("passed"), ".0f"), rate, *means]
        rows.append("| " + " | ".join([*cells, str(r["status"])]) + " |")
    return "\n".join(rows)


def sweep_note(table: pd.DataFrame, cost: Mapping[str, float] | None = None) -> str:
    """The parent run's description: one line (what the runs table shows: the points' passed
    counts, and with ``cost`` the wall time and images measured), the table, then the cost."""
    keys = swept_keys(table)
    done = table[table["status"] == "FINISHED"] if len(table) else table
    passed = ", ".join(_fmt(v, ".0f") for v in done.sort_values(keys or ["job"])["passed"])
    over = " x ".join(keys) or "jobs"
    head = f"{len(table)} points over {over}: passed {passed or 'none'}"
    if cost is None:
        return f"{head}\n\n{markdown_table(table)}"
    head += f" | {_duration(cost['wall_s'])}, {int(cost['images']):,} images measured"
    return f"{head}\n\n{markdown_table(table)}\n\n{cost_line(cost)}"


def plot_sweep(table: pd.DataFrame, path: Path) -> None:
    """Two panels over the swept value: passed (with its pass rate written at each point),
    and the pass rate of each property and of all three."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = swept_keys(table)
    numeric = len(keys) == 1 and pd.api.types.is_numeric_dtype(table[keys[0]])
    x = table[keys[0]] if numeric else table["job"]
    label = keys[0] if numeric else "job (" + ", ".join(keys) + ")"
    order = x.argsort()
    xs = x.iloc[order]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    passed = table["passed"].iloc[order]
    left.plot(xs, passed, "o-", color="#4c72b0")
    for xv, n, rate in zip(xs, passed, table["pass_rate"].iloc[order], strict=False):
        if n == n:
            left.annotate(
                f"{n:.0f} ({rate:.1%})",
                (xv, n),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
    left.set_xlabel(label)
    left.set_ylabel("passed vectors (count)", color="#4c72b0")
    left.set_title("passed")
    left.margins(y=0.2)
    colours = {"eyes": "#55a868", "mouth": "#c44e52", "pose": "#8172b2"}
    for p, colour in colours.items():
        if f"{p}_pass_rate" in table:
            right.plot(xs, table[f"{p}_pass_rate"].iloc[order], "s--", color=colour, label=p)
    right.plot(xs, table["pass_rate"].iloc[order], "o-", color="black", label="all three")
    right.set_xlabel(label)
    right.set_ylabel("pass rate (share of vectors)")
    right.set_ylim(0, 1.02)
    right.set_title("pass rate per property")
    right.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
