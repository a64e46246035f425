"""Pictures for people: contact sheets of a vector's edits, their motion previews and a run's
summary plot."""

from __future__ import annotations

import functools
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ohlora_eval.pipeline.protocols import CORE_PROPERTIES


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels, loaded once per size."""
    return ImageFont.load_default(size=size)


def to_uint8(images: Tensor) -> np.ndarray:
    """(n, 3, H, W) in [-1, 1] -> (n, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.byte().permute(0, 2, 3, 1).numpy()


IDENTITY_MARK = (214, 39, 40)  # the frame of a cell whose face is another person


def contact_sheet(
    images: Tensor,
    grid: np.ndarray,
    title: str,
    min_tile: int = 128,
    max_tile: int = 4096,
    identity: tuple[np.ndarray, float] | None = None,
    reference: Tensor | None = None,
) -> Image.Image:
    """One row per mouth weight, one column per (eyes, pose) pair, labelled, and a line
    under the grid on its pose axis (``reference``: the unedited face, (1, 3, H, W), shown
    in a column of its own to the right, in the row of the mouth weight nearest 0).

    ``images`` are the grid's edits in ``pm_idx`` order (``grid`` rows). Small
    images are enlarged by an integer factor to at least ``min_tile``; large ones
    are reduced (area average) to at most ``max_tile``. The labels' size grows with the
    tiles, so they stay readable where a page shows the sheet scaled down. ``identity``:
    (each cell's identity distance from the unedited face, the threshold): a cell past the
    threshold gets a red frame and its distance, and the line under the grid says so.
    """
    pix = to_uint8(images)
    n, h, w, _ = pix.shape
    th, tw = tile_size(h, w, min_tile, max_tile)
    mouth_vals = sorted(set(grid[:, 1]))
    col_keys = sorted({(e, p) for e, p in grid[:, [0, 2]]})
    size = max(11, tw // 9)  # about 14 px for 128-px tiles
    font = _font(size)
    line = size + 4
    top, left, bottom = 4 + 3 * line, 5 * size, line + 8
    width, height = left + tw * len(col_keys), top + th * len(mouth_vals)
    gap = tw // 4
    if reference is not None:
        width += gap + tw
    sheet = Image.new("RGB", (width, height + bottom), "white")
    draw = ImageDraw.Draw(sheet)
    if reference is not None:
        x0 = left + tw * len(col_keys) + gap
        r = int(np.argmin(np.abs(np.asarray(mouth_vals))))
        draw.text((x0 + 3, 4 + line), "unedited\n(all 0)", fill="black", font=font, spacing=4)
        unedited = Image.fromarray(to_uint8(reference)[0])
        resample = Image.NEAREST if th >= h else Image.BOX
        sheet.paste(unedited.resize((tw, th), resample), (x0, top + r * th))
    draw.text((4, 4), title, fill="black", font=font)
    for c, (e, p) in enumerate(col_keys):
        at = (left + c * tw + 3, 4 + line)
        draw.text(at, f"eyes {e:+.1f}\npose {p:+.1f}", fill="black", font=font, spacing=4)
    for r, m in enumerate(mouth_vals):
        at = (4, top + r * th + th // 2 - line)
        draw.text(at, f"mouth\n{m:+.1f}", fill="black", font=font, spacing=4)
    note = pose_axis_note(grid)
    if identity is not None:
        dist, limit = np.asarray(identity[0], dtype=np.float64), float(identity[1])
        marked = int((dist > limit).sum())
        note += (
            f"\nidentity: {marked} of {n} faces farther than {limit:g} from the unedited face"
            " (red frame: another person by that threshold)"
        )
        sheet = _taller(sheet, line + 4)
        draw = ImageDraw.Draw(sheet)
    draw.text((4, height + 4), note, fill="#444444", font=font, spacing=4)
    for i in range(n):
        e, m, p = grid[i]
        r, c = mouth_vals.index(m), col_keys.index((e, p))
        resample = Image.NEAREST if th >= h else Image.BOX
        tile = Image.fromarray(pix[i]).resize((tw, th), resample)
        x0, y0 = left + c * tw, top + r * th
        sheet.paste(tile, (x0, y0))
        if identity is not None and np.isfinite(dist[i]) and dist[i] > limit:
            frame = max(2, tw // 32)
            draw.rectangle((x0, y0, x0 + tw - 1, y0 + th - 1), outline=IDENTITY_MARK, width=frame)
            label = f"{dist[i]:.2f}"
            box = draw.textbbox((0, 0), label, font=font)
            at = (x0 + frame + 1, y0 + th - frame - 2 - (box[3] - box[1]) - box[1])
            draw.rectangle(
                (at[0] - 1, at[1] + box[1] - 1, at[0] + box[2] + 1, at[1] + box[3] + 1),
                fill=IDENTITY_MARK,
            )
            draw.text(at, label, fill="white", font=font)
    return sheet


def tile_size(h: int, w: int, min_tile: int, max_tile: int) -> tuple[int, int]:
    """(height, width) a face of h x w pixels is shown at: small ones enlarged by an integer
    factor to at least ``min_tile``, large ones reduced to at most ``max_tile``."""
    if h > max_tile:
        return max_tile, max(1, round(w * max_tile / h))
    scale = max(1, -(-min_tile // h))
    return h * scale, w * scale


PREVIEW_MS = 110  # per frame: a preview's 16 frames loop in about 1.8 s


def motion_preview(
    images: Tensor, points: np.ndarray, min_tile: int = 128, max_tile: int = 4096
) -> bytes:
    """An animated GIF (looping) of a vector's edits along each property with the others at
    0: one panel per property side by side, each labelled with its weight in every frame,
    the weights going up and back down. ``images`` are ``points``' edits (``preview_points``:
    each property's ``f`` weights in turn)."""
    pix = to_uint8(images)
    n, h, w, _ = pix.shape
    k = len(CORE_PROPERTIES)
    f = n // k
    th, tw = tile_size(h, w, min_tile, max_tile)
    resample = Image.NEAREST if th >= h else Image.BOX
    tiles = [Image.fromarray(pix[i]).resize((tw, th), resample) for i in range(n)]
    size = max(11, tw // 9)
    font = _font(size)
    top, gap = size + 8, max(4, tw // 16)
    frames = []  # one per weight step; the loop shows them up, then back down
    for t in range(f):
        frame = Image.new("RGB", (k * tw + (k - 1) * gap, top + th), "white")
        draw = ImageDraw.Draw(frame)
        for j, prop in enumerate(CORE_PROPERTIES):
            x0 = j * (tw + gap)
            draw.text((x0 + 2, 3), f"{prop} {points[j * f + t, j]:+.2f}", fill="black", font=font)
            frame.paste(tiles[j * f + t], (x0, top))
        frames.append(frame)
    # One palette for all frames, no dithering: steady colours and a third of the bytes.
    mosaic = Image.new("RGB", (frames[0].width, frames[0].height * f))
    for t, frame in enumerate(frames):
        mosaic.paste(frame, (0, t * frame.height))
    palette = mosaic.quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    steps = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    loop = [steps[t] for t in [*range(f), *range(f - 2, 0, -1)]]
    buf = io.BytesIO()
    loop[0].save(
        buf, format="GIF", save_all=True, append_images=loop[1:], duration=PREVIEW_MS, loop=0
    )
    return buf.getvalue()


def _taller(sheet: Image.Image, extra: int) -> Image.Image:
    """``sheet`` with ``extra`` more white rows at the bottom."""
    out = Image.new("RGB", (sheet.width, sheet.height + extra), "white")
    out.paste(sheet, (0, 0))
    return out


def pose_axis_note(grid: np.ndarray) -> str:
    """One line on the grid's pose weights: where they run, and why an off-centre range
    (Oh-LoRA v3.1's -1.8 ... +0.6) does not bias r."""
    lo, hi = float(np.min(grid[:, 2])), float(np.max(grid[:, 2]))
    centred = "" if abs(lo + hi) < 1e-9 else ", not centred on 0"
    return (
        f"pose weights run {lo:+.1f} ... {hi:+.1f} (sampling.grid.pose{centred}): r is taken"
        " against the weights, so an offset does not change it"
    )


def summary_plot(per_vector: pd.DataFrame, cutoffs: dict[str, float], path: Path) -> None:
    """Histograms of |r| per property with the cutoffs, and the pass/fail split (a ``Figure``
    of its own: the process's backend and pyplot are left alone)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 3.6))
    axes = fig.subplots(1, 4)
    bins = np.linspace(0, 1, 41)
    for ax, p in zip(axes, CORE_PROPERTIES):
        r = per_vector[f"{p}_corr"].abs().dropna()
        ax.hist(r, bins=bins, color="#4c72b0")
        ax.axvline(cutoffs[p], color="#c44e52", ls="--", label=f"cutoff {cutoffs[p]}")
        ax.set_title(f"{p}: |r| (mean {r.mean():.3f})")
        ax.set_xlabel("|Pearson r|")
        ax.legend(loc="upper left")
    passed = int((per_vector["passed"] == "O").sum())
    ax = axes[3]
    ok = per_vector["passed"] == "O"
    ax.scatter(
        per_vector.loc[~ok, "sum_abs_corr"],
        per_vector.loc[~ok, "eyes_corr"].abs(),
        s=4,
        c="#999999",
        label="failed",
    )
    ax.scatter(
        per_vector.loc[ok, "sum_abs_corr"],
        per_vector.loc[ok, "eyes_corr"].abs(),
        s=8,
        c="#55a868",
        label="passed",
    )
    ax.set_title(f"passed {passed} of {len(per_vector)}")
    ax.set_xlabel("sum |r|")
    ax.set_ylabel("|eyes r|")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
