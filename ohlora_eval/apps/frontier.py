"""``python -m ohlora_eval.frontier run_id=<finished run> want=20``: the cutoff frontier.

How strict can the cutoffs be and still leave K vectors, and K that re-pass reliably? Over a
grid of cutoff triples (``grid.eyes=[0.80,0.98,0.01]``, ...), from what the run stored
(``per_vector.csv``'s r) and, where it has a re-test (its tag ``ohlora.retest``, or
``retest=<id>``), the r of each of the re-test's repetitions (its child runs'
``per_vector.csv``): nothing is measured. The computation is ``review/frontier.py``
(definitions there: re-passing the re-test's cutoffs, as its ``re_pass_prob``, and
re-passing the triple itself, judged again from the repetitions' r; vectors not re-tested
left out of both and counted; "strictest" as the largest sum of the three cutoffs).

Prints the answer and logs, into the run itself under ``frontier/``: ``frontier.csv`` (one
row per cutoff triple), ``frontier.png`` and ``frontier.md`` (the printed answer), with
``frontier.yaml`` (grid, want, re-test). Into the run, not a new one: the frontier is a
view of that run's numbers, like ``sheets`` (which logs under ``sheets/requested/``), and
it is found where the run is; a new run would add a row without ``per_vector.csv`` that
every listing and comparison would have to skip. Running it again replaces the files.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from ohlora_eval.apps.cli import hydra_app
from ohlora_eval.errors import ConfigError, UserError, int_in, number_in
from ohlora_eval.pipeline.judge import CORR_COLUMNS, NO_FACE
from ohlora_eval.progress import STDOUT
from ohlora_eval.review import frontier as fr
from ohlora_eval.review import frontier_plot
from ohlora_eval.tracking import store
from ohlora_eval.tracking.read_back import RunView
from ohlora_eval.tracking.runs import note_run

log = logging.getLogger(__name__)

FOLDER = "frontier"  # where in the run the files go
MAX_STEPS = 101  # cutoffs per property: 101^3 triples at most


@dataclass
class FrontierResult:
    """What ``frontier`` found (kept for callers and tests)."""

    run_id: str
    retest_run_id: str | None
    frontier: fr.Frontier
    table: pd.DataFrame  # frontier.csv
    own: dict[str, float] | None  # the run's own cutoffs and their figures
    answers: dict[str, tuple | None]  # label -> grid index of the answer (None: no triple)
    grid_seconds: float  # the pure computation: every triple, the table, the answers
    text: str  # what was printed (frontier.md)
    notes: list[str] = field(default_factory=list)


@hydra_app("frontier")
def main(cfg: DictConfig) -> None:
    frontier(cfg)


def frontier(cfg: DictConfig) -> FrontierResult:
    """The frontier of run ``cfg.run_id`` over ``cfg.grid``; printed, and logged into the run."""
    want = int_in("want", cfg.want, 1)
    reliable_at = number_in("reliable", cfg.reliable, 0, 1, low_open=True)
    grids = _grids(cfg.get("grid"))
    if not isinstance(cfg.log, bool):
        raise ConfigError(f"log={cfg.log!r} must be true or false")
    if OmegaConf.is_missing(cfg, "run_id") or not cfg.run_id:
        raise UserError("run_id=<id> is required: the finished run whose stored r are read")
    run_id = str(cfg.run_id)
    uri, _ = store.setup(cfg.tracking.experiment, cfg.tracking.uri, cfg.tracking.root)
    client = MlflowClient(uri)
    run = RunView.open(client, run_id, why="the frontier reads a finished run's correlations")
    if run.kind == "retest":
        source = run.tags.get("retest.source_run_id", "?")
        raise UserError(
            f"run_id={run_id} is a re-test; give the run it re-tested (run_id={source}):"
            " its re-test is found from it"
        )
    table = run.per_vector
    abs_r, valid = _abs_r(table), _valid(table)
    own_cut = run.cutoffs.core() if run.cutoffs else None

    notes: list[str] = []
    identity = _identity(cfg.get("identity_cutoff", "run"), run, table)
    if identity is not None:
        unknown = int(np.isnan(identity.worst).sum())
        notes.append(
            f"identity: every triple also needs identity_max <= {identity.limit:g}; {unknown:,}"
            " of the run's vectors have no stored distance (outside its identity.scope, or"
            " faces not aligned): never counted as passing, and where a triple's r cutoffs"
            " pass them they are counted in identity_unknown"
        )
    retest_id = _retest_id(run, str(cfg.retest))
    reps = _repetitions(client, retest_id, table, notes) if retest_id else None

    t0 = time.perf_counter()
    front = fr.frontier(abs_r, grids, valid, reps, reliable_at, identity)
    out_table = front.table()
    asked = _questions(front, want)
    answers = {
        label: (fr.most_expected(front) if count is None else fr.strictest(front, want, count))
        for label, count in asked.items()
    }
    grid_seconds = time.perf_counter() - t0

    own = fr.judge_at(abs_r, own_cut, valid, reps, reliable_at, identity) if own_cut else None
    if own is not None and "passed" in table.columns:
        recorded = int((table["passed"].astype(str) == "O").sum())
        if recorded != own["passed"]:
            notes.append(
                f"note: the run's table marks {recorded} passed; its r at its own cutoffs"
                f" pass {own['passed']}"
            )
    result = FrontierResult(
        run_id, retest_id, front, out_table, own, answers, grid_seconds, "", notes
    )
    result.text = text = _report(run, result, asked, want)
    log.info(text, extra=STDOUT)
    if cfg.log:
        _log(client, run_id, result, cfg)
        note_run(run_id)
        log.info(
            f"  logged into run {run_id}: {FOLDER}/frontier.csv ({len(out_table):,} rows),"
            f" {FOLDER}/frontier.png, {FOLDER}/frontier.md, {FOLDER}/frontier.yaml",
            extra=STDOUT,
        )
    return result


def _grids(node: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``grid.<property>``: [lowest, highest, step] (or one number: that cutoff alone)."""
    node = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    node = node or {}
    if not isinstance(node, dict):
        raise ConfigError(
            f"grid={node!r} must give eyes, mouth and pose, e.g. grid.eyes=[0.8,0.98,0.01]"
        )
    unknown = sorted(set(node) - set(fr.PROPERTIES))
    if unknown:
        raise ConfigError(f"grid.{unknown[0]} is not a property; grid has eyes, mouth and pose")
    out = []
    for p in fr.PROPERTIES:
        key, spec = f"grid.{p}", node.get(p)
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = [spec, spec, 1]
        if not isinstance(spec, (list, tuple)) or len(spec) != 3:
            raise ConfigError(
                f"{key}={spec!r} must be [lowest, highest, step], e.g. {key}=[0.80,0.98,0.01]"
            )
        lo = number_in(f"{key}[0]", spec[0], 0, 1)
        hi = number_in(f"{key}[1]", spec[1], 0, 1)
        step = number_in(f"{key}[2]", spec[2], 0, 1, low_open=True)
        if hi < lo:
            raise ConfigError(
                f"{key}={list(spec)}: the highest cutoff {hi:g} is below the lowest {lo:g}"
            )
        count = fr.grid_length(lo, hi, step)
        if count > MAX_STEPS:
            raise ConfigError(
                f"{key}={list(spec)} gives {count} cutoffs; at most {MAX_STEPS} per property"
            )
        out.append(fr.cutoff_grid(lo, hi, step))
    return tuple(out)  # type: ignore[return-value]


