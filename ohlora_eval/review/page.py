"""The offline review page: one card per passed vector (and, marked, per near miss),
checkboxes that build the select command.

A person makes the final pick by looking at contact sheets; the page puts the
measured review aids beside each sheet and turns the ticked cards into the
exact ``python -m ohlora_eval.select`` command to paste. It is one static HTML
file rendered from the Jinja2 template ``templates/page.html`` (autoescaped), with the CSS
and the few lines of vanilla JavaScript of ``static/`` (package data) written into it. It
loads nothing from the network: no CDN, no web fonts, no external URLs. This module
chooses the cards and works out their figures; the template lays them out.

Where the contact sheets come from (``SheetLink``): each image has a relative
``src`` for the page opened from disk (sheets beside it, or a sheet another run of
the same measurement logged, by a relative path in the same store) and names the
run and artifact path that hold the sheet. MLflow's UI shows an .html artifact in a
sandboxed iframe made from a ``blob:`` URL, where relative links cannot resolve; there
the page asks the serving MLflow for each sheet (``get-artifact?path=..&run_uuid=..``),
so a re-judged run shows the measuring run's sheets without storing them again.
"""

from __future__ import annotations

import functools
import math
import posixpath
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.review.correlations import OFF_DIAGONAL, spearman_ceilings
from ohlora_eval.review.defaults import DEFAULT_RANK_BY
from ohlora_eval.review.settings import ReviewSettings
from ohlora_eval.review.table import review_order

# Visual flags only (they change a colour, never a verdict).
FLAG_LEAK = 0.3  # |r| of another edit with this property's score
FLAG_DRIFT_REL = 2.0  # background drift, multiples of the run's median
FLAG_FACE_IOU = 0.8  # silhouette overlap across the grid
FLAG_RE_PASS = 0.5  # share of noisy re-measurements in which the vector passed again

SELECT_COMMAND = "python -m ohlora_eval.select"
ALLOW_FAILED = "allow_failed=true"  # what select needs to record a vector that failed


@dataclass(frozen=True)
class SheetLink:
    """Where one contact sheet is, for a page: ``src`` relative to the page on disk (None:
    not reachable from disk), and the run and artifact path that hold it in MLflow."""

    src: str | None
    run_id: str | None = None
    path: str | None = None
    moving: bool = True  # its motion preview (``preview_of``) lies beside it

    @property
    def preview(self) -> SheetLink | None:
        """Where the sheet's motion preview is (the same place, ``.gif``), if it has one."""
        if not self.moving:
            return None
        src, path = self.src, self.path
        return SheetLink(src and preview_of(src), self.run_id, path and preview_of(path), False)


def preview_of(sheet: str) -> str:
    """The motion preview kept beside a contact sheet: ``case_00012.png`` -> ``case_00012.gif``
    (a file, link or artifact path)."""
    return posixpath.splitext(sheet)[0] + ".gif"


@dataclass(frozen=True)
class PageInputs:
    """What a review page shows besides its contact sheets: a run's ``per_vector`` table with
    the review columns (``review_table``) and the cutoffs it was judged by, and the words
    around the cards. ``grid`` (the run's edit grid) gives the legend the largest Spearman
    rho its repeated weights allow; ``note`` is one line of plain text under the title;
    ``command`` is what the ticked cases complete (``SELECT_COMMAND``, with the store's key
    when it is not ./mlruns)."""

    run_id: str
    per_vector: pd.DataFrame
    cutoffs: Mapping[str, float]
    grid: np.ndarray | None = None
    note: str = ""
    command: str = SELECT_COMMAND
    title: str = "ohlora_eval review"
    identity_threshold: float | None = None  # the identity cutoff or model's same person


