"""Reading Oh-LoRA's result CSVs (every layout its versions wrote) as native per-vector tables.

Pure pandas: the import app and re-judging build on it, and it is easy to test on its own.
Judging, statistics and metrics come from :mod:`ohlora_eval.pipeline.judge`; nothing is
recomputed here that it already does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ohlora_eval.errors import MissingFile, UserError
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES

# What produced every Oh-LoRA file (hard-coded in its test scripts, v2 to v4): the default
# for reading one. Versions before v3 used other cutoffs; pass those to re-judge their files.

FILE_VERDICT = "file_passed"  # the file's own passed (O/X), kept beside the recomputed one
ROUNDING = 5e-5  # Oh-LoRA wrote each r rounded to 4 decimals but judged the unrounded r


@dataclass(frozen=True)
class Layout:
    name: str
    columns: tuple[str, ...]  # all present (any order, extra columns allowed)

    def header(self) -> str:
        return ",".join(self.columns)


# Most specific first: the first whose columns are all present wins.
LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "Oh-LoRA v3.1 test result",
        ("case", "svm_group_name", "passed", *judge.CORR_COLUMNS, "sum_abs_corr"),
    ),
    Layout(
        "Oh-LoRA v2-v4 test result (vector_no, group_name)",
        ("case", "vector_no", "passed", "group_name", *judge.CORR_COLUMNS, "sum_abs_corr"),
    ),
    Layout(
        "Oh-LoRA v3.1 test result without groups",
        ("case", "passed", *judge.CORR_COLUMNS, "sum_abs_corr"),
    ),
    Layout(
        "Oh-LoRA group names of chosen vectors (no verdict)",
        ("case", "vector_no", "group_name", *judge.CORR_COLUMNS),
    ),
)
GROUP_COLUMNS = ("svm_group_name", "group_name")  # v3.1 name first, then the older one
# File columns that the native table recomputes or renames; all others are kept as they are.
_NOT_KEPT = {*judge.PER_VECTOR_COLUMNS, *GROUP_COLUMNS, judge.NO_FACE, *judge.IDENTITY_COLUMNS}


def read_ohlora_results(
    path: str | os.PathLike,
    cutoffs: Mapping[str, float],
    allow_undefined: bool = False,
) -> pd.DataFrame:
    """Any Oh-LoRA test-result layout -> ``judge.PER_VECTOR_COLUMNS`` judged with ``cutoffs``.

    Then ``file_passed`` (the file's verdict, "" where the layout has none) and the file's
    other columns (``vector_no``, ``passed_rechecked``, ...). ``sum_abs_corr`` and
    ``fail_reason`` are recomputed. ``allow_undefined`` reads an empty correlation as an
    undefined r (how this project writes one) instead of refusing it as missing.
    ``.attrs["layout"]`` names the layout found. Raises UserError naming the problem.
    """
    raw = _read_strings(path)
    layout = detect_layout(raw.columns, path)
    group_col = next((c for c in GROUP_COLUMNS if c in raw.columns), None)
    problems: list[str] = []
    cases = _integers(raw, "case", problems)
    corr = np.stack(
        [_correlations(raw, c, allow_undefined, problems) for c in judge.CORR_COLUMNS], 1
    )
    verdict = _verdicts(raw, problems) if "passed" in raw.columns else pd.Series([""] * len(raw))
    extras = {c: raw[c].to_numpy() for c in raw.columns if c not in _NOT_KEPT}
    if "vector_no" in extras:
        extras["vector_no"] = _integers(raw, "vector_no", problems)
    if not problems:
        key_columns = ["case", *(["vector_no"] if "vector_no" in extras else [])]
        _check_unique(pd.DataFrame({"case": cases, **extras})[key_columns], problems)
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
    if raw.empty:
        raise UserError(f"{path}: no rows under the header {','.join(raw.columns)}")
    groups = raw[group_col].str.strip().tolist() if group_col else None
    no_face = None
    if judge.NO_FACE in raw.columns:  # a native run whose scorer missed faces
        no_face = pd.to_numeric(raw[judge.NO_FACE], errors="coerce").fillna(0).to_numpy(int)
    identity = _identity(raw, cutoffs, path)
    table = judge.per_vector_table(corr, cutoffs, groups, cases, no_face=no_face, identity=identity)
    table[FILE_VERDICT] = verdict.to_numpy()
    for name, values in extras.items():
        table[name] = values
    table.attrs["layout"] = layout.name
    return table


def read_native_table(
    path: str | os.PathLike, what: str, required: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A ``per_vector.csv`` this project wrote, read back for comparing and charting (as
    ``pd.read_csv(..., keep_default_na=False, na_values=[""])`` reads it) after checking what
    its readers rely on: text, a ``case`` integer per row identifying it (with ``vector_no``
    where an import has one), each r a number in [-1, 1] or empty (undefined), ``passed``
    O or X, the other numbers numbers. ``what`` names the table in the one ``UserError``
    line (e.g. "per_vector.csv of run <id>"); ``required``: columns it must have besides
    ``case`` and the three r."""
    try:
        raw = _read_strings(path)
    except UserError as exc:
        raise UserError(str(exc).replace(str(path), what)) from None
    missing = [c for c in ("case", *judge.CORR_COLUMNS, *required) if c not in raw.columns]
    if missing:
        raise UserError(
            f"{what} has no column(s) {missing}: not a per-vector table of this project"
            " (a damaged file? screen or re-judge again to write a new one)"
        )
    problems: list[str] = []
    cases = _integers(raw, "case", problems)
    for column in judge.CORR_COLUMNS:
        _correlations(raw, column, True, problems)
    if "passed" in raw.columns:
        _verdicts(raw, problems)
    for column in _NUMBER_COLUMNS:
        if column in raw.columns:
            text = raw[column].str.strip()
            bad = pd.to_numeric(text, errors="coerce").isna() & ~text.str.lower().isin(["", "nan"])
            if bad.any():
                problems.append(f"{column} must be a number: {_lines(bad, raw, column)}")
    if not problems:
        keys = pd.DataFrame({"case": cases})
        if "vector_no" in raw.columns:
            keys["vector_no"] = raw["vector_no"].to_numpy()
        _check_unique(keys, problems)
    if problems:
        raise UserError(f"{what}: " + "; ".join(problems))
    return pd.read_csv(path, keep_default_na=False, na_values=[""], encoding="utf-8-sig")


# Number columns of a native table besides ``case`` and the three r.
_NUMBER_COLUMNS = (
    "sum_abs_corr",
    judge.NO_FACE,
    *(c for c in judge.IDENTITY_COLUMNS if c != "identity_note"),
)


def _identity(
    raw: pd.DataFrame, cutoffs: Mapping[str, float], path: str | os.PathLike
) -> pd.DataFrame | None:
    """A native run's identity columns (numbers; empty = not measured), or None without them.
    An identity cutoff needs them: a file without distances cannot be judged by one."""
    if "identity_max" not in raw.columns:
        if cutoffs.get("identity") is not None:
            raise UserError(
                f"{path}: cutoff.identity={cutoffs['identity']} needs identity distances, and"
                " this table has none (its run measured no identity: screen with"
                " identity=dlib_resnet, or leave cutoff.identity=null)"
            )
        return None
    missing = [c for c in judge.IDENTITY_COLUMNS if c not in raw.columns]
    if missing:
        raise UserError(f"{path}: identity columns without {missing[0]}")
    out = pd.DataFrame(index=raw.index)
    for c in judge.IDENTITY_COLUMNS:
        if c == "identity_note":
            out[c] = raw[c].fillna("").astype(str)
        else:
            out[c] = pd.to_numeric(raw[c].replace("", np.nan), errors="coerce")
    return out


def detect_layout(columns: pd.Index | list[str], path: str | os.PathLike = "") -> Layout:
    """The first of ``LAYOUTS`` whose columns are all present; a UserError saying what is."""
    found = set(columns)
    for layout in LAYOUTS:
        if found.issuperset(layout.columns):
            return layout
    names = ["(unnamed)" if str(c).startswith("Unnamed:") else str(c) for c in columns]
    shown = ",".join(names[:12]) + (f",... ({len(names)} columns)" if len(names) > 12 else "")
    accepted = "; ".join(f"{lay.header()} ({lay.name})" for lay in LAYOUTS)
    hint = ""
    if found.issuperset(judge.STATISTICS_COLUMNS):
        hint = " This is a statistics file: give it as statistics=<csv> beside path=<test result>."
    raise UserError(
        f"{path}: not an Oh-LoRA test result: columns found {shown}; accepted layouts (any column"
        f" order, extra columns kept): {accepted}.{hint}"
    )


def disagreements(table: pd.DataFrame, cutoffs: Mapping[str, float]) -> pd.DataFrame:
    """Rows where the file's own verdict differs from the recomputed one, with a note where
    an |r| sits within rounding of its cutoff (the file keeps 4 decimals of each r)."""
    file_verdict = table[FILE_VERDICT].astype(str)
    rows = table[(file_verdict != "") & (file_verdict != table["passed"])]
    cut = judge.check_cutoffs(cutoffs)
    near = [
        ", ".join(p for p in CORE_PROPERTIES if abs(abs(r[f"{p}_corr"]) - cut[p]) <= ROUNDING)
        for _, r in rows.iterrows()
    ]
    note = [f"|r| of {n} within rounding of its cutoff" if n else "" for n in near]
    keys = ["case", *(["vector_no"] if "vector_no" in rows else []), "svm_group_name"]
    out = rows[[*keys, FILE_VERDICT, "passed", *judge.CORR_COLUMNS, "fail_reason"]]
    return out.assign(note=note).reset_index(drop=True)


def read_ohlora_statistics(path: str | os.PathLike) -> pd.Series:
    """Oh-LoRA's one-row statistics file -> its ``judge.STATISTICS_COLUMNS`` as floats."""
    raw = _read_strings(path)
    missing = [c for c in judge.STATISTICS_COLUMNS if c not in raw.columns]
    if missing:
        raise UserError(
            f"{path}: not an Oh-LoRA statistics file: columns found {','.join(raw.columns)};"
            f" expected {','.join(judge.STATISTICS_COLUMNS)} (missing {','.join(missing)})"
        )
    if len(raw) != 1:
        raise UserError(f"{path}: a statistics file has one row, this one has {len(raw)}")
    row = raw[judge.STATISTICS_COLUMNS].iloc[0]
    values = pd.to_numeric(row.str.strip(), errors="coerce")
    bad = [f"{c}={row[c]!r}" for c in judge.STATISTICS_COLUMNS if pd.isna(values[c])]
    if bad:
        raise UserError(f"{path}: statistics must be numbers: {', '.join(bad)}")
    return values.astype(float)


def compare_statistics(file_stats: pd.Series, recomputed: pd.DataFrame) -> list[str]:
    """Differences between a statistics file and ``judge.statistics`` of the imported table
    ("passed: file 43, recomputed 62"); empty when they agree to the file's 4 decimals."""
    got = recomputed.iloc[0]
    out = []
    for col in judge.STATISTICS_COLUMNS:
        want, have = float(file_stats[col]), float(got[col])
        tol = 1e-9 if col in ("passed", "passed_ratio") else ROUNDING
        if not (abs(want - have) <= tol or (np.isnan(want) and np.isnan(have))):
            out.append(f"{col}: file {want:g}, recomputed {have:g}")
    return out


# --- parsing helpers -------------------------------------------------------------------------
def _read_strings(path: str | os.PathLike) -> pd.DataFrame:
    """Every cell as stripped text (empty = missing), so each column is checked by us."""
    if not os.path.isfile(path):
        raise MissingFile(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable CSV file ({str(exc).strip()})") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw


def _lines(mask: np.ndarray | pd.Series, raw: pd.DataFrame, column: str, limit: int = 5) -> str:
    """'line 5 ('abc'), line 9 ('')' for the first failing rows (header is line 1)."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(f"line {i + 2} ({raw[column].iloc[i]!r})" for i in idx[:limit])
    more = f" and {len(idx) - limit} more" if len(idx) > limit else ""
    return shown + more


def int64_cells(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Text cells -> (int64 values, mask of cells that are not an integer in the 64-bit
    range). Never wraps around: 10^30 is refused, not read as -9223372036854775808."""
    text = text.astype(str).str.strip()
    ok = np.array(text.str.fullmatch(r"[+-]?\d+").fillna(False), dtype=bool)  # writable
    values = np.zeros(len(text), dtype=np.int64)
    for i in np.flatnonzero(ok):
        v = int(text.iloc[i])
        if INT64_MIN <= v <= INT64_MAX:
            values[i] = v
        else:
            ok[i] = False
    return values, ~ok


INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _integers(raw: pd.DataFrame, column: str, problems: list[str]) -> np.ndarray:
    values, bad = int64_cells(raw[column])
    if bad.any():
        problems.append(
            f"{column} must be an integer in the 64-bit range: {_lines(bad, raw, column)}"
        )
        return np.zeros(len(raw), dtype=np.int64)
    return values


def _correlations(
    raw: pd.DataFrame, column: str, allow_undefined: bool, problems: list[str]
) -> np.ndarray:
    text = raw[column].str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    empty = (text == "") | text.str.lower().isin(["nan"])
    empty = empty.to_numpy(dtype=bool)
    junk = np.isnan(values) & ~empty
    if junk.any():
        problems.append(f"{column} must be a number: {_lines(junk, raw, column)}")
    if empty.any() and not allow_undefined:
        problems.append(f"{column} is missing: {_lines(empty, raw, column)}")
    with np.errstate(invalid="ignore"):
        outside = np.abs(values) > 1 + 1e-9
    if outside.any():
        problems.append(f"{column} is a correlation, in [-1, 1]: {_lines(outside, raw, column)}")
    return values


def _verdicts(raw: pd.DataFrame, problems: list[str]) -> pd.Series:
    text = raw["passed"].str.strip().str.upper()
    bad = ~text.isin(["O", "X"]).to_numpy(dtype=bool)
    if bad.any():
        problems.append(f"passed must be O or X: {_lines(bad, raw, 'passed')}")
    return text.reset_index(drop=True)


def _check_unique(keys: pd.DataFrame, problems: list[str]) -> None:
    dup = keys.duplicated(keep=False).to_numpy(dtype=bool)
    if dup.any():
        what = "case and vector_no" if keys.shape[1] > 1 else "case"
        lines = ", ".join(str(i + 2) for i in np.flatnonzero(dup)[:6])
        problems.append(f"{what} must identify one row each; repeated on lines {lines}")
