"""The cutoff frontier: what every triple of cutoffs on a grid would leave, from stored r only.

Arrays in, arrays out (no MLflow, no configuration); ``apps/frontier.py`` reads a run and
its re-test and logs what this computes.

A vector passes a cutoff triple when ``|r| >= cutoff`` for all three properties (as
``pipeline.judge`` judges; an undefined r or a face not found never passes). Counting is
vectorised without looping over triples: each |r| becomes its *level*, the number of grid
values it clears (``searchsorted``), so a vector passes grid triple ``(i, j, l)`` exactly
when its levels exceed ``(i, j, l)``; a histogram of the vectors' level triples, summed
from the top along each axis, gives every triple's count at once. The work is
O(vectors + grid size), about a millisecond for 19^3 triples and 2,000 vectors.

With a re-test (k re-measurements of some vectors, each with its own r), a vector's
re-pass probability is the share of its repetitions that pass. Two readings, per triple:

- ``expected`` / ``reliable``: re-passing *the re-test's cutoffs* (the run's own; the
  re-test's ``re_pass_prob``): the sum of the re-pass probabilities of the vectors the
  triple passes, and how many of them have one >= ``reliable_at``. The triple selects,
  the run's own test is the one to pass again.
- ``expected_here`` / ``reliable_here``: re-passing *the triple itself*: each vector's
  probability judged again at that triple from the repetitions' stored r (a stricter
  cutoff fails more repetitions: a vector with eyes r 0.99 that always re-passes eyes
  0.92 may rarely re-pass 0.98).
- ``identity_unknown`` (with an identity cutoff, ``IdentityFilter``): vectors that pass the
  triple's three r cutoffs but have no stored identity distance (outside the run's
  ``identity.scope``, or faces not aligned). They are not counted as passing.
- ``not_retested``: passing vectors that were not re-tested. No re-pass probability is
  known for them; they are left out of both readings (not counted as 0 or 1), and a
  triple where any pass is marked. A re-test of all the passed vectors covers every
  triple at least as strict as the run's own cutoffs (a vector that passes a stricter
  triple passed the run's own); looser triples let in vectors it did not re-measure.

Answers (``strictest``, ``most_expected``): "strictest" is the largest sum of the three
cutoffs (ties: the largest smallest cutoff, then the fewest vectors passing, then the
first in eyes, mouth, pose order). No triple stricter in every property can meet the same
condition with a larger sum, so the answer is always on the frontier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

PROPERTIES = CORE_PROPERTIES  # eyes, mouth, pose: the columns of every (n, 3) array here
_CELLS_PER_CHUNK = 4_000_000  # per-vector histograms are built this many cells at a time


def grid_length(lo: float, hi: float, step: float) -> int:
    """How many cutoffs ``cutoff_grid(lo, hi, step)`` holds (known before building it)."""
    return int(np.floor((hi - lo) / step + 1e-9)) + 1


def cutoff_grid(lo: float, hi: float, step: float) -> np.ndarray:
    """``lo, lo + step, ...`` up to ``hi`` (included when on the grid), each rounded to 10
    decimals so that 0.92 on the grid is the same float as ``cutoff.eyes=0.92``."""
    return np.round(lo + step * np.arange(grid_length(lo, hi, step)), 10)


def passes_cutoffs(
    abs_r: np.ndarray, cutoffs: Mapping[str, float], valid: np.ndarray | None = None
) -> np.ndarray:
    """(..., 3) |r| -> (...) bool: every |r| clears its cutoff (an undefined r never does)
    and, where ``valid`` is given, it is True."""
    cut = np.array([float(cutoffs[p]) for p in PROPERTIES])
    with np.errstate(invalid="ignore"):
        ok = (np.asarray(abs_r, dtype=np.float64) >= cut).all(axis=-1)
    return ok if valid is None else ok & np.asarray(valid, dtype=bool)


def levels(
    abs_r: np.ndarray, grids: Sequence[np.ndarray], valid: np.ndarray | None = None
) -> np.ndarray:
    """(..., 3) |r| -> (..., 3) ints: how many values of each property's grid ``|r|``
    clears (``|r| >= g``); an undefined r (NaN), or one where ``valid`` is False, clears none."""
    abs_r = np.asarray(abs_r, dtype=np.float64)
    out = np.zeros(abs_r.shape, dtype=np.int64)
    for p, grid in enumerate(grids):
        col = abs_r[..., p]
        lv = np.searchsorted(grid, np.nan_to_num(col, nan=-np.inf), side="right")
        out[..., p] = np.where(np.isnan(col), 0, lv)
    if valid is not None:
        out[~np.asarray(valid, dtype=bool)] = 0
    return out


def _histogram(
    lv: np.ndarray,
    shape: tuple[int, int, int],
    groups: int = 1,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(groups, rows, 3) levels -> (groups, Ge+1, Gm+1, Gp+1) counts, indexed by how many grid
    values each level falls *short* of (``G - level``), so that a prefix sum (``_passing``)
    counts the rows at or above a level."""
    ge, gm, gp = shape
    rev = np.array(shape) - lv
    size = (ge + 1) * (gm + 1) * (gp + 1)
    flat = (rev[..., 0] * (gm + 1) + rev[..., 1]) * (gp + 1) + rev[..., 2]
    flat = flat.reshape(groups, -1) + (np.arange(groups) * size)[:, None]
    hist = np.bincount(flat.ravel(), weights=weights, minlength=groups * size)
    return hist.reshape(groups, ge + 1, gm + 1, gp + 1)


