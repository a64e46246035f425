"""Two runs' verdicts side by side: tables in, a ``Comparison`` and its markdown report out.

Pure pandas and numpy (no MLflow): ``tracking/compare_runs.py`` reads the runs and calls
``compare_tables``; ``python -m ohlora_eval.compare`` prints ``Comparison.markdown()``.

The pass-rate difference (b - a) gets Newcombe's hybrid score interval, made from the two
runs' Wilson intervals (``pipeline.judge.wilson_interval``). When both runs judged the same
vectors the two rates are paired, and the interval takes the correlation of the two verdicts
into account (Newcombe 1998, "Improved confidence intervals for the difference between
binomial proportions based on paired data", Stat Med 17:2635, method 10, with the plain phi
of the 2 x 2 table). With phi = 0 it is the independent-samples method 10 (Newcombe 1998,
Stat Med 17:873), which is what a forced comparison of different vectors uses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ohlora_eval.pipeline.judge import CORR_COLUMNS, wilson_interval
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

LIST_MAX = 20
"""Entered/left vectors listed in the report up to this many; more go to a CSV."""

CANDIDATE_PARAMS = ("sampling.seed", "sampling.n_vectors")
"""Params that decide a screening's vectors, compared when no digest of them is known."""


@dataclass(frozen=True)
class RateDifference:
    """p_b - p_a with its interval; ``phi`` the verdicts' correlation used (0: independent)."""

    difference: float
    lo: float
    hi: float
    phi: float
    paired: bool
    level: float = 0.95


