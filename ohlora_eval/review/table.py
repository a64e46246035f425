"""The review table: the per-vector review columns (``REVIEW_COLUMNS``), their run metrics,
and the ranking every review shows vectors in (``review.rank_by``).

The columns gather the intervals and leakage of ``correlations`` and the locality figures of
``locality``; the ranking is an expression over the table's columns, parsed and evaluated on
whitelisted nodes only.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from ohlora_eval.errors import ConfigError
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.review.correlations import OFF_DIAGONAL, bootstrap_ci, leakage, spearman_rows
from ohlora_eval.review.defaults import DEFAULT_RANK_BY
from ohlora_eval.review.locality import LOCALITY_COLUMNS

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


def _rank_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns an expression may use (not the score it defines)."""
    return [
        str(c)
        for c in table.columns
        if c not in ("review_score", "review_rank", "case")
        and pd.api.types.is_numeric_dtype(table[c])
    ]


def _bad_spec(spec: object, why: str, allowed: list[str]) -> ConfigError:
    return ConfigError(
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
    ``eval``. Unknown names or syntax raise a ConfigError that lists what is allowed.
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
    rank_spec: str | Mapping[str, float],
    n_boot: int,
    ci_level: float,
    seed: int,
) -> pd.DataFrame:
    """The review columns for ``per_vector`` (same index and row order), ``REVIEW_COLUMNS``.

    ``grid`` (m, 3) intended weights, ``scores`` (n, m, 3) measured, ``locality``
    the per-vector arrays of ``locality_stats`` gathered over the run (missing
    keys give NaN columns). ``bg_drift_rel`` is bg_drift over the run's median
    bg_drift (all vectors), so 1 = typical for this generator and the ranking
    weights need no per-generator tuning. ``review_rank`` is 1 for the best
    vector of the run under ``rank_spec`` (passed or not); ``n_boot``, ``ci_level`` and
    ``seed`` draw the intervals (the ``review.*`` settings of those names).
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
