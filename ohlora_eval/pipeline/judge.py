"""Correlations, judging and summary statistics: pure numpy/pandas, no side effects."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ohlora_eval.pipeline.cutoffs import (  # noqa: F401 - judge.check_cutoffs etc.
    IDENTITY_CUTOFF_HINT,
    Cutoffs,
    check_cutoffs,
    identity_cutoff,
)
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

CORR_COLUMNS = [f"{p}_corr" for p in CORE_PROPERTIES]
PER_VECTOR_COLUMNS = [
    "case",
    "svm_group_name",
    "passed",
    *CORR_COLUMNS,
    "sum_abs_corr",
    "fail_reason",
]
IDENTITY_COLUMNS = [
    "identity_max",
    "identity_mean",
    *(f"identity_{p}" for p in CORE_PROPERTIES),
    "identity_worst_pm_idx",
    "identity_unaligned",
    "identity_note",
]
"""Columns of a run that measured identity (``pipeline/identity.py`` says what each is),
after ``fail_reason`` (and ``no_face``); NaN where a vector was not measured."""
STATISTICS_COLUMNS = [
    "eyes_corr_mean",
    "mouth_corr_mean",
    "pose_corr_mean",
    "sum_abs_corr_mean",
    "passed",
    "passed_ratio",
]


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r between one series ``x`` (m,) and each row of ``y`` (n, m).

    A row whose measured values are constant has no defined correlation: NaN.
    Row-wise sums (no matrix product, whose BLAS kernel depends on the row count)
    so a vector's r is bit-identical however many vectors are computed together.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc = x - x.mean()
    yc = y - y.mean(axis=1, keepdims=True)
    sxx = np.sqrt((xc * xc).sum())
    syy = np.sqrt((yc * yc).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * xc).sum(axis=1) / (sxx * syy)
    # A spread below float noise is a constant series too.
    r[syy <= 1e-12 * np.maximum(1.0, np.abs(y).max(axis=1))] = np.nan
    return np.clip(r, -1.0, 1.0)


def shortfall(corrs: pd.DataFrame, cutoffs: Mapping[str, float]) -> pd.Series:
    """How far each vector is from passing: the largest ``cutoff - |r|`` over the three
    properties (0 for a vector that passes; inf when an r is undefined). A near-miss is a
    vector with ``0 < shortfall <= margin``."""
    cut = check_cutoffs(cutoffs)
    gaps = [
        (cut[p] - np.abs(corrs[f"{p}_corr"].to_numpy(dtype=np.float64))) for p in CORE_PROPERTIES
    ]
    worst = np.max(np.stack(gaps, axis=1), axis=1)
    worst = np.where(np.isnan(worst), np.inf, np.maximum(worst, 0.0))
    return pd.Series(worst, index=corrs.index, name="shortfall")


def near_misses(corrs: pd.DataFrame, cutoffs: Mapping[str, float], margin: float) -> pd.Series:
    """The vectors that failed by at most ``margin`` (see ``shortfall``), as a boolean mask."""
    gap = shortfall(corrs, cutoffs)
    return (gap > 0) & (gap <= float(margin))


NO_FACE = "no_face"
"""Column of images per vector whose face was not found (scores NaN); only in runs that had
such images (a scorer that detects faces, ``scorer.detect=true``)."""


def judge(
    corrs: pd.DataFrame, cutoffs: Mapping[str, float], images_per_vector: int | None = None
) -> pd.DataFrame:
    """Pass when |r| >= cutoff for all three properties; say why otherwise.

    ``corrs`` needs the ``*_corr`` columns; returns ``passed`` ("O"/"X") and
    ``fail_reason`` ("" when passed). NaN (undefined r) always fails. A vector with images
    whose face was not found (``no_face`` > 0, when the column is there) fails with the
    reason "no face on k of m images" (its r would be NaN, never a silent number).
    """
    cut = check_cutoffs(cutoffs)
    reasons: list[list[str]] = [[] for _ in range(len(corrs))]
    unmeasured = np.zeros(len(corrs), dtype=np.int64)
    if NO_FACE in corrs.columns:
        unmeasured = corrs[NO_FACE].fillna(0).to_numpy(dtype=np.int64)
        of = f" of {images_per_vector}" if images_per_vector else ""
        for i in np.flatnonzero(unmeasured > 0):
            reasons[i].append(f"no face on {unmeasured[i]}{of} images")
    for p in CORE_PROPERTIES:
        r = corrs[f"{p}_corr"].to_numpy(dtype=np.float64)
        for i in np.flatnonzero(np.isnan(r) & (unmeasured == 0)):
            reasons[i].append(f"{p}: correlation undefined (measured score constant)")
        for i in np.flatnonzero(~np.isnan(r) & (np.abs(r) < cut[p])):
            reasons[i].append(f"{p} |r|={abs(r[i]):.4f} < {cut[p]}")
    if "identity" in cut:
        _judge_identity(corrs, cut["identity"], reasons, images_per_vector)
    fail = ["; ".join(rs) for rs in reasons]
    return pd.DataFrame(
        {"passed": ["X" if f else "O" for f in fail], "fail_reason": fail}, index=corrs.index
    )


def _judge_identity(
    table: pd.DataFrame, limit: float, reasons: list[list[str]], images: int | None
) -> None:
    """Add the identity cutoff's reasons: a distance over ``limit`` (naming the edit that
    moves the face most), faces that could not be aligned, or, for a vector that clears the
    three r cutoffs, distances never measured (unknown is never "kept")."""
    if "identity_max" not in table.columns:
        raise ValueError("the identity cutoff needs the identity columns (identity_max, ...)")
    worst = table["identity_max"].to_numpy(dtype=np.float64)
    unaligned = table["identity_unaligned"].to_numpy(dtype=np.float64)
    notes = table["identity_note"].fillna("").astype(str).to_numpy()
    along = table[[f"identity_{p}" for p in CORE_PROPERTIES]].to_numpy(dtype=np.float64)
    faces = f" of {images + 1}" if images else ""
    for i in range(len(table)):
        if unaligned[i] > 0:
            note = f" ({notes[i]})" if notes[i] else ""
            reasons[i].append(f"identity: {int(unaligned[i])}{faces} faces not aligned{note}")
        elif np.isnan(worst[i]):
            if not reasons[i]:
                reasons[i].append("identity: not measured (outside identity.scope)")
        elif worst[i] > limit:
            k = int(np.nanargmax(along[i])) if np.isfinite(along[i]).any() else 0
            reasons[i].append(
                f"identity distance {worst[i]:.4f} > {limit:g}"
                f" ({CORE_PROPERTIES[k]} edit {along[i, k]:.3f})"
            )


def per_vector_table(
    corr: np.ndarray,
    cutoffs: Mapping[str, float],
    groups: list[str] | None = None,
    cases: np.ndarray | None = None,
    no_face: np.ndarray | None = None,
    images_per_vector: int | None = None,
    identity: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The Oh-LoRA test-result table (plus ``fail_reason``) from an (n, 3) r array.

    ``no_face``: per vector, how many of its ``images_per_vector`` images had no face found
    (their scores NaN). When any did, the table gets a ``no_face`` column after
    ``fail_reason`` and those vectors fail with that reason. ``identity``: the run's
    ``IDENTITY_COLUMNS`` (n rows), appended after those; with ``cutoffs["identity"]`` they
    are judged too (``_judge_identity``)."""
    n = corr.shape[0]
    df = pd.DataFrame(corr, columns=CORR_COLUMNS)
    df.insert(0, "case", np.arange(n) if cases is None else np.asarray(cases))
    df.insert(1, "svm_group_name", groups if groups is not None else [""] * n)
    df["sum_abs_corr"] = np.abs(corr).sum(axis=1)
    columns = list(PER_VECTOR_COLUMNS)
    if no_face is not None and np.asarray(no_face).any():
        df[NO_FACE] = np.asarray(no_face, dtype=np.int64)
        columns.append(NO_FACE)
    if identity is not None:
        for c in IDENTITY_COLUMNS:
            df[c] = identity[c].to_numpy()
        columns += IDENTITY_COLUMNS
    j = judge(df, cutoffs, images_per_vector)
    df.insert(2, "passed", j["passed"])
    df["fail_reason"] = j["fail_reason"]
    return df[columns]


