"""Measured review aids: how sure each r is, how clean and how local each edit is.

The final pick is a person looking at contact sheets against four criteria (the
face fits, the three properties really change, background and face shape stay,
no uncanny valley). These numbers support the middle two. Everything here is
computed from the edit grid, the scorer's outputs and the images' pixels only,
so it means the same for any generator (the synthetic faces and 256x256
StyleGAN faces alike); nothing looks inside a generator.

Determinism: every reduction is a numpy reduction over one vector's own slice
(pairwise sums along the last axis, or row-by-row adds along another axis), so
a vector's numbers do not depend on which other vectors shared its chunk, and
the same run gives byte-identical columns.
"""

from __future__ import annotations

import ast
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ohlora_eval.pipeline.judge import pearson_rows
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

# The face region used by ``locality_stats``: the ellipse inscribed in this box,
# (x0, y0, x1, y1) in normalised image coordinates (x, y in [-1, 1], y down).
# Suits centred portrait faces: the embedded synthetic faces (face within
# y -0.55..0.55, shifting sideways by up to 0.1 when the head turns) and the
# Oh-LoRA StyleGAN faces (the property CNN's eyes..mouth crops sit in y -0.25..0.63).
DEFAULT_FACE_BOX: tuple[float, float, float, float] = (-0.55, -0.65, 0.55, 0.85)

# Sum of |r| minus penalties: a leak of 0.3 costs as much as losing 0.3 of summed
# |r|; background drift costs 0.1 per multiple of the run's median drift.
DEFAULT_RANK_BY = "sum_abs_corr - 1.0*max_leak - 0.1*bg_drift_rel"

LOCALITY_COLUMNS: tuple[str, ...] = ("bg_drift", "face_iou")
OFF_DIAGONAL: tuple[tuple[str, str], ...] = tuple(
    (q, p) for q in CORE_PROPERTIES for p in CORE_PROPERTIES if q != p
)
REVIEW_COLUMNS: list[str] = [
    *(f"{p}_corr_{end}" for p in CORE_PROPERTIES for end in ("lo", "hi")),
    *(f"{p}_spearman" for p in CORE_PROPERTIES),
    *(f"{q}_to_{p}_r" for q, p in OFF_DIAGONAL),
    *(f"{p}_leak" for p in CORE_PROPERTIES),
    "max_leak",
    "bg_drift",
    "bg_drift_rel",
    "face_iou",
    "review_score",
    "review_rank",
]

# Names a ``review.rank_by`` expression may call (element-wise on columns).
RANK_FUNCTIONS = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "minimum": np.fmin,
    "maximum": np.fmax,
}


# --- correlations ------------------------------------------------------------------------------
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
    if not 0.0 < level < 1.0:
        raise ValueError(f"review.ci_level={level} must be in (0, 1)")
    if n_boot < 2:
        raise ValueError(f"review.n_boot={n_boot} must be >= 2")
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


# --- locality from pixels ----------------------------------------------------------------------
def check_face_box(face_box: Sequence[float]) -> tuple[float, float, float, float]:
    box = tuple(float(v) for v in face_box)
    if len(box) != 4:
        raise ValueError(f"review.face_box={list(face_box)} must be [x0, y0, x1, y1]")
    x0, y0, x1, y1 = box
    if not (-1.0 <= x0 < x1 <= 1.0 and -1.0 <= y0 < y1 <= 1.0):
        raise ValueError(
            f"review.face_box={list(box)} must satisfy -1 <= x0 < x1 <= 1 and -1 <= y0 < y1 <= 1"
            " (normalised image coordinates, y down)"
        )
    return box  # type: ignore[return-value]


def face_region(h: int, w: int, face_box: Sequence[float] = DEFAULT_FACE_BOX) -> np.ndarray:
    """(h, w) bool: pixel centres inside the ellipse inscribed in ``face_box``."""
    x0, y0, x1, y1 = check_face_box(face_box)
    ys = (np.arange(h) + 0.5) / h * 2 - 1
    xs = (np.arange(w) + 0.5) / w * 2 - 1
    dy = (ys[:, None] - (y0 + y1) / 2) / ((y1 - y0) / 2)
    dx = (xs[None, :] - (x0 + x1) / 2) / ((x1 - x0) / 2)
    return dx * dx + dy * dy <= 1.0


