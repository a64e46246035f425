"""The offline review page: one card per passed vector (and, marked, per near miss),
checkboxes that build the select command.

A person makes the final pick by looking at contact sheets; the page puts the
measured review aids beside each sheet and turns the ticked cards into the
exact ``python -m ohlora_eval.select`` command to paste. It is one static HTML
file with inline CSS and a few lines of vanilla JavaScript (kept in ``static/``, package
data, and written into the page). It loads nothing from the network: no CDN, no web
fonts, no external URLs.

Where the contact sheets come from (``SheetLink``): each image has a relative
``src`` for the page opened from disk (sheets beside it, or a sheet another run of
the same measurement logged, by a relative path in the same store) and names the
run and artifact path that hold the sheet. MLflow's UI shows an .html artifact in a
sandboxed iframe made from a ``blob:`` URL, where relative links cannot resolve; there
the page asks the serving MLflow for each sheet (``get-artifact?path=..&run_uuid=..``),
so a re-judged run shows the measuring run's sheets without storing them again.
"""

from __future__ import annotations

import html
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

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


def _asset(name: str) -> str:
    """The text of ``static/<name>``, package data, as it goes between its tag and the tag's
    end (on a line of its own after the opening tag)."""
    return "\n" + (files("ohlora_eval.review") / "static" / name).read_text(encoding="utf-8")


_CSS = _asset("page.css")
_JS = _asset("page.js")  # the pick bar: ticked cards -> the select command
# Inside MLflow's UI the page is a blob: document (relative links cannot resolve) and opened
# through get-artifact its base is the endpoint: then ask that MLflow for each sheet by run
# and path. The MLflow page's own address (the referrer) keeps a --static-prefix.
_IMG_JS = _asset("sheet_images.js")


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, fmt: str = "{:.3f}") -> str:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(v) else fmt.format(v)


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


def _flag(text: str, on: bool, why: str) -> str:
    return f'<span class="warn" title="{_e(why)}">{text}</span>' if on else text


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


def _picture(case: int, sheet: SheetLink | None, alt: str | None = None) -> str:
    if sheet is None or (sheet.src is None and sheet.run_id is None):
        return '<div class="nosheet">no contact sheet for this vector</div>'
    src = f' src="{_e(sheet.src)}"' if sheet.src else ""
    where = (
        f' data-run="{_e(sheet.run_id)}" data-path="{_e(sheet.path)}"'
        if sheet.run_id and sheet.path
        else ""
    )
    return (
        f'<img{src}{where} loading="lazy"'
        f' alt="{_e(alt or f"contact sheet of the 50 edits of case {case}")}">'
    )