def newcombe_difference(
    passed_a: int,
    n_a: int,
    passed_b: int,
    n_b: int,
    *,
    both: int | None = None,
    level: float = 0.95,
) -> RateDifference:
    """Interval of ``passed_b / n_b - passed_a / n_a`` (Newcombe's hybrid score method).

    ``both`` (the vectors that passed in both runs) makes it the paired interval: the same
    ``n`` vectors judged twice; None treats the two runs as independent samples."""
    if n_a <= 0 or n_b <= 0:
        raise ValueError("both runs need at least one vector to compare pass rates")
    pa, pb = passed_a / n_a, passed_b / n_b
    la, ua = (float(x) for x in wilson_interval(float(passed_a), n_a, level))
    lb, ub = (float(x) for x in wilson_interval(float(passed_b), n_b, level))
    phi = 0.0
    if both is not None:
        if n_a != n_b:
            raise ValueError("a paired interval needs the same vectors in both runs")
        n = n_a
        only_a, only_b = passed_a - both, passed_b - both
        neither = n - both - only_a - only_b
        if min(both, only_a, only_b, neither) < 0:
            raise ValueError(f"inconsistent counts: {passed_a}, {passed_b}, both {both} of {n}")
        margins = float(passed_a) * (n - passed_a) * passed_b * (n - passed_b)
        if margins > 0:
            phi = (both * neither - only_a * only_b) / math.sqrt(margins)
    d = pb - pa
    # b's lower side against a's upper side, and the other way round.
    below = (pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2
    above = (ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2
    lo = max(-1.0, d - math.sqrt(max(below, 0.0)))
    hi = min(1.0, d + math.sqrt(max(above, 0.0)))
    return RateDifference(d, lo, hi, phi, both is not None, level)


@dataclass(frozen=True)
class Candidates:
    """What says which vectors a run judged: a digest of its latents (None: not known), its
    case numbers and the params that decide sampled vectors."""

    digest: str | None
    cases: frozenset[int]
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CandidateCheck:
    same: bool
    how: str  # one sentence: what was compared and what was found


def check_candidates(a: Candidates, b: Candidates) -> CandidateCheck:
    """The same candidate vectors? By the latents' digest where both runs have one, else by
    the case numbers plus ``CANDIDATE_PARAMS`` (those both runs have)."""
    compared = [k for k in CANDIDATE_PARAMS if k in a.params and k in b.params]
    differ = [f"{k} {a.params[k]} vs {b.params[k]}" for k in compared if a.params[k] != b.params[k]]
    if a.digest and b.digest:
        if a.digest == b.digest:
            return CandidateCheck(True, f"same latents (digest {a.digest[:12]})")
        note = f"; {', '.join(differ)}" if differ else ""
        return CandidateCheck(
            False, f"their latents differ (digest {a.digest[:12]} in a, {b.digest[:12]} in b){note}"
        )
    missing = " and ".join(s for s, c in (("a", a), ("b", b)) if not c.digest)
    basis = f"no latents digest for {missing}, so by case numbers and sampling params"
    shared = len(a.cases & b.cases)
    if a.cases != b.cases:
        return CandidateCheck(
            False,
            f"their case numbers differ ({len(a.cases):,} in a, {len(b.cases):,} in b,"
            f" {shared:,} shared; {basis})",
        )
    if differ:
        return CandidateCheck(False, f"{'; '.join(differ)} ({basis})")
    on = f" and {', '.join(compared)}" if compared else ""
    return CandidateCheck(True, f"same {len(a.cases):,} case numbers{on} ({basis})")


def differing_params(a: Mapping[str, str], b: Mapping[str, str]) -> pd.DataFrame:
    """The params whose values differ (missing on one side counts), sorted: param, a, b
    (text; None where a run lacks the param)."""
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return pd.DataFrame(
        {"param": keys, "a": [a.get(k) for k in keys], "b": [b.get(k) for k in keys]},
        columns=["param", "a", "b"],
        dtype=object,
    )


@dataclass(frozen=True)
class RunSide:
    """One run of a comparison, as the report names it."""

    run_id: str
    name: str
    kind: str
    n_cases: int  # rows of its per_vector.csv
    directions_run_id: str | None = None
    directions_digest: str | None = None
    candidates_digest: str | None = None


CHANGE_COLUMNS = [
    "case",
    "change",
    *[f"{c}_{s}" for c in CORR_COLUMNS for s in ("a", "b")],
    "identity_max_a",
    "identity_max_b",
    "fail_reason_a",
    "fail_reason_b",
]
"""``identity_max``: the largest identity distance of the vector's edits (empty where its run
measured none): a change made by an identity cutoff shows it."""


@dataclass(frozen=True)
class Comparison:
    """What ``python -m ohlora_eval.compare`` reports, as data (``ohlora_eval.compare``)."""

    a: RunSide
    b: RunSide
    candidates: CandidateCheck
    forced: bool
    compared: int  # the cases both runs have, the ones compared
    passed_a: int
    passed_b: int
    rate: RateDifference
    mean_abs_r: pd.DataFrame  # index: property; columns a, b, diff (b - a)
    changes: pd.DataFrame  # CHANGE_COLUMNS, one row per vector that entered or left
    settings: pd.DataFrame  # the differing params: param, a, b
    list_max: int = LIST_MAX
    identity: tuple[float, float] | None = None  # mean identity_max of each run's passed

    @property
    def rate_a(self) -> float:
        return self.passed_a / self.compared

    @property
    def rate_b(self) -> float:
        return self.passed_b / self.compared

    @property
    def entered(self) -> list[int]:
        """Cases that pass in b and did not in a."""
        return self.changes.loc[self.changes["change"] == "entered", "case"].tolist()

    @property
    def left(self) -> list[int]:
        """Cases that passed in a and do not in b."""
        return self.changes.loc[self.changes["change"] == "left", "case"].tolist()

    @property
    def listed(self) -> bool:
        """Whether the report lists the changes (else: counts and a CSV)."""
        return len(self.changes) <= self.list_max

    def markdown(self, changes_csv: str | None = None) -> str:
        """The report; ``changes_csv`` names where the changes are when too many to list."""
        return _markdown(self, changes_csv)


def passed_bool(table: pd.DataFrame) -> pd.Series:
    """``passed`` as booleans: Oh-LoRA's "O"/"X" or booleans already."""
    col = table["passed"]
    if col.dtype == bool:
        return col
    text = col.astype(str)
    odd = sorted(set(text) - {"O", "X"})
    if odd:
        raise ValueError(f"'passed' holds {odd[:5]}; only 'O' and 'X' are known")
    return text == "O"


def compare_tables(
    a: RunSide,
    b: RunSide,
    tables: tuple[pd.DataFrame, pd.DataFrame],
    candidates: CandidateCheck,
    settings: pd.DataFrame,
    *,
    forced: bool = False,
    list_max: int = LIST_MAX,
) -> Comparison:
    """Compare the two runs' ``per_vector`` tables over the cases both have (``case``,
    ``passed`` O/X or bool, ``*_corr``, optionally ``fail_reason``): ``tables`` (a's, b's)."""
    left_t, right_t = _prepared(tables[0]), _prepared(tables[1])
    joined = left_t.join(right_t, how="inner", lsuffix="_a", rsuffix="_b").sort_index()
    if joined.empty:
        raise ValueError("the two runs share no case number: nothing to compare")
    ok_a, ok_b = joined["passed_a"].to_numpy(bool), joined["passed_b"].to_numpy(bool)
    n, passed_a, passed_b = len(joined), int(ok_a.sum()), int(ok_b.sum())
    both = int((ok_a & ok_b).sum()) if candidates.same else None
    rate = newcombe_difference(passed_a, n, passed_b, n, both=both)
    mean_abs = pd.DataFrame(
        {s: [joined[f"{c}_{s}"].abs().mean() for c in CORR_COLUMNS] for s in ("a", "b")},
        index=pd.Index(list(CORE_PROPERTIES), name="property"),
    )
    mean_abs["diff"] = mean_abs["b"] - mean_abs["a"]
    change = np.where(ok_b & ~ok_a, "entered", np.where(ok_a & ~ok_b, "left", ""))
    moved = joined.assign(change=change)[change != ""].reset_index()
    changes = moved.reindex(columns=CHANGE_COLUMNS)
    changes = changes.sort_values(["change", "case"], kind="stable").reset_index(drop=True)
    identity = None
    if joined[["identity_max_a", "identity_max_b"]].notna().any().any():
        identity = (
            float(joined.loc[ok_a, "identity_max_a"].mean()),
            float(joined.loc[ok_b, "identity_max_b"].mean()),
        )
    return Comparison(
        a=a,
        b=b,
        candidates=candidates,
        forced=forced,
        compared=n,
        passed_a=passed_a,
        passed_b=passed_b,
        rate=rate,
        mean_abs_r=mean_abs,
        changes=changes,
        settings=settings,
        list_max=list_max,
        identity=identity,
    )


def _prepared(table: pd.DataFrame) -> pd.DataFrame:
    """One run's table for the join: indexed by case; passed (bool), the r, identity_max
    (NaN where not measured) and fail_reason ("" where none)."""
    missing = [c for c in ("case", "passed", *CORR_COLUMNS) if c not in table.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {missing}")
    cases = table["case"].astype("int64")
    dupes = sorted(set(cases[cases.duplicated()]))
    if dupes:
        raise ValueError(f"case(s) {dupes[:5]} appear more than once")
    worst = table.get("identity_max", pd.Series(np.nan, table.index))
    out = pd.DataFrame({"passed": passed_bool(table)})
    out[CORR_COLUMNS] = table[CORR_COLUMNS].apply(pd.to_numeric, errors="coerce").astype(np.float64)
    out["identity_max"] = pd.to_numeric(worst, errors="coerce").astype(np.float64)
    out["fail_reason"] = table.get("fail_reason", pd.Series("", table.index)).fillna("").astype(str)
    return out.set_axis(pd.Index(cases.to_numpy(), name="case"))


# --- the report ------------------------------------------------------------------------


def _md(text: object) -> str:
    """A table cell: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _points(x: float) -> str:
    return f"{100 * x:+.2f}"


def _dist(x: float, fmt: str = "{:.4f}") -> str:
    """A number, empty where it is NaN (not measured)."""
    return "" if x != x else fmt.format(x)


SIGNED = "{:+.4f}"  # an r, a difference


def _run_cell(side: RunSide) -> str:
    return f"`{side.run_id}` {_md(side.name)}"


def _markdown(c: Comparison, changes_csv: str | None) -> str:
    a, b = c.a, c.b
    lines = [
        f"# Compare run a {a.run_id} with run b {b.run_id}",
        "",
        "| | a | b |",
        "| --- | --- | --- |",
        f"| run | {_run_cell(a)} | {_run_cell(b)} |",
        f"| kind | {_md(a.kind)} | {_md(b.kind)} |",
        f"| vectors in per_vector.csv | {a.n_cases:,} | {b.n_cases:,} |",
        f"| directions run | {_md(a.directions_run_id or 'unknown')}"
        f" | {_md(b.directions_run_id or 'unknown')} |",
    ]
    if a.directions_digest or b.directions_digest:
        lines.append(
            f"| directions digest | {(a.directions_digest or 'unknown')[:12]}"
            f" | {(b.directions_digest or 'unknown')[:12]} |"
        )
    same_dirs = a.directions_run_id and a.directions_run_id == b.directions_run_id
    lines += ["", f"Directions: {'the same run' if same_dirs else 'differ or unknown'}."]
    if c.forced and not c.candidates.same:
        lines.append(
            f"Candidates: NOT the same: {c.candidates.how}. force=true: compared the"
            f" {c.compared:,} case numbers both runs have, as independent samples."
        )
    else:
        extra = "" if c.compared == max(a.n_cases, b.n_cases) else " (the cases both have)"
        lines.append(f"Candidates: {c.candidates.how}; compared {c.compared:,} vectors{extra}.")
    lines += ["", "## Settings that differ", ""]
    if c.settings.empty:
        lines.append("None: the two runs have the same params.")
    else:
        lines += ["| param | a | b |", "| --- | --- | --- |"]
        for param, *values in c.settings.itertuples(index=False):
            va, vb = ("–" if v is None else _md(v) for v in values)
            lines.append(f"| {_md(param)} | {va} | {vb} |")
    rate = c.rate
    how = (
        f"paired: the same vectors, phi {rate.phi:.3f}"
        if rate.paired
        else "independent samples, phi 0"
    )
    lines += [
        "",
        "## Verdicts",
        "",
        "| | a | b | b - a |",
        "| --- | --- | --- | --- |",
        f"| passed | {c.passed_a:,} of {c.compared:,} | {c.passed_b:,} of {c.compared:,}"
        f" | {c.passed_b - c.passed_a:+,} |",
        f"| pass rate | {_pct(c.rate_a)} | {_pct(c.rate_b)} | {_points(rate.difference)}"
        f" points, {round(100 * rate.level)} % CI [{_points(rate.lo)}, {_points(rate.hi)}] |",
    ]
    for p, row in c.mean_abs_r.iterrows():
        lines.append(f"| mean \\|r\\| {p} | {row.a:.4f} | {row.b:.4f} | {row['diff']:+.4f} |")
    if c.identity is not None:
        ia, ib = c.identity
        lines.append(
            f"| passed, mean identity distance | {_dist(ia)} | {_dist(ib)} |"
            f" {_dist(ib - ia, SIGNED)} |"
        )
    lines += [
        "",
        "The interval is Newcombe's hybrid score interval from the two Wilson intervals"
        f" ({how}). "
        + (
            "It excludes 0: more than noise."
            if rate.lo > 0 or rate.hi < 0
            else "It includes 0: the difference may be noise."
        ),
    ]
    entered, left = c.entered, c.left
    lines += ["", f"## Changes: {len(entered):,} entered the passed set, {len(left):,} left it"]
    if c.changes.empty:
        lines += ["", "None: the same vectors pass in both runs."]
    elif c.listed:
        ident = c.identity is not None
        head = " | ".join(f"{p} r a | {p} r b" for p in CORE_PROPERTIES)
        head += " | identity a | identity b" if ident else ""
        lines += [
            "",
            f"| case | change | {head} | why it fails |",
            "| --- | --- |" + " --- |" * (2 * len(CORE_PROPERTIES) + 2 * ident) + " --- |",
        ]
        for row in c.changes.itertuples(index=False):
            r = row._asdict()
            rs = " | ".join(
                f"{_dist(r[f'{p}_corr_a'], SIGNED)} | {_dist(r[f'{p}_corr_b'], SIGNED)}"
                for p in CORE_PROPERTIES
            )
            if ident:
                rs += f" | {_dist(r['identity_max_a'])} | {_dist(r['identity_max_b'])}"
            side = "a" if row.change == "entered" else "b"  # the run it fails in
            lines.append(
                f"| {row.case} | {row.change} | {rs} | {side}: {_md(r[f'fail_reason_{side}'])} |"
            )
    else:
        where = f" `{changes_csv}`" if changes_csv else " the changes CSV"
        lines += [
            "",
            f"More than {c.list_max} changes: each vector with its r in both runs is in{where}.",
        ]
    return "\n".join(lines) + "\n"