def _abs_r(table: pd.DataFrame) -> np.ndarray:
    """(n, 3) |r| of a ``per_vector`` table's vectors."""
    return table[CORR_COLUMNS].abs().to_numpy(dtype=np.float64)


def _valid(table: pd.DataFrame) -> np.ndarray | None:
    """False for vectors that fail whatever the cutoffs (images without a face)."""
    if NO_FACE not in table.columns:
        return None
    return table[NO_FACE].fillna(0).to_numpy(dtype=np.float64) == 0


def _identity(choice: Any, run: RunView, table: pd.DataFrame) -> fr.IdentityFilter | None:
    """``identity_cutoff``: ``run`` (the run's own ``cutoff.identity``, off where it had none),
    a largest allowed distance, or null (off)."""
    if choice is None or (isinstance(choice, str) and choice.lower() in ("null", "none")):
        return None
    if isinstance(choice, str):
        if choice != "run":
            raise ConfigError(
                f"identity_cutoff={choice!r} must be run (the run's own cutoff.identity), a"
                " largest allowed distance (e.g. identity_cutoff=0.6) or null"
            )
        if run.cutoffs is None or run.cutoffs.identity is None:
            return None
        limit = run.cutoffs.identity
    else:
        limit = number_in("identity_cutoff", choice, 0, 10, low_open=True, hint="e.g. 0.6")
    if "identity_max" not in table.columns:
        raise UserError(
            f"identity_cutoff={limit:g}: run {run.run_id} has no identity distances (it"
            " measured no identity: screen with identity=dlib_resnet), so no triple can be"
            " judged by it"
        )
    worst = pd.to_numeric(table["identity_max"], errors="coerce").to_numpy(dtype=np.float64)
    return fr.IdentityFilter(worst, limit)


