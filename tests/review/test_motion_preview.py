"""Motion previews: each property's edits with the others at 0, as a looping GIF, beside the
contact sheet on the review page."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ohlora_eval.formats.pictures import PREVIEW_MS, motion_preview
from ohlora_eval.pipeline.edit import grid_points, preview_points
from ohlora_eval.review import PageInputs, ReviewSettings, write_review_page

GRID = grid_points({"eyes": [-1.2, 1.2], "mouth": [-1.8, 0, 1.8], "pose": [-1.8, -0.6, 0.6]})


def test_preview_points_move_one_property_over_its_grid_range():
    points = preview_points(GRID, frames=5)
    assert points.shape == (15, 3)
    for k, (lo, hi) in enumerate([(-1.2, 1.2), (-1.8, 1.8), (-1.8, 0.6)]):
        block = points[k * 5 : (k + 1) * 5]
        np.testing.assert_allclose(block[:, k], np.linspace(lo, hi, 5))
        assert not np.delete(block, k, axis=1).any(), "the other properties stay at 0"


def _frames(gif: bytes) -> list[np.ndarray]:
    im = Image.open(io.BytesIO(gif))
    assert im.info["loop"] == 0 and im.info["duration"] == PREVIEW_MS
    out = []
    for t in range(im.n_frames):
        im.seek(t)
        out.append(np.asarray(im.convert("RGB")))
    return out


def test_each_panel_shows_its_property_going_up_then_back_down():
    f = 4
    points = preview_points(GRID, frames=f)
    # Image i is one flat grey level, distinct per image: a frame's panels say which it shows.
    levels = np.arange(3 * f) * 20 - 110  # within [-127, 127] -> [-1, 1]
    images = torch.tensor(levels / 127.5, dtype=torch.float32)[:, None, None, None].expand(
        -1, 3, 16, 16
    )
    frames = _frames(motion_preview(images, points, min_tile=16, max_tile=16))
    order = [0, 1, 2, 3, 2, 1]  # up, then down without repeating the ends
    assert len(frames) == len(order)
    shown = [
        [int(frame[-8, j * (16 + 4) + 8, 0]) for j in range(3)]  # a pixel inside each panel
        for frame in frames
    ]
    expected = [[round((levels[j * f + t] / 127.5 + 1) * 127.5) for j in range(3)] for t in order]
    for got, want in zip(shown, expected, strict=True):
        assert np.abs(np.array(got) - np.array(want)).max() <= 4, (
            shown,
            expected,
        )  # palette rounding


def _page(tmp_path, with_gif: bool) -> str:
    sheet = tmp_path / "src" / "case_00007.png"
    sheet.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8), "white").save(sheet)
    if with_gif:
        Image.new("RGB", (8, 8), "black").save(sheet.with_suffix(".gif"))
    per_vector = pd.DataFrame(
        {
            "case": [7],
            "passed": ["O"],
            "fail_reason": [""],
            "svm_group_name": [""],
            **{f"{p}_corr": [0.95] for p in ("eyes", "mouth", "pose")},
            "sum_abs_corr": [2.85],
        }
    )
    cutoffs = {"eyes": 0.9, "mouth": 0.9, "pose": 0.9}
    out = tmp_path / f"page_{with_gif}"
    page = write_review_page(
        out,
        PageInputs("run1", per_vector, cutoffs),
        {7: sheet},
        ReviewSettings(rank_by="sum_abs_corr"),
    )
    if with_gif:
        assert (out / "sheets" / "case_00007.gif").is_file(), (
            "the preview is copied beside the sheet"
        )
    return page.read_text()


def test_the_page_offers_a_preview_beside_each_sheet_that_has_one(tmp_path):
    html = _page(tmp_path, with_gif=True)
    assert '<details class="motion" data-src="sheets/case_00007.gif"' in html
    assert 'data-path="review/sheets/case_00007.gif"' in html
    box = html.split('<details class="motion"')[1].split("</details>")[0]
    assert "<img" not in box, "no preview image until the box is opened"
    assert '<details class="motion"' not in _page(tmp_path / "b", with_gif=False)