def _num(value: object, fmt: str = "{:.3f}", missing: str = "n/a") -> str:
    """``value`` formatted, or ``missing`` where it is not a finite number (the templates'
    ``num`` filter)."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return missing
    return missing if not math.isfinite(v) else fmt.format(v)


_STATIC = {"css": "page.css", "page_js": "page.js", "sheet_images_js": "sheet_images.js"}


@functools.cache
def _template(name: str) -> jinja2.Template:
    """``templates/<name>``, autoescaped, with the ``static/`` files it writes in."""
    static = files("ohlora_eval.review") / "static"
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ohlora_eval.review"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = _num
    env.tests["finite"] = math.isfinite
    for key, asset in _STATIC.items():  # package data, written in as it is
        env.globals[key] = Markup((static / asset).read_text(encoding="utf-8"))
    return env.get_template(name)


def _render(out_dir: Path, name: str, **values: Any) -> Path:
    path = Path(out_dir) / "index.html"
    path.write_text(_template(name).render(**values), encoding="utf-8")
    return path


def near_miss_text(prop: str, r: float, cutoff: float, short: float) -> str:
    """ "pose |r| 0.8799 < 0.88 (short by 0.0001)": with as many decimals (3 at least) as it
    takes for |r| to read below its cutoff and the shortfall to read above zero."""
    digits = 3
    while digits < 12 and (
        f"{r:.{digits}f}" == f"{cutoff:.{digits}f}" or float(f"{short:.{digits}f}") == 0
    ):
        digits += 1
    return f"{prop} |r| {r:.{digits}f} < {cutoff:g} (short by {short:.{digits}f})"


def _get(row: pd.Series, col: str) -> float:
    v = row.get(col, np.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _text(row: pd.Series, col: str) -> str:
    text = str(row.get(col, "") or "")
    return "" if text.lower() == "nan" else text


def _ranked_passed(per_vector: pd.DataFrame, rank_spec: str | Mapping[str, float]) -> pd.DataFrame:
    return review_order(per_vector[per_vector["passed"] == "O"], rank_spec)


def near_misses(
    per_vector: pd.DataFrame,
    cutoffs: Mapping[str, float],
    margin: float,
    rank_spec: str | Mapping[str, float] = DEFAULT_RANK_BY,
) -> pd.DataFrame:
    """Failed vectors that missed by at most ``margin`` (``pipeline.judge.near_misses``; 0 =
    none), closest first (then in review order), with ``near_short`` (the largest
    ``cutoff - |r|``) and ``near_prop`` (the property that falls shortest)."""
    if margin <= 0 or per_vector.empty:
        return per_vector.iloc[:0].assign(near_short=pd.Series(dtype=float), near_prop="")
    failed = per_vector["passed"] != "O"
    mask = judge.near_misses(per_vector, cutoffs, margin) & failed
    if judge.identity_cutoff(cutoffs) is not None:  # cleared every r cutoff, failed identity
        mask |= failed & judge.r_passed(per_vector)
    near = review_order(per_vector[mask], rank_spec)
    gaps = pd.DataFrame(
        {p: float(cutoffs[p]) - near[f"{p}_corr"].astype(float).abs() for p in CORE_PROPERTIES},
        index=near.index,
    )
    short = gaps.max(axis=1).clip(lower=0.0)
    prop = gaps.idxmax(axis=1).where(short > 0, "identity")
    near = near.assign(near_short=short, near_prop=prop)
    return near.sort_values("near_short", kind="mergesort")


def _identity(row: pd.Series, threshold: float | None, grid: np.ndarray | None) -> dict:
    """The card's identity figures: the largest distance of an edited face from the unedited
    one, the cell that has it, the mean, and the largest along each property's edit (or how
    many faces were not aligned, or nothing measured)."""
    worst, unaligned = _get(row, "identity_max"), _get(row, "identity_unaligned")
    if not math.isfinite(worst):
        missing = math.isfinite(unaligned) and unaligned > 0
        note = _text(row, "identity_note") or "not aligned"
        return {"worst": None, "unaligned": int(unaligned) if missing else 0, "note": note}
    return {
        "worst": worst,
        "unaligned": 0,
        "cell": _cell_name(row.get("identity_worst_pm_idx"), grid),
        "mean": row.get("identity_mean"),
        "along": [(p, row.get(f"identity_{p}")) for p in CORE_PROPERTIES],
        "far": threshold is not None and worst > threshold,
        "threshold": threshold,
    }


def _cell_name(pm_idx: object, grid: np.ndarray | None) -> str:
    try:
        i = int(float(pm_idx))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    if grid is None or not 0 <= i < len(grid):
        return f"cell pm_idx {i}"
    return " ".join(f"{p} {float(w):+.1f}" for p, w in zip(CORE_PROPERTIES, grid[i]))


def _card(
    row: pd.Series,
    position: int,
    total: int,
    sheet: SheetLink | None,
    cutoffs: Mapping[str, float],
    near: bool = False,
    identity: tuple[float | None, np.ndarray | None] | None = None,
) -> dict:
    """What ``templates/page.html`` shows on one card (``figure``: a number of its row, NaN where
    the run has none)."""
    get = functools.partial(_get, row)
    card: dict[str, Any] = {
        "case": int(row["case"]),
        "position": position,
        "total": total,
        "sheet": sheet,
        "near": near,
        "group": _text(row, "svm_group_name"),
        "figure": get,
        "identity": None if identity is None else _identity(row, *identity),
    }
    if near:
        prop, card["reason"] = str(row["near_prop"]), str(row.get("fail_reason", ""))
        if prop == "identity":  # every r cleared its cutoff; identity did not
            reasons = card["reason"].split("; ")
            card["near_text"] = next(
                (x for x in reasons if x.startswith("identity")), card["reason"]
            )
        else:
            short = float(row["near_short"])
            card["near_text"] = near_miss_text(
                prop, abs(get(f"{prop}_corr")), float(cutoffs[prop]), short
            )
    card["props"] = []
    for p in CORE_PROPERTIES:
        lo, hi, cut = get(f"{p}_corr_lo"), get(f"{p}_corr_hi"), float(cutoffs.get(p, math.nan))
        near0 = min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0  # the |r| bound nearest 0
        weak = math.isfinite(lo) and math.isfinite(cut) and near0 < cut  # reaches below it
        card["props"].append({"name": p, "lo": lo, "hi": hi, "cut": cut, "weak": weak})
    pairs = [(abs(get(f"{q}_to_{p}_r")), q, p) for q, p in OFF_DIAGONAL]
    pairs = [t for t in pairs if math.isfinite(t[0])]
    card["worst"] = max(pairs) if pairs else None
    return card


def shown_rows(
    per_vector: pd.DataFrame,
    cutoffs: Mapping[str, float],
    *,
    rank_spec: str | Mapping[str, float] = DEFAULT_RANK_BY,
    max_cards: int | None = None,
    near_miss_margin: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The cards a page shows: (passed, near misses, all passed, all near misses).

    Passed vectors in review order come first; near misses (``near_misses``) fill what is
    left of ``max_cards`` (None: no limit)."""
    ranked = _ranked_passed(per_vector, rank_spec)
    near = near_misses(per_vector, cutoffs, near_miss_margin, rank_spec)
    if max_cards is None:
        return ranked, near, len(ranked), len(near)
    budget = max(0, int(max_cards))
    shown = ranked.head(budget)
    return shown, near.head(budget - len(shown)), len(ranked), len(near)