def statistics(per_vector: pd.DataFrame, decimals: int | None = 4) -> pd.DataFrame:
    """Oh-LoRA's statistics row: signed r means, mean sum |r|, passed count and ratio."""
    df = per_vector
    row = {f"{c}_mean": df[c].mean() for c in [*CORR_COLUMNS, "sum_abs_corr"]}
    passed = int((df["passed"] == "O").sum())
    row["passed"] = passed
    row["passed_ratio"] = passed / len(df) if len(df) else float("nan")
    out = pd.DataFrame([row], columns=STATISTICS_COLUMNS)
    if decimals is not None:
        means = [c for c in STATISTICS_COLUMNS if c.endswith("_mean")]
        out[means] = out[means].round(decimals)
    return out


def wilson_interval(
    successes: np.ndarray | float, n: int, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion ``successes / n`` at ``level``
    (good near 0 and 1, where the normal approximation is not: pass rates are small)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = np.asarray(successes, dtype=np.float64) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)


def mean_interval(values: pd.Series, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of a mean (undefined values left out); NaN when fewer
    than two values are defined."""
    from statistics import NormalDist

    v = values.dropna().to_numpy(dtype=np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = NormalDist().inv_cdf(0.5 + level / 2) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def r_passed(per_vector: pd.DataFrame) -> pd.Series:
    """The vectors that clear the three r cutoffs, whatever their identity (every reason
    they fail, if any, is an identity one)."""
    reasons = per_vector["fail_reason"].fillna("").astype(str)
    return reasons.map(lambda t: all(x.startswith("identity") for x in t.split("; ") if x))


def identity_metrics(per_vector: pd.DataFrame, threshold: float) -> dict[str, float]:
    """How many vectors that clear the three r cutoffs keep their identity: distances at
    most ``threshold`` (the identity cutoff, or the identity model's same-person distance
    when the run has none), farther, or unknown (not measured, faces not aligned)."""
    ok = r_passed(per_vector)
    worst = per_vector["identity_max"].astype(float)
    measured = per_vector["identity_unaligned"].astype(float).notna()
    out = {
        "identity_threshold": float(threshold),
        "identity_measured": float(measured.sum()),
        "r_passed": float(ok.sum()),
        "r_passed_same_person": float((ok & (worst <= threshold)).sum()),
        "r_passed_other_person": float((ok & (worst > threshold)).sum()),
        "r_passed_identity_unknown": float((ok & worst.isna()).sum()),
    }
    for name, rows in (("", measured), ("_r_passed", ok & worst.notna())):
        if rows.any():
            out[f"identity_max{name}_mean"] = float(worst[rows].mean())
    return out


def identity_summary(metrics: Mapping[str, float], name: str, limit: float | None) -> str:
    """What the run's summary says of identity (from ``judge.identity_metrics``)."""
    t = float(metrics["identity_threshold"])
    rule = f"cutoff.identity {t:g}" if limit is not None else f"{name}'s same-person {t:g}"
    line = (
        f"identity ({name}; distance of each edit from the unedited face, {rule}): of the"
        f" {int(metrics['r_passed'])} vectors that clear the three r cutoffs, same person"
        f" (every edit within {t:g}): {int(metrics['r_passed_same_person'])}, another person:"
        f" {int(metrics['r_passed_other_person'])}"
    )
    unknown = int(metrics["r_passed_identity_unknown"])
    if unknown:
        line += f", unknown (not measured or faces not aligned): {unknown}"
    return line + f"; {int(metrics['identity_measured'])} vectors measured"


def run_metrics(
    per_vector: pd.DataFrame, identity_threshold: float | None = None
) -> dict[str, float]:
    """The scalar metrics every evaluation run logs (full precision), with 95 % intervals of
    the pass rate (Wilson, ``pass_rate_ci_lo``/``_hi``) and of each mean |r|
    (``<p>_abs_corr_ci_lo``/``_hi``): over the vectors, as a sample of the generator's.
    A table with identity columns adds ``identity_metrics`` at ``identity_threshold``."""
    df = per_vector
    n = len(df)
    ok = df["passed"] == "O"
    m: dict[str, float] = {"passed": float(ok.sum()), "pass_rate": float(ok.mean()) if n else 0.0}
    if n:
        lo, hi = wilson_interval(float(ok.sum()), n)
        m["pass_rate_ci_lo"], m["pass_rate_ci_hi"] = float(lo), float(hi)
    for p in CORE_PROPERTIES:
        r = df[f"{p}_corr"]
        m[f"{p}_corr_mean"] = float(r.mean())
        m[f"{p}_abs_corr_mean"] = float(r.abs().mean())
        lo, hi = mean_interval(r.abs())
        if lo == lo:
            m[f"{p}_abs_corr_ci_lo"], m[f"{p}_abs_corr_ci_hi"] = lo, hi
        reason = df["fail_reason"].str.contains(rf"(?:^|; ){p}[ :]", regex=True)
        m[f"{p}_pass_rate"] = float((~reason).mean()) if n else 0.0
        m[f"{p}_undefined"] = float(r.isna().sum())
    m["sum_abs_corr_mean"] = float(df["sum_abs_corr"].mean())
    if "identity_max" in df.columns and identity_threshold is not None:
        m.update(identity_metrics(df, identity_threshold))
    return m
