"""The cutoff frontier's picture (``frontier.png``): every triple as a point, the front as a
line, the run's own cutoffs and the answers marked. Drawn on a ``matplotlib.figure.Figure``
of its own: the process's backend and pyplot are left alone."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from ohlora_eval.review.frontier import PROPERTIES, Frontier


def plot(
    fr: Frontier,
    path: Path,
    own: Mapping[str, float] | None,
    marks: Mapping[str, tuple[int, int, int] | None],
    title: str = "",
    want: int | None = None,
) -> None:
    """``path`` (``frontier.png``): with a re-test, passed vs expected re-passing (triples
    where a passing vector was not re-tested drawn hollow); without, passed vs the cutoffs'
    sum. ``own``: the run's own cutoffs and figures (``judge_at``); ``marks``: answers by
    label (None: no such triple); ``want``: a vertical line at that many vectors."""
    table = fr.table()
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    x = table["passed"].to_numpy()
    retest = fr.retest_cutoffs  # with a re-test (its readings are in the table)
    y_of = "strictness" if retest is None else "expected_re_pass"
    y = table[y_of].to_numpy()
    if retest is not None:
        known = table["not_retested"].to_numpy() == 0
        ax.scatter(x[known], y[known], s=6, color="#8da0cb", alpha=0.5, label="cutoff triples")
        ax.scatter(
            x[~known],
            y[~known],
            s=6,
            facecolors="none",
            edgecolors="#c7c7c7",
            alpha=0.5,
            label="... a passing vector not re-tested (its probability left out)",
        )
        top = max(1.0, float(y.max()) * 1.1)  # the diagonal within the points' height
        ax.plot([0, top], [0, top], ":", color="grey", lw=1, label="every passing vector re-passes")
        cut = ", ".join(f"{p} {float(retest[p]):g}" for p in PROPERTIES)
        ylabel = f"expected number that re-pass {cut}\n(the re-test's {fr.k} repetitions)"
    else:
        ax.scatter(x, y, s=6, color="#8da0cb", alpha=0.5, label="cutoff triples")
        ylabel = "strictness: sum of the three cutoffs"
    front = table["pareto"].to_numpy()
    order = np.argsort(x[front], kind="stable")
    ax.plot(
        x[front][order], y[front][order], "-o", ms=3, color="#d62728", lw=1.2, label="Pareto front"
    )
    if own is not None:  # a run that recorded its cutoffs
        own_y = own[y_of] if retest is not None else sum(float(own[p]) for p in PROPERTIES)
        cut = ", ".join(f"{p} {float(own[p]):g}" for p in PROPERTIES)
        ax.scatter(
            [own["passed"]],
            [own_y],
            marker="*",
            s=220,
            color="black",
            zorder=5,
            label=f"the run's own cutoffs ({cut})",
        )
    symbols = iter(["s", "D", "^", "v"])
    for label, index in marks.items():
        if index is None:
            continue
        row = fr.at(index)
        where = ", ".join(f"{p} {row[p]:g}" for p in PROPERTIES)
        ax.scatter(
            [row["passed"]],
            [row[y_of]],
            marker=next(symbols, "o"),
            s=90,
            facecolors="none",
            edgecolors="#2ca02c",
            linewidths=2,
            zorder=6,
            label=f"{label} ({where})",
        )
    if want is not None:
        ax.axvline(want, color="#2ca02c", ls="--", lw=0.8, label=f"want = {want} vectors")
    ax.set_xlabel("vectors passing (count)")
    ax.set_ylabel(ylabel)
    if x.max() > 100:  # thousands at loose cutoffs, tens at strict ones: a log scale past 10
        ax.set_xscale("symlog", linthresh=10)
        ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlim(left=-0.5)
    ax.set_title(title or "cutoff frontier", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.1), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")  # the legend below the axes too
