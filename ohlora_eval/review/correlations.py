"""How sure each r is and how clean each edit is: bootstrap intervals of r, Spearman's rho
(and the ceiling the grid's repeated weights put on it), and cross-property leakage.

Computed from the edit grid and the scorer's outputs only, so they mean the same for any
generator. Determinism: every reduction is a numpy reduction over one vector's own slice, so
a vector's numbers do not depend on which other vectors shared its chunk, and the same run
gives byte-identical columns.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ohlora_eval.errors import int_in, number_in
from ohlora_eval.pipeline.judge import pearson_rows
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

# The (q, p) pairs of distinct properties: q's edit, p's score.
OFF_DIAGONAL: tuple[tuple[str, str], ...] = tuple(
    (q, p) for q in CORE_PROPERTIES for p in CORE_PROPERTIES if q != p
)


def bootstrap_ci(
    x: np.ndarray,
    y: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of Pearson r(x, y_i) for each row of ``y`` (n, m).

    The m images are resampled with replacement; every vector uses the same
    ``n_boot`` resamples (drawn from ``seed``), so intervals are comparable across
    vectors and deterministic. A resample is a vector of counts (how often each
    image was drawn), which turns each bootstrap r into weighted sums: no copies
    of the data. Resamples with a constant x or y have no r and are left out; a
    vector with no defined r in any resample gets NaN bounds.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2 or x.shape != (y.shape[1],):
        raise ValueError(f"x must be (m,) and y (n, m); got {x.shape} and {y.shape}")
    number_in("review.ci_level", level, 0, 1, low_open=True, high_open=True)
    int_in("review.n_boot", n_boot, 2)
    n, m = y.shape
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, m, size=(n_boot, m))
    counts = np.zeros((n_boot, m))
    np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)

    # Centre first: the weighted moments then lose no precision to large means.
    xc = x - x.mean()
    sx = (counts * xc).sum(-1)  # (B,)
    sxx = (counts * xc * xc).sum(-1)
    vx = m * sxx - sx * sx
    # A resample whose spread is below float noise is constant: no r (as pearson_rows).
    x_const = vx <= 1e-12 * max(1.0, float(np.abs(xc).max(initial=0.0))) ** 2 * m * m
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    alpha = (1.0 - level) / 2.0
    step = 256  # rows per block: bounded memory, results independent of the block
    for a in range(0, n, step):
        yc = y[a : a + step] - y[a : a + step].mean(-1, keepdims=True)  # (b, m)
        w = counts[None] * yc[:, None, :]  # (b, B, m)
        sy = w.sum(-1)
        syy = (w * yc[:, None, :]).sum(-1)
        sxy = (w * xc).sum(-1)
        vy = m * syy - sy * sy
        y_scale = np.maximum(1.0, np.abs(yc).max(-1, keepdims=True)) ** 2 * m * m
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (m * sxy - sx * sy) / np.sqrt(vx * vy)
        r[(vy <= 1e-12 * y_scale) | x_const[None, :]] = np.nan
        r = np.clip(r, -1.0, 1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows stay NaN
            q = np.nanquantile(r, [alpha, 1.0 - alpha], axis=1)
        lo[a : a + step], hi[a : a + step] = q[0], q[1]
    return lo, hi


def _average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..m along the last axis, ties sharing their mean rank."""
    from scipy.stats import rankdata  # scikit-learn depends on scipy: always present

    return rankdata(a, method="average", axis=-1)


def spearman_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho between ``x`` (m,) and each row of ``y`` (n, m).

    Pearson r of average ranks, so ties (the grid repeats each weight many times)
    are handled the textbook way. A constant row gives NaN, as for Pearson r.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if y.shape[0] == 0:
        return np.zeros(0)
    return pearson_rows(_average_ranks(x), _average_ranks(y))


def spearman_max(x: np.ndarray) -> float:
    """The largest Spearman's rho any tie-free score can reach against ``x`` (m,).

    Below 1 when ``x`` repeats values: with the grid's two eyes weights it is
    about 0.87 even for a perfect edit, so rho is read against this ceiling.
    """
    x = np.asarray(x, dtype=np.float64)
    ordinal = np.empty(len(x))
    ordinal[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    return float(pearson_rows(_average_ranks(x), ordinal[None])[0])


def leakage(grid: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """How much each edit moves the properties it is not meant to move.

    ``matrix[i, q, p]`` is Pearson r between vector i's intended weight of
    property q and its measured score of property p over the grid (the diagonal
    is the usual per-property r). The grid is a full factorial, so the weights
    are uncorrelated with each other and an off-diagonal r is the share of p's
    measured change that follows q's edit.

    Returns ``matrix`` (n, 3, 3); ``{q}_to_{p}_r`` (n,), the signed off-diagonal
    entries; ``{p}_leak`` (n,) = max over q != p of |r(weight q, score p)|, how
    much the other edits leak *into* p's measurement; and ``max_leak`` (n,), the
    largest of them. NaN only where every contributing r is undefined.
    """
    grid = np.asarray(grid, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    k = len(CORE_PROPERTIES)
    if grid.ndim != 2 or grid.shape[1] != k or scores.shape[1:] != (grid.shape[0], k):
        raise ValueError(
            f"grid must be (m, 3) and scores (n, m, 3); got {grid.shape}, {scores.shape}"
        )
    n = scores.shape[0]
    matrix = np.full((n, k, k), np.nan)
    for q in range(k):
        for p in range(k):
            matrix[:, q, p] = pearson_rows(grid[:, q], scores[:, :, p])
    out: dict[str, np.ndarray] = {"matrix": matrix}
    names = list(CORE_PROPERTIES)
    for q, p in OFF_DIAGONAL:
        out[f"{q}_to_{p}_r"] = matrix[:, names.index(q), names.index(p)]
    off = np.abs(matrix)
    off[:, np.arange(k), np.arange(k)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices stay NaN
        for j, p in enumerate(names):
            out[f"{p}_leak"] = np.nanmax(off[:, :, j], axis=1)
        out["max_leak"] = np.nanmax(off.reshape(n, -1), axis=1)
    return out


def spearman_ceilings(grid: np.ndarray | None) -> dict[str, float] | None:
    """Property -> the largest Spearman rho the grid's repeated weights allow (when below 1)."""
    if grid is None:
        return None
    g = np.asarray(grid)
    ceilings = {p: spearman_max(g[:, k]) for k, p in enumerate(CORE_PROPERTIES)}
    return {p: v for p, v in ceilings.items() if math.isfinite(v) and v < 1 - 1e-9}