def _pool_factor(h: int, w: int, size: int) -> int | None:
    """The integer factor bringing the longer side to <= ``size`` (1: none); None if none fits."""
    f = -(-max(h, w) // size)
    return f if h % f == 0 and w % f == 0 else None


def _analysis_pixels(images: Tensor, size: int) -> tuple[np.ndarray, int]:
    """Images as float32 numpy on the CPU, plus the pooling factor still to apply per block.

    CPU images whose sides divide evenly are pooled later, a block at a time
    (``_pool_block``); GPU images and odd sizes are area-averaged here with
    torch, on their own device, so only small images cross to the CPU.
    """
    x = images.detach()
    h, w = x.shape[-2:]
    f = _pool_factor(h, w, size)
    if f is not None and (f == 1 or x.device.type == "cpu"):
        return x.to("cpu", torch.float32).contiguous().numpy(), f
    x = x.float()
    if f is not None:
        x = torch.nn.functional.avg_pool2d(x, f)
    else:
        scale = size / max(h, w)
        x = torch.nn.functional.adaptive_avg_pool2d(
            x, (max(1, round(h * scale)), max(1, round(w * scale)))
        )
    return x.to("cpu", torch.float32).contiguous().numpy(), 1


def _pool_block(x: np.ndarray, f: int) -> np.ndarray:
    """Mean of each f x f window of (..., h, w), adding rows then columns in a fixed order."""
    if f == 1:
        return x
    rows = x[..., 0::f, :].copy()
    for i in range(1, f):
        rows += x[..., i::f, :]
    out = rows[..., 0::f].copy()
    for j in range(1, f):
        out += rows[..., j::f]
    out *= np.float32(1.0 / (f * f))
    return out


def _channel_abs_diff(a: np.ndarray, b: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``out`` = sum over the 3 channels (axis -3) of |a - b|, channels added in order."""
    np.subtract(a[..., 0, :, :], b[..., 0, :, :], out=out)
    np.abs(out, out=out)
    for c in (1, 2):
        np.subtract(a[..., c, :, :], b[..., c, :, :], out=tmp)
        np.abs(tmp, out=tmp)
        out += tmp
    return out


def locality_stats(
    images: Tensor,
    m: int,
    *,
    face_box: Sequence[float] = DEFAULT_FACE_BOX,
    analysis_size: int = 32,
    border: float = 0.05,
    fg_threshold: float = 0.10,
    fg_softness: float = 0.04,
) -> dict[str, np.ndarray]:
    """Per vector, how local its edits are, from pixels only (the ``ImageStats`` hook).

    ``images`` (v*m, 3, H, W) in [-1, 1], vector-major (image i*m+j is vector i at
    grid point j). Images are first area-averaged down to ``analysis_size`` on
    their longer side, so a 256x256 face costs little more than a 64x64 one, the
    figures are on one scale for every generator, and single-pixel jitter at
    edges barely counts as drift. Pixel values are used in [0, 1] units.

    ``bg_drift``: mean absolute change outside the face region, per channel, of
    each grid image against the vector's mean grid image (per pixel), averaged
    over the grid. The grid has no unedited centre image (eyes is +-1.2), and
    the mean needs one pass where a median needs a sort. 0 = the background and
    everything else around the face stay put; 0.1 = a tenth of full scale on
    average. The face region is the ellipse inscribed in ``face_box``
    ((x0, y0, x1, y1), normalised coordinates, y down); hair, neck and
    background lie outside it.

    ``face_iou``: stability of the head's silhouette. A soft foreground mask per
    image marks pixels whose colour differs (mean over channels, a linear ramp
    from ``fg_threshold - fg_softness`` to ``fg_threshold + fg_softness``) from
    the colour of the image's own left or right border in the same row,
    whichever is closer; so it follows a drifting or graded background and
    needs no colour model of faces. Each mask is compared with the vector's mean
    mask by soft IoU (sum of minima / sum of maxima) and the figure is the mean
    over the grid: 1 = the silhouette never changes. A mask's errors (hair the
    colour of the background) repeat in every image of a vector, so they cancel.
    """
    n_img = images.shape[0]
    if m < 1 or n_img % m:
        raise ValueError(f"{n_img} images is not a whole number of grids of {m}")
    if analysis_size < 8:
        raise ValueError(f"review.analysis_size={analysis_size} must be >= 8")
    if not 0.0 < border < 0.5:
        raise ValueError(f"review.border={border} must be in (0, 0.5)")
    v = n_img // m
    if v == 0:
        return {"bg_drift": np.zeros(0), "face_iou": np.zeros(0)}
    x, f = _analysis_pixels(images, int(analysis_size))
    x = x.reshape(v, m, 3, *x.shape[-2:])
    h, w = x.shape[-2] // f, x.shape[-1] // f
    outside = ~face_region(h, w, face_box)
    if not outside.any():
        raise ValueError(f"review.face_box={list(face_box)} leaves no pixel outside the face")
    # Thresholds in the [-1, 1] units of the images: differences are twice as large.
    lo_hi = (2 * (fg_threshold - fg_softness), 2 * (fg_threshold + fg_softness))
    b = max(1, round(border * w))
    bg_drift = np.empty(v)
    face_iou = np.empty(v)
    # A few vectors at a time, into reused buffers: whole-chunk temporaries cost
    # more in page faults than in arithmetic. A vector's numbers are the same
    # whatever block it is in (every reduction runs over its own slice only).
    step = 4
    bufs = [np.empty((min(step, v), m, h, w), np.float32) for _ in range(4)]
    for a in range(0, v, step):
        block = np.clip(_pool_block(x[a : a + step], f), -1.0, 1.0)
        k = block.shape[0]
        bg_drift[a : a + k], face_iou[a : a + k] = _locality_block(
            block, outside, b, lo_hi, [buf[:k] for buf in bufs]
        )
    return {"bg_drift": bg_drift, "face_iou": face_iou}


def _locality_block(
    x: np.ndarray,
    outside: np.ndarray,
    b: int,
    lo_hi: tuple[float, float],
    bufs: list[np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(k, m, 3, h, w) pixels in [-1, 1] -> (bg_drift, face_iou), each (k,)."""
    k, m, _, h, w = x.shape
    d, tmp, d2, fg = bufs
    mean_img = x.mean(axis=1, keepdims=True)  # grid images added in grid order
    _channel_abs_diff(x, mean_img, d, tmp)
    # Sum of 3 channels in [-1, 1] units -> mean per channel in [0, 1] units: / 6.
    change = (d * outside).reshape(k, m * h * w).sum(-1, dtype=np.float64)
    bg_drift = change / (6.0 * m * int(outside.sum()))

    left = x[..., :b].mean(-1, keepdims=True)  # (k, m, 3, h, 1): each row's border colour
    right = x[..., w - b :].mean(-1, keepdims=True)
    _channel_abs_diff(x, left, d, tmp)
    _channel_abs_diff(x, right, d2, tmp)
    np.minimum(d, d2, out=d)
    # Channel sum -> channel mean (/3), then the linear ramp to [0, 1].
    lo, hi = 3 * lo_hi[0], 3 * lo_hi[1]
    np.subtract(d, np.float32(lo), out=fg)
    fg *= np.float32(1.0 / (hi - lo))
    np.clip(fg, 0.0, 1.0, out=fg)
    masks = fg.reshape(k, m, h * w)
    ref = masks.mean(axis=1, keepdims=True)
    inter = np.minimum(masks, ref, out=d.reshape(k, m, h * w)).sum(-1, dtype=np.float64)
    union = np.maximum(masks, ref, out=d2.reshape(k, m, h * w)).sum(-1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 1.0)  # both empty: the same (no) shape
    return bg_drift, iou.mean(-1)


# --- the review table and its ranking ----------------------------------------------------------
def _rank_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns an expression may use (not the score it defines)."""
    return [
        str(c)
        for c in table.columns
        if c not in ("review_score", "review_rank", "case")
        and pd.api.types.is_numeric_dtype(table[c])
    ]


def _bad_spec(spec: object, why: str, allowed: list[str]) -> ValueError:
    return ValueError(
        f"review.rank_by={spec!r}: {why}; allowed columns: {', '.join(allowed)};"
        f" functions: {', '.join(RANK_FUNCTIONS)}; operators: + - * / **"
    )


MAX_RANK_CHARS = 500
MAX_RANK_DEPTH = 100


def _depth(tree: ast.AST) -> int:
    """The nesting depth of an expression tree (counted without recursion)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def rank_scores(table: pd.DataFrame, spec: str | Mapping[str, float]) -> np.ndarray:
    """The review score of each row under ``spec`` (higher is better), float64.

    ``spec`` is either an arithmetic expression over column names, e.g.
    ``"sum_abs_corr - 0.5*max_leak - 2*bg_drift"`` (numbers, names, + - * / **,
    unary minus, parentheses, and abs/sqrt/log/exp/minimum/maximum), or a
    mapping ``{column: weight}`` meaning the weighted sum. The expression is
    parsed and evaluated here on whitelisted nodes only; nothing is handed to
    ``eval``. Unknown names or syntax raise a ValueError that lists what is allowed.
    """
    allowed = _rank_columns(table)
    cols = {c: table[c].to_numpy(dtype=np.float64) for c in allowed}
    n = len(table)
    if isinstance(spec, Mapping):
        total = np.zeros(n)
        for name, weight in spec.items():
            if name not in cols:
                raise _bad_spec(dict(spec), f"unknown column {name!r}", allowed)
            try:
                total = total + float(weight) * cols[name]
            except (TypeError, ValueError):
                raise _bad_spec(
                    dict(spec), f"weight of {name!r} is not a number", allowed
                ) from None
        return total
    if not isinstance(spec, str) or not spec.strip():
        raise _bad_spec(spec, "expected an expression or a {column: weight} mapping", allowed)
    if len(spec) > MAX_RANK_CHARS:
        raise _bad_spec(
            f"{spec[:40]}...", f"{len(spec)} characters; at most {MAX_RANK_CHARS}", allowed
        )
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        why = exc.msg if isinstance(exc, SyntaxError) else "nested too deeply"
        raise _bad_spec(spec, f"not an expression ({why})", allowed) from None
    if _depth(tree) > MAX_RANK_DEPTH:
        raise _bad_spec(spec, f"nested more than {MAX_RANK_DEPTH} levels deep", allowed)

    binops = {
        ast.Add: np.add,
        ast.Sub: np.subtract,
        ast.Mult: np.multiply,
        ast.Div: np.divide,
        ast.Pow: np.power,
    }

    def ev(node: ast.AST) -> np.ndarray | float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.Name):
            if node.id not in cols:
                raise _bad_spec(spec, f"unknown column {node.id!r}", allowed)
            return cols[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in binops:
            return binops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            val = ev(node.operand)
            return -val if isinstance(node.op, ast.USub) else val
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in RANK_FUNCTIONS
            and not node.keywords
        ):
            fn = RANK_FUNCTIONS[node.func.id]
            want = 2 if node.func.id in ("minimum", "maximum") else 1
            if len(node.args) != want:
                raise _bad_spec(spec, f"{node.func.id}() takes {want} argument(s)", allowed)
            return fn(*(ev(a) for a in node.args))
        raise _bad_spec(spec, f"{ast.unparse(node)!r} is not allowed", allowed)

    with np.errstate(all="ignore"):
        out = ev(tree)
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).copy()


