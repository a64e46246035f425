"""A sweep's comparison of its points: the table (``sweep_comparison.csv``), what the sweep
cost, the markdown note (the parent's description) and the plot. ``tracking/sweep.py``
makes the parent run and calls these when the sweep ends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow.tracking import MlflowClient

from ohlora_eval.tracking import store

PROPS = ("eyes", "mouth", "pose")
COMPARED = [
    "passed",
    "pass_rate",
    *(f"{p}_{metric}" for metric in ("pass_rate", "corr_mean", "abs_corr_mean") for p in PROPS),
    "sum_abs_corr_mean",
    "images_per_sec",
    "measure_seconds",
    "measured_chunks",
    "measured_images",
    "reused_chunks",
    "pass_rate_ci_lo",
    "pass_rate_ci_hi",
    *(f"{p}_abs_corr_ci_{end}" for p in PROPS for end in ("lo", "hi")),
    # runs that measured identity (pipeline.judge.identity_metrics)
    "identity_threshold",
    "r_passed",
    "r_passed_same_person",
    "r_passed_other_person",
    "r_passed_identity_unknown",
    "identity_measured",
    "identity_faces_per_sec",
]


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


def _float(value: Any) -> float:
    """A metric's value as a number; NaN where it is missing or not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def images_measured(row: Mapping[str, Any]) -> int:
    """How many images one point generated and scored itself (its ``measured_images``
    metric; 0 for a point that measured nothing: re-used chunks, a re-judge)."""
    v = _float(row.get("measured_images"))
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
    v = _float(value)
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
    identity = "r_passed" in table and table["r_passed"].notna().any()
    same = ["clear r", "same person of those (<= threshold)"] if identity else []
    head = [*keys, "passed", f"pass rate{ci}", *(f"mean abs r {p}{ci}" for p in PROPS), *same]
    head.append("status")
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
        if identity:
            t = _fmt(r.get("identity_threshold"), "g")
            cells += [
                _fmt(r.get("r_passed"), ".0f"),
                f"{_fmt(r.get('r_passed_same_person'), '.0f')} (<= {t})",
            ]
        rows.append("| " + " | ".join([*cells, str(r["status"])]) + " |")
    return "\n".join(rows)


BEST_OF = ("passed", "pass_rate")
"""The figures a sweep's parent run shows in the runs table: the best of its finished points."""


def best_figures(table: pd.DataFrame) -> dict[str, float]:
    """``BEST_OF``'s largest value over the finished points (none where no point finished)."""
    done = table[table["status"] == "FINISHED"] if len(table) else table
    best = {}
    for m in BEST_OF:
        values = pd.to_numeric(done[m], errors="coerce").dropna() if m in done else ()
        if len(values):
            best[m] = float(values.max())
    return best


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
    and the pass rate of each property and of all three (a ``Figure`` of its own: the
    process's backend and pyplot are left alone)."""
    from matplotlib.figure import Figure

    keys = swept_keys(table)
    numeric = len(keys) == 1 and pd.api.types.is_numeric_dtype(table[keys[0]])
    x = table[keys[0]] if numeric else table["job"]
    label = keys[0] if numeric else "job (" + ", ".join(keys) + ")"
    order = x.argsort()
    xs = x.iloc[order]
    fig = Figure(figsize=(10, 3.8))
    left, right = fig.subplots(1, 2)
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