def _retest_id(run: RunView, choice: str) -> str | None:
    """The re-test to use: the run's latest (tag ``ohlora.retest``), none, or one by id."""
    if choice.lower() in ("none", "null", "false", ""):
        return None
    if choice == "latest":
        return run.retest_run_id
    if RunView.open(run.client, choice, "retest").kind != "retest":
        raise UserError(f"retest={choice} is not a re-test run (python -m ohlora_eval.retest)")
    return choice


def _repetitions(
    client: MlflowClient, retest_id: str, table: pd.DataFrame, notes: list[str]
) -> fr.Repetitions:
    """The re-test's vectors (its ``retest.csv``) and each repetition's r (its child runs'
    ``per_vector.csv``), as rows of the run's table."""
    parent = RunView.open(client, retest_id, "retest")
    try:
        summary = parent.csv("retest.csv")
    except Exception:
        raise UserError(f"re-test {retest_id} has no retest.csv") from None
    k = int(summary["k"].iloc[0]) if len(summary) else 0
    found = store.retry(
        client.search_runs,
        [parent.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{retest_id}'",
    )
    children = [
        RunView(client, c)
        for c in found
        if c.info.status == "FINISHED" and "retest.repetition" in c.data.tags
    ]
    if len(children) != k:
        raise UserError(
            f"re-test {retest_id}: {len(children)} finished repetitions found, its"
            f" retest.csv says k={k}; the frontier needs each repetition's r"
        )
    cases = summary["case"].astype(int).to_numpy()
    abs_r = np.empty((len(cases), k, 3))
    valid = np.ones((len(cases), k), dtype=bool)
    children.sort(key=lambda c: int(c.tags["retest.repetition"]))
    for j, child in enumerate(children):
        try:
            got = child.per_vector.set_index("case").loc[cases]
        except KeyError:
            raise UserError(
                f"re-test {retest_id}: repetition {j + 1} lacks some of its cases"
            ) from None
        abs_r[:, j, :] = _abs_r(got)
        if (no_face := _valid(got)) is not None:
            valid[:, j] = no_face
    rows = pd.Index(table["case"].astype(int)).get_indexer(cases)
    if (rows < 0).any():
        missing = [int(c) for c in cases[rows < 0]]
        raise UserError(
            f"re-test {retest_id} re-measured cases {missing[:5]} that run's table does not have"
        )
    # the cutoffs the re-test judged at: its repetitions' (its source run's)
    if not children or children[0].cutoffs is None:
        raise UserError(f"re-test {retest_id}: its repetitions recorded no cutoffs")
    cut = children[0].cutoffs.core()
    reps = fr.Repetitions(rows, abs_r, cut, valid)
    # The repetitions' r, judged at those cutoffs, must give back the re-test's own
    # re-pass counts (a check that they were read right).
    if not np.array_equal(reps.passes(), summary["re_passes"].to_numpy()):
        notes.append(
            f"note: re-test {retest_id}: its repetitions' r do not give back its retest.csv"
            " re-pass counts at its cutoffs"
        )
    return reps


def _questions(front: fr.Frontier, want: int) -> dict[str, str | None]:
    """What is answered: label -> the count that must reach ``want`` (None: the most
    expected to re-pass)."""
    asked: dict[str, str | None] = {f"strictest cutoffs leaving >= {want} vectors": "passed"}
    if front.has_retest:
        at, cut = f"{front.reliable_at:g}", _cut_text(front.retest_cutoffs)
        leaving = f"strictest cutoffs leaving >= {want} that re-pass"
        asked[f"{leaving} {cut} with p >= {at}"] = "reliable"
        asked[f"{leaving} those cutoffs with p >= {at}"] = "reliable_here"
        asked[
            "most expected to re-pass (among cutoffs whose passing vectors were all re-tested)"
        ] = None
    return asked


def _cut_text(row: dict[str, float]) -> str:
    return ", ".join(f"{p} {row[p]:.2f}" for p in fr.PROPERTIES)


def _figures(row: dict[str, float], front: fr.Frontier) -> str:
    text = f"{int(row['passed']):,} pass"
    if row.get("identity_unknown"):
        text += f" (+{int(row['identity_unknown'])} with no identity distance, not counted)"
    if front.has_retest:
        tested = int(row["passed"]) - int(row["not_retested"])
        at = f"{front.reliable_at:g}"
        text += (
            f"; of the {tested} re-tested: {row['expected_re_pass']:.2f} expected to re-pass"
            f" ({int(row['reliable'])} with p >= {at}), at these cutoffs"
            f" {row['expected_here']:.2f} ({int(row['reliable_here'])})"
        )
        if row["not_retested"]:
            text += f"; {int(row['not_retested'])} not re-tested (no probability known, left out)"
    return text


def _report(run: RunView, result: FrontierResult, asked: dict[str, str | None], want: int) -> str:
    """What the command prints (and logs as frontier.md) of ``result``."""
    front, seconds, own = result.frontier, result.grid_seconds, result.own
    answers, retest_id, notes = result.answers, result.retest_run_id, result.notes
    spans = " x ".join(
        f"{p} {g[0]:.2f}..{g[-1]:.2f}" + (f" step {g[1] - g[0]:.2f}" if len(g) > 1 else "")
        for p, g in zip(fr.PROPERTIES, front.grids)
    )
    name = run.name or run.run_id
    lines = [
        f"ohlora_eval.frontier: run {run.run_id} ({name}), {front.n_vectors:,} vectors",
        f"  grid: {spans} = {front.passed.size:,} cutoff triples; computed in {seconds:.3f} s"
        " (every triple, the table and the answers; reading the run not included)",
    ]
    if retest_id:
        lines.append(
            f"  re-test {retest_id}: {front.retested} vectors x k={front.k} repetitions at"
            f" {_cut_text(front.retest_cutoffs)}; a vector's re-pass probability p is the"
            " share of its repetitions that pass those cutoffs (expected to re-pass: the sum"
            ' of p over the vectors a triple passes) or, "at these cutoffs", the triple'
            " itself (judged again from the repetitions' r)"
        )
    else:
        lines.append(
            "  no re-test of this run (python -m ohlora_eval.retest run_id=...): counts only"
        )
    if own is not None:
        lines.append(f"  the run's own cutoffs ({_cut_text(own)}): {_figures(own, front)}")
    for label, index in answers.items():
        if index is None:
            lines.append(f"  {label}: {_none_text(asked[label], front, want)}")
            continue
        row = front.at(index)
        lines.append(
            f"  {label}: {_cut_text(row)} (sum {row['strictness']:.2f}): {_figures(row, front)}"
        )
    lines.append("  (strictest = the largest sum of the three cutoffs)")
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines)