def _identity_text(row: pd.Series, threshold: float | None, grid: np.ndarray | None) -> str:
    """The card's identity figures: the largest distance of an edited face from the unedited
    one, the cell that has it, the mean, and the largest along each property's edit."""
    worst = _get(row, "identity_max")
    unaligned = _get(row, "identity_unaligned")
    if not math.isfinite(worst):
        if math.isfinite(unaligned) and unaligned > 0:
            why = str(row.get("identity_note", "") or "")
            why = "" if why.lower() == "nan" else why
            return _flag(f"{int(unaligned)} faces not aligned", True, why or "not aligned")
        return '<span class="note">not measured (outside identity.scope)</span>'
    cell = _cell_name(row.get("identity_worst_pm_idx"), grid)
    along = ", ".join(f"{p} {_num(row.get(f'identity_{p}'), '{:.2f}')}" for p in CORE_PROPERTIES)
    far = threshold is not None and worst > threshold
    why = f"farther than {threshold:g} from the unedited face: another person" if far else ""
    return (
        f"{_flag(f'max {worst:.3f}', far, why)} at {_e(cell)}"
        f' <span class="note">(mean {_num(row.get("identity_mean"))};'
        f" largest along one edit: {along})</span>"
    )


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
) -> str:
    case = int(row["case"])
    group = str(row.get("svm_group_name", "") or "")
    if group.lower() == "nan":
        group = ""
    if near:
        prop = str(row["near_prop"])
        reason = str(row.get("fail_reason", ""))
        if prop == "identity":  # every r cleared its cutoff; identity did not
            text = next((x for x in reason.split("; ") if x.startswith("identity")), reason)
        else:
            r = abs(_get(row, f"{prop}_corr"))
            text = near_miss_text(prop, r, float(cutoffs[prop]), float(row["near_short"]))
        head = [
            f"<h2>near miss {position} of {total} &middot; case {case}</h2>",
            f'<span class="nearbadge" title="{_e(reason)}">failed: {_e(text)}</span>',
        ]
    else:
        head = [f"<h2>#{position} of {total} &middot; case {case}</h2>"]
    if group:
        head.append(f'<span class="note">group {_e(group)}</span>')
    head.append(f'<span class="score">review score {_num(row.get("review_score"))}</span>')
    failed = " data-failed" if near else ""
    head.append(
        f'<label class="pick"><input type="checkbox" class="pick-box" value="{case}"'
        f' id="pick-{case}"{failed} aria-label="pick case {case}">pick</label>'
    )
    picture = _picture(case, sheet)

    rows = []
    for p in CORE_PROPERTIES:
        r = _get(row, f"{p}_corr")
        lo, hi = _get(row, f"{p}_corr_lo"), _get(row, f"{p}_corr_hi")
        cut = float(cutoffs.get(p, math.nan))
        # The interval reaches below the cutoff when the |r| bound nearest 0 does.
        near0 = min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0
        weak = math.isfinite(lo) and math.isfinite(cut) and near0 < cut
        ci = f"[{_num(lo, '{:+.3f}')}, {_num(hi, '{:+.3f}')}]"
        leak = _get(row, f"{p}_leak")
        rows.append(
            f"<tr><td>{_e(p)}</td><td>{_num(r, '{:+.3f}')}</td>"
            f"<td>{_flag(ci, weak, f'the 95% interval reaches below the cutoff {cut}')}</td>"
            f"<td>{_num(row.get(f'{p}_spearman'), '{:+.3f}')}</td>"
            f"<td>{_flag(_num(leak), leak >= FLAG_LEAK, f'|r| >= {FLAG_LEAK}')}</td></tr>"
        )
    pairs = [(abs(_get(row, f"{q}_to_{p}_r")), q, p) for q, p in OFF_DIAGONAL]
    pairs = [t for t in pairs if math.isfinite(t[0])]
    worst = max(pairs) if pairs else None
    worst_txt = (
        f"{_e(worst[1])} edit &rarr; {_e(worst[2])} score, |r| {_num(worst[0])}" if worst else "n/a"
    )
    drift, rel, iou = _get(row, "bg_drift"), _get(row, "bg_drift_rel"), _get(row, "face_iou")
    loc = (
        f"<dt>worst leak</dt><dd>{_flag(worst_txt, bool(worst and worst[0] >= FLAG_LEAK), '')}</dd>"
        f"<dt>background drift</dt><dd>{_flag(_num(drift, '{:.4f}'), rel >= FLAG_DRIFT_REL, '')}"
        f' <span class="note">({_num(rel, "{:.2f}")}&times; run median)</span></dd>'
        f"<dt>face-shape IoU</dt><dd>{_flag(_num(iou), iou <= FLAG_FACE_IOU, '')}</dd>"
    )
    p_again = _get(row, "re_pass_prob")
    if math.isfinite(p_again):  # a re-test (python -m ohlora_eval.retest) measured it
        again = (
            f"{_num(p_again, '{:.2f}')} [{_num(row.get('re_pass_lo'), '{:.2f}')},"
            f" {_num(row.get('re_pass_hi'), '{:.2f}')}]"
        )
        why = f"passed again in fewer than half of the re-tests (below {FLAG_RE_PASS})"
        loc += f"<dt>re-pass probability</dt><dd>{_flag(again, p_again < FLAG_RE_PASS, why)}</dd>"
    data = f' data-rank="{position}"'
    if identity is not None:
        loc += f"<dt>identity distance</dt><dd>{_identity_text(row, *identity)}</dd>"
        worst = _get(row, "identity_max")
        data += f' data-identity="{worst:.6f}"' if math.isfinite(worst) else ' data-identity=""'
    return (
        f'<article class="card{" near" if near else ""}" id="card-{case}" data-case="{case}"'
        f"{data}>"
        f"<header>{''.join(head)}</header>"
        f'<div class="sheet">{picture}</div>'
        '<div class="figures"><table class="r"><thead><tr><th>property</th><th>r</th>'
        "<th>95% CI of r</th><th>Spearman &rho;</th><th>leak into</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        f'<dl class="loc">{loc}</dl></div></article>'
    )