def _link(
    case: int, src: Path | SheetLink | None, out_dir: Path, run_id: str, artifact_dir: str
) -> SheetLink | None:
    """A sheet given as a file is copied beside the page (``sheets/``); a link is used as is."""
    if src is None or isinstance(src, SheetLink):
        return src
    if not Path(src).is_file():
        return None
    sheet_dir = out_dir / "sheets"
    sheet_dir.mkdir(exist_ok=True)
    name = f"case_{case:05d}{Path(src).suffix.lower() or '.png'}"
    if Path(src).resolve() != (sheet_dir / name).resolve():
        shutil.copyfile(src, sheet_dir / name)
    moving = Path(preview_of(str(src)))  # its motion preview, where one was made
    if moving.is_file() and moving.resolve() != (sheet_dir / preview_of(name)).resolve():
        shutil.copyfile(moving, sheet_dir / preview_of(name))
    link = f"sheets/{name}"
    return SheetLink(
        link, run_id, f"{artifact_dir}/{link}", (sheet_dir / preview_of(name)).is_file()
    )


def write_review_page(
    out_dir: Path,
    inputs: PageInputs,
    sheets: Mapping[int, Path | SheetLink],
    settings: ReviewSettings,
    *,
    artifact_dir: str = "review",
) -> Path:
    """Write ``out_dir/index.html``; each shown card's sheet given as a file is copied to
    ``out_dir/sheets/``, one given as a ``SheetLink`` is linked where it is.

    Cards are the passed rows of ``inputs.per_vector`` in ``review_rank`` order (or ranked
    by ``settings.rank_by`` when the column is missing), then its near misses (failed by
    at most ``settings.near_miss_margin`` in every property, closest first), clearly
    marked, at most ``settings.max_cards`` cards in all (None: no limit); the legend
    names ``settings.ci_level``. ``sheets`` maps case -> contact sheet; a shown case
    without one gets a placeholder. ``artifact_dir`` is where the page lies in its run's
    artifacts (copied sheets are named by it). The command lists cases in ascending
    order, so the same pick always gives the same command, with ``allow_failed=true``
    when a near miss is ticked. Returns the page's path.
    """
    run_id, per_vector, cutoffs = inputs.run_id, inputs.per_vector, inputs.cutoffs
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown, near, total, n_near = shown_rows(
        per_vector,
        cutoffs,
        rank_spec=settings.rank_by,
        max_cards=settings.max_cards,
        near_miss_margin=settings.near_miss_margin,
    )
    has_identity = "identity_max" in per_vector.columns
    identity = (inputs.identity_threshold, inputs.grid) if has_identity else None

    def cards(rows: pd.DataFrame, of: int, near: bool) -> list[dict]:
        out = []
        for position, (_, row) in enumerate(rows.iterrows(), start=1):
            link = _link(
                int(row["case"]), sheets.get(int(row["case"])), out_dir, run_id, artifact_dir
            )
            out.append(_card(row, position, of, link, cutoffs, near, identity))
        return out

    spec = settings.rank_by
    return _render(
        out_dir,
        "page.html",
        title=inputs.title,
        run_id=run_id,
        command=inputs.command,
        note=inputs.note,
        allow_failed=ALLOW_FAILED,
        properties=CORE_PROPERTIES,
        cutoffs=cutoffs,
        total=total,
        n_all=len(per_vector),
        n_near=n_near,
        margin=settings.near_miss_margin,
        max_cards=int(settings.max_cards or 0),
        rank_by=spec if isinstance(spec, str) else dict(spec),
        ci_level=settings.ci_level,
        spearman_max=spearman_ceilings(inputs.grid),
        has_identity=has_identity,
        cards=cards(shown, total, False),
        near_cards=cards(near, n_near, True),
        flags={
            "leak": FLAG_LEAK,
            "drift_rel": FLAG_DRIFT_REL,
            "face_iou": FLAG_FACE_IOU,
            "re_pass": FLAG_RE_PASS,
        },
    )


def write_sheet_gallery(
    out_dir: Path, title: str, items: Sequence[tuple[str, SheetLink | None]]
) -> Path:
    """``out_dir/index.html``: captioned contact sheets by link (a run's grids), no copies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return _render(out_dir, "gallery.html", title=title, items=items)