def _none_text(count: str | None, front: fr.Frontier, want: int) -> str:
    if count is None:
        return "no triple whose passing vectors were all re-tested"
    counts = getattr(front, count)
    most = int(counts.max()) if counts.size else 0
    return f"no triple on the grid leaves {want}; the most any leaves is {most}"


def _log(client: MlflowClient, run_id: str, result: FrontierResult, cfg: DictConfig) -> None:
    grids = result.frontier.grids
    settings = {
        "run_id": run_id,
        "identity": result.frontier.identity_limit,
        "retest_run_id": result.retest_run_id,
        "want": int(cfg.want),
        "reliable": float(cfg.reliable),
        "grid": {p: [float(g[0]), float(g[-1]), len(g)] for p, g in zip(fr.PROPERTIES, grids)},
        "grid_seconds": round(result.grid_seconds, 6),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        result.table.to_csv(out / "frontier.csv", index=False, float_format="%.10g")
        title = f"cutoff frontier of run {run_id[:12]}" + (
            f", re-test {result.retest_run_id[:12]}" if result.retest_run_id else ""
        )
        frontier_plot.plot(
            result.frontier, out / "frontier.png", result.own, result.answers, title, int(cfg.want)
        )
        (out / "frontier.md").write_text(result.text + "\n")
        (out / "frontier.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(settings)))
        store.log_whole(client, run_id, out, FOLDER)


if __name__ == "__main__":
    main()