def _legend(
    ci_level: float,
    spearman_max: Mapping[str, float] | None,
    identity: tuple[float | None, np.ndarray | None] | None = None,
) -> str:
    who = ""
    if identity is not None:
        at = f" {identity[0]:g}" if identity[0] is not None else " the threshold"
        who = (
            "<li><b>identity distance</b>: how far each edited face is from the vector's"
            " unedited face by the identity model (dlib's face descriptor: below 0.6 is the"
            " same person); max is the farthest edit (the cell named), and the largest"
            " distance between two faces that differ only in one property's weight says which"
            f" edit changes the person; amber beyond{at}. Red frames on the sheet mark the"
            " same cells. Order the cards by it at the top.</li>"
        )
    ceil = ""
    if spearman_max:
        parts = ", ".join(f"{_e(p)} {v:.3f}" for p, v in spearman_max.items())
        ceil = f" With this grid's repeated weights its maximum is: {parts}."
    return (
        "<details class=legend><summary>What the figures mean</summary><ul>"
        f"<li><b>95% CI of r</b>: a percentile bootstrap interval ({ci_level:.0%}) of Pearson r,"
        " resampling the vector's grid images; amber when it reaches below the cutoff.</li>"
        "<li><b>Spearman &rho;</b>: rank correlation of intended weight and measured score;"
        f" near r means the response is monotone, not just linear on average.{ceil}</li>"
        "<li><b>leak into</b> p: the largest |r| between another property's edit weight and"
        f" p's measured score (0 = the other edits leave p alone); amber from {FLAG_LEAK}.</li>"
        "<li><b>background drift</b>: mean absolute pixel change outside the face region"
        " ([0, 1] units, per channel) against the vector's mean grid image; amber from"
        f" {FLAG_DRIFT_REL:g}&times; the run's median.</li>"
        "<li><b>face-shape IoU</b>: mean soft IoU of each image's head silhouette (pixels"
        " unlike the border colour of their row) with the vector's mean silhouette; 1 = the"
        f" shape never changes; amber at {FLAG_FACE_IOU} or below.</li>"
        "<li><b>the contact sheets</b>: a row per mouth weight, a column per eyes and pose"
        " weight; the pose weights are the configured grid's (Oh-LoRA v3.1's run -1.8 ..."
        " +0.6, not centred on 0): Pearson r is taken against the weights, so the offset"
        " does not change it.</li>"
        "<li><b>near miss</b> (dashed amber cards after the passed ones): failed, but every"
        " |r| is within <code>review.near_miss_margin</code> of its cutoff (or, with an"
        " identity cutoff, every |r| cleared its cutoff and the identity distance did not).</li>"
        "<li>Tick the vectors to keep; the bar at the top builds the select command"
        f" (cases in ascending order; <code>{ALLOW_FAILED}</code> when a near miss is"
        f" ticked).</li>{who}</ul></details>"
    )


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
    return SheetLink(f"sheets/{name}", run_id, f"{artifact_dir}/sheets/{name}")


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
    rank_spec, max_cards = settings.rank_by, settings.max_cards
    near_miss_margin = settings.near_miss_margin
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shown, near, total, n_near = shown_rows(
        per_vector,
        cutoffs,
        rank_spec=rank_spec,
        max_cards=max_cards,
        near_miss_margin=near_miss_margin,
    )
    has_identity = "identity_max" in per_vector.columns
    identity = (inputs.identity_threshold, inputs.grid) if has_identity else None
    cards = []
    for position, (_, row) in enumerate(shown.iterrows(), start=1):
        case = int(row["case"])
        link = _link(case, sheets.get(case), out_dir, run_id, artifact_dir)
        cards.append(_card(row, position, total, link, cutoffs, identity=identity))
    if not cards:
        body = (
            '<p class="empty">No vector passed the cutoffs in this run, so there is nothing to'
            " pick. Lower a cutoff (e.g. <code>cutoff.eyes=0.9</code>) or screen more vectors"
            " (<code>sampling.n_vectors</code>).</p>"
        )
    else:
        body = "".join(cards)
        if len(shown) < total:
            body += (
                f'<p class="note">{total - len(shown)} more passed vectors are not shown'
                f" (review.max_cards={int(max_cards or 0)}).</p>"
            )
    if near_miss_margin > 0:
        body += (
            f'<h2 class="section" id="near-misses">Near misses: failed by at most'
            f" {near_miss_margin:g} in |r| ({n_near})</h2>"
        )
        for position, (_, row) in enumerate(near.iterrows(), start=1):
            case = int(row["case"])
            link = _link(case, sheets.get(case), out_dir, run_id, artifact_dir)
            cards.append(_card(row, position, n_near, link, cutoffs, True, identity))
            body += cards[-1]
        if len(near) < n_near:
            body += (
                f'<p class="note">{n_near - len(near)} more near misses are not shown'
                f" (review.max_cards={int(max_cards or 0)} cards in all).</p>"
            )
        elif not n_near:
            body += '<p class="note">None.</p>'
    cut = ", ".join(f"{_e(p)} {_e(cutoffs[p])}" for p in CORE_PROPERTIES if p in cutoffs)
    if cutoffs.get("identity") is not None:
        cut += f"; identity distance &le; {_e(cutoffs['identity'])}"
    order = ""
    if has_identity:
        order = (
            '<label class="order">order cards by <select id="order">'
            '<option value="rank">review rank</option>'
            '<option value="identity-desc">identity distance, largest first</option>'
            '<option value="identity-asc">identity distance, smallest first</option>'
            "</select></label>"
        )
    spec = rank_spec if isinstance(rank_spec, str) else dict(rank_spec)
    n_all = len(per_vector)
    near_txt = f" &middot; {n_near} near misses (within {near_miss_margin:g})" if n_near else ""
    note, title, command = inputs.note, inputs.title, inputs.command
    text = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}: run {_e(run_id)}</title><style>{_CSS}</style></head>"
        f'<body data-run-id="{_e(run_id)}" data-command="{_e(command)}"'
        f' data-allow-failed="{_e(ALLOW_FAILED)}">'
        f'<header class="top"><h1>{_e(title)}</h1>'
        f'<p class="meta">run <code>{_e(run_id)}</code> &middot; {total} of {n_all} vectors'
        f" passed (cutoffs |r| &ge; {cut}){near_txt} &middot; ranked by <code>{_e(spec)}</code></p>"
        + (f'<p class="meta">{_e(note)}</p>' if note else "")
        + f"{_legend(settings.ci_level, spearman_ceilings(inputs.grid))}</header>"
        '<div class="bar" role="region" aria-label="selection">'
        '<span><b id="count">0</b> picked</span>'
        '<code class="cmd" id="command" aria-live="polite"></code>'
        '<span class="hint" id="hint">tick vectors below to build the select command</span>'
        '<button type="button" id="copy" disabled>Copy command</button>'
        '<button type="button" id="clear" disabled>Clear</button>'
        f'<span class="status" id="status" aria-live="polite"></span>{order}</div>'
        f"<main>{body}</main><script>{_IMG_JS}</script><script>{_JS}</script></body></html>\n"
    )
    path = out_dir / "index.html"
    path.write_text(text, encoding="utf-8")
    return path


def write_sheet_gallery(
    out_dir: Path, title: str, items: Sequence[tuple[str, SheetLink | None]]
) -> Path:
    """``out_dir/index.html``: captioned contact sheets by link (a run's grids), no copies."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = "".join(
        f"<figure><figcaption>{_e(caption)}</figcaption>"
        f'<div class="sheet">{_picture(0, link, caption)}</div></figure>'
        for caption, link in items
    )
    page = (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f'<header class="top"><h1>{_e(title)}</h1></header>'
        f'<div class="gallery">{figures or "<p class=empty>none</p>"}</div>'
        f"<script>{_IMG_JS}</script></body></html>\n"
    )
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