def _passing(hist: np.ndarray) -> np.ndarray:
    """Prefix sums of ``_histogram``'s counts along the three grid axes, in place: cell
    ``(G-1-i, ...)`` then holds the rows whose levels exceed ``i``, i.e. that pass grid value
    ``i``. Returned as (groups, Ge, Gm, Gp) in grid order (a reversed view)."""
    for ax in (1, 2, 3):
        np.cumsum(hist, axis=ax, out=hist)
    return hist[:, :-1, :-1, :-1][:, ::-1, ::-1, ::-1]


def count_passing(
    lv: np.ndarray, shape: tuple[int, int, int], weights: np.ndarray | None = None
) -> np.ndarray:
    """(n, 3) levels -> (Ge, Gm, Gp): at each grid triple, how many rows pass it (or the sum
    of their ``weights``)."""
    return _passing(_histogram(lv, shape, weights=weights))[0].copy()


@dataclass
class Repetitions:
    """A re-test: ``rows`` (m,) index the run's vectors that were re-measured, ``abs_r``
    (m, k, 3) their |r| in each of the k repetitions, ``cutoffs`` the cutoffs it judged
    them at (its source run's), ``valid`` (m, k) False where a repetition cannot pass
    whatever the cutoffs (a face not found)."""

    rows: np.ndarray
    abs_r: np.ndarray
    cutoffs: Mapping[str, float]
    valid: np.ndarray | None = None

    def passes(self) -> np.ndarray:
        """(m,) how many repetitions of each vector pass the re-test's own cutoffs."""
        return passes_cutoffs(self.abs_r, self.cutoffs, self.valid).sum(axis=1)

    @property
    def k(self) -> int:
        return int(self.abs_r.shape[1])


@dataclass
class Frontier:
    """Every grid triple's figures; arrays are indexed (eyes, mouth, pose)."""

    grids: tuple[np.ndarray, np.ndarray, np.ndarray]
    n_vectors: int
    passed: np.ndarray  # int
    expected: np.ndarray | None = None  # sum of re-pass probabilities (the re-test's cutoffs)
    reliable: np.ndarray | None = None  # int: that probability >= reliable_at
    expected_here: np.ndarray | None = None  # the same, re-passing the triple itself
    reliable_here: np.ndarray | None = None
    not_retested: np.ndarray | None = None  # int: passing, no re-pass probability known
    reliable_at: float = 0.8
    k: int = 0  # repetitions of the re-test
    retest_cutoffs: Mapping[str, float] | None = None  # the cutoffs the re-test judged
    retested: int = 0  # vectors it re-measured
    identity_limit: float | None = None  # every triple also needs identity_max <= this
    identity_unknown: np.ndarray | None = None  # int: pass the r triple, no distance known

    @property
    def has_retest(self) -> bool:
        return self.expected is not None

    def all_retested(self) -> np.ndarray:
        """(bool, per triple; with a re-test) it passes vectors, every one of them re-tested."""
        return (self.passed > 0) & (self.not_retested == 0)

    def strictness(self) -> np.ndarray:
        """The sum of the three cutoffs at each triple (rounded: sums are compared)."""
        ge, gm, gp = self.grids
        return np.round(ge[:, None, None] + gm[None, :, None] + gp[None, None, :], 9)

    def figures(self) -> dict[str, np.ndarray]:
        """The per-triple figures this frontier has besides ``passed``, named as ``at`` and
        ``judge_at`` name them: the re-test's readings, ``identity_unknown``."""
        named = {
            "expected_re_pass": self.expected,
            "reliable": self.reliable,
            "expected_here": self.expected_here,
            "reliable_here": self.reliable_here,
            "not_retested": self.not_retested,
            "identity_unknown": self.identity_unknown,
        }
        return {name: figure for name, figure in named.items() if figure is not None}

    def at(self, index: tuple[int, int, int]) -> dict[str, float]:
        """One triple: its cutoffs and figures (counts as int, sums as float)."""
        row: dict[str, float] = {p: float(g[i]) for p, g, i in zip(PROPERTIES, self.grids, index)}
        row["passed"] = int(self.passed[index])
        row.update({name: figure[index].item() for name, figure in self.figures().items()})
        row["strictness"] = float(self.strictness()[index])
        return row

    def pareto(self) -> np.ndarray:
        """The front (bool, per triple). With a re-test: passed vs expected re-passing, fewest
        passing for the most expected to re-pass, over triples where every passing vector
        was re-tested. Without: passed vs strictness, the strictest cutoffs for each number
        of vectors passing. Triples passing no vector are never on it."""
        if self.expected is not None and self.not_retested is not None:
            return pareto_front(self.passed, self.expected, self.all_retested())
        return pareto_front(-self.passed, self.strictness(), self.passed > 0)

    def table(self) -> pd.DataFrame:
        """One row per triple, eyes then mouth then pose ascending."""
        ge, gm, gp = np.meshgrid(*self.grids, indexing="ij")
        out = {"eyes": ge.ravel(), "mouth": gm.ravel(), "pose": gp.ravel()}
        out["passed"] = self.passed.ravel()
        at = f"{self.reliable_at:g}"
        for name, figure in self.figures().items():
            out[_COLUMNS.get(name, name).format(at=at)] = figure.ravel()
        out["strictness"] = self.strictness().ravel()
        out["pareto"] = self.pareto().ravel()
        return pd.DataFrame(out)