def rank_by(table: pd.DataFrame, spec: str | Mapping[str, float] = DEFAULT_RANK_BY) -> pd.DataFrame:
    """``table`` best first by ``spec`` (see ``rank_scores``), with its ``review_score``.

    Ties and equal scores keep ascending case order; undefined scores (NaN) go last.
    """
    scored = table.assign(review_score=rank_scores(table, spec))
    keys = ["review_score", "case"] if "case" in scored.columns else ["review_score"]
    asc = [False, True][: len(keys)]
    return scored.sort_values(keys, ascending=asc, na_position="last", kind="mergesort")


def review_order(
    table: pd.DataFrame, spec: str | Mapping[str, float] = DEFAULT_RANK_BY
) -> pd.DataFrame:
    """The one review order (contact sheets, the page, its cards): best first.

    A screened run's own ``review_rank`` when the table has it (fixed when it was
    judged), else ranked now by ``spec`` (see ``rank_by``).
    """
    if "review_rank" in table.columns:
        return table.sort_values(["review_rank", "case"], kind="mergesort")
    return rank_by(table, spec)


def review_table(
    grid: np.ndarray,
    scores: np.ndarray,
    per_vector: pd.DataFrame,
    locality: Mapping[str, np.ndarray] | None,
    *,
    rank_spec: str | Mapping[str, float] = DEFAULT_RANK_BY,
    n_boot: int = 200,
    ci_level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The review columns for ``per_vector`` (same index and row order), ``REVIEW_COLUMNS``.

    ``grid`` (m, 3) intended weights, ``scores`` (n, m, 3) measured, ``locality``
    the per-vector arrays of ``locality_stats`` gathered over the run (missing
    keys give NaN columns). ``bg_drift_rel`` is bg_drift over the run's median
    bg_drift (all vectors), so 1 = typical for this generator and the ranking
    weights need no per-generator tuning. ``review_rank`` is 1 for the best
    vector of the run under ``rank_spec`` (passed or not).
    """
    grid = np.asarray(grid, dtype=np.float64)
    scores = np.asarray(scores)
    n = scores.shape[0]
    if len(per_vector) != n:
        raise ValueError(f"per_vector has {len(per_vector)} rows but scores {n} vectors")
    cols: dict[str, np.ndarray] = {}
    for k, p in enumerate(CORE_PROPERTIES):
        lo, hi = bootstrap_ci(grid[:, k], scores[:, :, k], n_boot, seed + k, ci_level)
        cols[f"{p}_corr_lo"], cols[f"{p}_corr_hi"] = lo, hi
    for k, p in enumerate(CORE_PROPERTIES):
        cols[f"{p}_spearman"] = spearman_rows(grid[:, k], scores[:, :, k])
    leak = leakage(grid, scores)
    for q, p in OFF_DIAGONAL:
        cols[f"{q}_to_{p}_r"] = leak[f"{q}_to_{p}_r"]
    for p in CORE_PROPERTIES:
        cols[f"{p}_leak"] = leak[f"{p}_leak"]
    cols["max_leak"] = leak["max_leak"]
    locality = locality or {}
    for name in LOCALITY_COLUMNS:
        arr = locality.get(name)
        arr = np.full(n, np.nan) if arr is None else np.asarray(arr, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"locality[{name!r}] has shape {arr.shape}; expected ({n},)")
        cols[name] = arr
    drift = cols["bg_drift"]
    med = float(np.nanmedian(drift)) if np.isfinite(drift).any() else math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["bg_drift_rel"] = drift / med if med > 0 else np.where(np.isfinite(drift), 0.0, np.nan)
    out = pd.DataFrame(cols, index=per_vector.index)
    ranked = rank_by(pd.concat([per_vector, out], axis=1), rank_spec)
    out["review_score"] = ranked["review_score"].reindex(per_vector.index)
    position = pd.Series(np.arange(1, n + 1), index=ranked.index)
    out["review_rank"] = position.reindex(per_vector.index).astype(np.int64)
    return out[REVIEW_COLUMNS]


def review_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Run-level summaries of the review columns (means over all vectors, NaN skipped).

    With a ``passed`` column ("O"/"X"), the same means over passed vectors are
    added as ``*_passed_mean`` when any vector passed. Undefined means are left
    out (MLflow cannot plot NaN).
    """
    names = [
        "bg_drift",
        "face_iou",
        "max_leak",
        *(f"{p}_leak" for p in CORE_PROPERTIES),
        *(f"{p}_spearman" for p in CORE_PROPERTIES),
        "review_score",
    ]
    parts = {"": table}
    if "passed" in table.columns:
        passed = table[table["passed"] == "O"]
        if len(passed):
            parts["_passed"] = passed
    out: dict[str, float] = {}
    for suffix, df in parts.items():
        for name in names:
            if name in df.columns:
                out[f"{name}{suffix}_mean"] = float(df[name].mean())
        for p in CORE_PROPERTIES:
            lo, hi = f"{p}_corr_lo", f"{p}_corr_hi"
            if lo in df.columns and hi in df.columns:
                out[f"{p}_ci_width{suffix}_mean"] = float((df[hi] - df[lo]).mean())
    return {k: v for k, v in out.items() if math.isfinite(v)}