# ``Frontier.table``'s names for the figures whose ``at`` name differs ({at}: reliable_at)
_COLUMNS = {
    "reliable": "re_pass_prob_ge_{at}",
    "expected_here": "expected_re_pass_at_triple",
    "reliable_here": "re_pass_prob_at_triple_ge_{at}",
}


@dataclass(frozen=True)
class IdentityFilter:
    """An identity cutoff over every triple: a vector passes only where its ``worst`` (n,)
    identity distance is at most ``limit``; NaN (not measured, faces not aligned) never
    passes, and is counted per triple as ``identity_unknown``."""

    worst: np.ndarray
    limit: float

    def kept(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.asarray(self.worst, dtype=np.float64) <= self.limit

    def unknown(self) -> np.ndarray:
        return np.isnan(np.asarray(self.worst, dtype=np.float64))


def frontier(
    abs_r: np.ndarray,
    grids: Sequence[np.ndarray],
    valid: np.ndarray | None = None,
    retest: Repetitions | None = None,
    reliable_at: float = 0.8,
    identity: IdentityFilter | None = None,
) -> Frontier:
    """Every triple of ``grids`` (each ascending) for the (n, 3) ``abs_r`` of a run's vectors
    (``valid``: False for a vector that fails whatever the cutoffs, a face not found;
    ``identity``: an identity cutoff every triple applies too)."""
    ge, gm, gp = (np.asarray(g, dtype=np.float64) for g in grids)
    axes, shape = (ge, gm, gp), (len(ge), len(gm), len(gp))
    lv = levels(abs_r, axes, valid)
    unknown = None
    if identity is not None:
        unknown = count_passing(lv[identity.unknown()], shape)
        lv[~identity.kept()] = 0
    result = Frontier(axes, len(lv), count_passing(lv, shape), reliable_at=reliable_at)
    if identity is not None:
        result.identity_limit, result.identity_unknown = identity.limit, unknown
    if retest is None:
        return result
    rows = np.asarray(retest.rows, dtype=np.int64)
    m, k = retest.abs_r.shape[:2]
    rep = levels(retest.abs_r, axes, retest.valid)
    need = _need(k, reliable_at)
    # Re-passing the re-test's cutoffs: each re-tested vector weighs its passes there.
    passes = retest.passes()
    result.expected = count_passing(lv[rows], shape, weights=passes.astype(np.float64)) / k
    result.reliable = count_passing(lv[rows][passes >= need], shape)
    # Re-passing the triple itself: a repetition counts where it passes the triple and the
    # vector passed the triple in the run.
    both = np.minimum(rep, lv[rows][:, None, :])  # (m, k, 3)
    result.expected_here = count_passing(both.reshape(-1, 3), shape) / k
    result.reliable_here = _reliable(both, shape, need)
    result.not_retested = count_passing(np.delete(lv, rows, axis=0), shape)
    result.k, result.retested, result.retest_cutoffs = k, m, dict(retest.cutoffs)
    return result


def _need(k: int, at: float) -> int:
    """The fewest passes of k whose share reaches ``at`` (compared as re_pass_prob =
    passes / k is)."""
    return int(np.flatnonzero(np.arange(k + 1) / k >= at)[0])


def _reliable(both: np.ndarray, shape: tuple[int, int, int], need: int) -> np.ndarray:
    """How many vectors re-pass each triple in at least ``need`` of their repetitions: one
    histogram per vector (its repetitions' level triples), a chunk of vectors at a time."""
    m, k = both.shape[:2]
    size = int(np.prod(np.array(shape) + 1))
    out = np.zeros(shape, dtype=np.int64)
    step = max(1, _CELLS_PER_CHUNK // size)
    for lo in range(0, m, step):
        part = both[lo : lo + step]
        hist = _histogram(part, shape, groups=len(part)).astype(np.int32)
        out += (_passing(hist) >= need).sum(axis=0)
    return out


def judge_at(
    abs_r: np.ndarray,
    cutoffs: Mapping[str, float],
    valid: np.ndarray | None = None,
    retest: Repetitions | None = None,
    reliable_at: float = 0.8,
    identity: IdentityFilter | None = None,
) -> dict[str, float]:
    """The same figures at one triple of cutoffs (on the grid or not), with plain masks."""
    ok = passes_cutoffs(abs_r, cutoffs, valid)
    out: dict[str, float] = {p: float(cutoffs[p]) for p in PROPERTIES}
    if identity is not None:
        out["identity_unknown"] = int((ok & identity.unknown()).sum())
        ok &= identity.kept()
    out["passed"] = int(ok.sum())
    if retest is None:
        return out
    rows = np.asarray(retest.rows, dtype=np.int64)
    sel = ok[rows]  # the re-tested vectors these cutoffs pass
    prob = retest.passes() / retest.k  # re-passing the re-test's own cutoffs
    here = passes_cutoffs(retest.abs_r, cutoffs, retest.valid).mean(axis=1)  # these cutoffs
    out["expected_re_pass"] = float(prob[sel].sum())
    out["reliable"] = int((prob[sel] >= reliable_at).sum())
    out["expected_here"] = float(here[sel].sum())
    out["reliable_here"] = int((here[sel] >= reliable_at).sum())
    out["not_retested"] = int(np.delete(ok, rows).sum())
    return out


def pareto_front(x_min: np.ndarray, y_max: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Points (among ``valid``) that no other valid point beats: none has ``x <=`` and
    ``y >=`` with one strict. Equal points are all on the front."""
    x = np.asarray(x_min, dtype=np.float64).ravel()
    y = np.asarray(y_max, dtype=np.float64).ravel()
    idx = np.flatnonzero(np.asarray(valid, dtype=bool).ravel())
    out = np.zeros(x.shape, dtype=bool)
    if len(idx):
        xs, ys = x[idx], y[idx]
        ux, group = np.unique(xs, return_inverse=True)
        best = np.full(len(ux), -np.inf)
        np.maximum.at(best, group, ys)  # the best y at each x
        before = np.concatenate([[-np.inf], np.maximum.accumulate(best)[:-1]])  # at smaller x
        out[idx] = (ys == best[group]) & (best[group] > before[group])
    return out.reshape(np.shape(x_min))


def _best(fr: Frontier, candidates: np.ndarray, first: np.ndarray | None = None) -> tuple | None:
    """The candidate triple with the largest ``first`` (if given), then the strictest."""
    idx = np.flatnonzero(candidates.ravel())
    if not len(idx):
        return None
    strict = fr.strictness().ravel()[idx]
    lowest = np.minimum.reduce(np.meshgrid(*fr.grids, indexing="ij")).ravel()[idx]
    keys = [-idx, -fr.passed.ravel()[idx], lowest, strict]  # np.lexsort: the last key first
    if first is not None:
        keys.append(first.ravel()[idx])
    pick = idx[np.lexsort(keys)[-1]]
    return tuple(int(i) for i in np.unravel_index(pick, fr.passed.shape))


def strictest(fr: Frontier, want: int, count: str = "passed") -> tuple | None:
    """The strictest triple that leaves at least ``want`` vectors: passing (``count`` =
    "passed"), re-passing the re-test's cutoffs with probability >= ``fr.reliable_at``
    ("reliable") or re-passing the triple itself so ("reliable_here"); None when no
    triple does."""
    counts = getattr(fr, count)
    if counts is None:
        return None
    return _best(fr, counts >= want)


def most_expected(fr: Frontier) -> tuple | None:
    """The triple with the largest expected number of vectors that re-pass, among those where
    every passing vector was re-tested (elsewhere the figure leaves vectors out, and it grows
    as cutoffs loosen); ties: the strictest. None without a re-test or such a triple."""
    if fr.expected is None or fr.not_retested is None:
        return None
    return _best(fr, fr.all_retested(), first=fr.expected)
