"""What people see of identity: the review page's identity line and card order (in headless
Chromium too), marked contact-sheet cells, the frontier's identity cutoff, compare and the
sweep table. Tables here are made in the test (no model runs)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CHROMIUM, CHROMIUM_ARGS, conf_grid, playwright_or_skip

from ohlora_eval.formats.pictures import IDENTITY_MARK, contact_sheet
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import grid_points
from ohlora_eval.review import frontier as fr
from ohlora_eval.review.compare import Candidates, RunSide, check_candidates, compare_tables
from ohlora_eval.review.page import PageInputs, write_review_page
from ohlora_eval.review.settings import ReviewSettings
from ohlora_eval.tracking.sweep_table import markdown_table

GRID = grid_points(conf_grid())
CUT = {"eyes": 0.9, "mouth": 0.85, "pose": 0.85}


def _identity(worst: list[float]) -> pd.DataFrame:
    n = len(worst)
    w = np.array(worst, dtype=np.float64)
    return pd.DataFrame(
        {
            "identity_max": w,
            "identity_mean": w / 2,
            "identity_eyes": w * 0.9,
            "identity_mouth": w * 0.2,
            "identity_pose": w * 0.1,
            "identity_worst_pm_idx": np.where(np.isnan(w), np.nan, 49.0),
            "identity_unaligned": np.where(np.isnan(w), np.nan, 0.0),
            "identity_note": [""] * n,
        }
    )


@pytest.fixture()
def table() -> pd.DataFrame:
    corr = np.array([[0.99, 0.99, 0.99], [0.95, 0.9, 0.9], [0.97, 0.96, 0.95], [0.5, 0.5, 0.5]])
    ident = _identity([0.30, 0.72, 0.45, np.nan])
    out = judge.per_vector_table(corr, {**CUT, "identity": 0.6}, cases=np.arange(4), identity=ident)
    return out.assign(review_score=[3.0, 2.8, 2.9, 1.5], review_rank=[1, 3, 2, 4])


def _page(tmp_path, table) -> str:
    inputs = PageInputs("run1", table, {**CUT, "identity": 0.6}, grid=GRID, identity_threshold=0.6)
    settings = ReviewSettings(max_cards=None, near_miss_margin=0.05)
    return write_review_page(tmp_path, inputs, {}, settings).read_text()


def test_cards_show_the_distance_the_cell_and_the_failed_identity(tmp_path, table):
    text = _page(tmp_path, table)
    assert "identity distance &le; 0.6" in text  # the cutoffs line
    cards = re.findall(
        r'<article class="card( near)?" id="card-(\d+)"[^>]*data-identity="([^"]*)"', text
    )
    assert [(near, case) for near, case, _ in cards] == [("", "0"), ("", "2"), (" near", "1")]
    assert float(cards[0][2]) == pytest.approx(0.30)
    assert "max 0.300</span>" not in text  # within the threshold: not flagged
    assert "at eyes +1.2 mouth +1.8 pose +0.6" in text  # pm_idx 49, named by the grid
    # Case 1 cleared every r cutoff and failed identity: a near miss that says why.
    assert "failed: identity distance 0.7200 &gt; 0.6 (eyes edit 0.648)" in text
    assert 'class="warn" title="farther than 0.6' in text
    assert '<select id="order">' in text


def test_no_identity_columns_no_identity_line(tmp_path, table):
    plain = table.drop(columns=judge.IDENTITY_COLUMNS)
    plain["passed"] = ["O", "O", "O", "X"]
    inputs = PageInputs("run1", plain, CUT, grid=GRID)
    text = write_review_page(tmp_path, inputs, {}, ReviewSettings(max_cards=None)).read_text()
    assert "<dt>identity distance</dt>" not in text and 'id="order"' not in text


def test_the_page_orders_cards_by_identity_in_a_browser(tmp_path, table):
    sync_playwright = playwright_or_skip("the review-page browser test")
    # Four passing cards with different distances (one not measured).
    corr = np.full((4, 3), 0.99)
    ident = _identity([0.30, 0.52, 0.45, np.nan])
    t = judge.per_vector_table(corr, CUT, cases=np.arange(4), identity=ident)
    t = t.assign(review_score=[4.0, 3.0, 2.0, 1.0], review_rank=[1, 2, 3, 4])
    inputs = PageInputs("run1", t, CUT, grid=GRID, identity_threshold=0.6)
    path = write_review_page(tmp_path, inputs, {}, ReviewSettings(max_cards=None))
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS,
        )  # fmt: skip
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())

            def order() -> list[str]:
                return page.eval_on_selector_all(
                    "article.card", "cs => cs.map(c => c.getAttribute('data-case'))"
                )

            assert order() == ["0", "1", "2", "3"]
            page.select_option("#order", "identity-desc")
            assert order() == ["1", "2", "0", "3"]  # the unmeasured one last
            page.select_option("#order", "identity-asc")
            assert order() == ["0", "2", "1", "3"]
            page.select_option("#order", "rank")
            assert order() == ["0", "1", "2", "3"]
            assert not errors, errors
        finally:
            context.close()


def test_a_sheet_frames_the_cells_past_the_threshold():
    images = torch.zeros(len(GRID), 3, 32, 32)  # grey faces
    dist = np.full(len(GRID), 0.2)
    dist[49] = 0.9  # eyes +1.2, mouth +1.8, pose +0.6: the last row's last cell
    plain = np.asarray(contact_sheet(images, GRID, "t", min_tile=64))
    marked = np.asarray(contact_sheet(images, GRID, "t", min_tile=64, identity=(dist, 0.6)))
    red = (marked == np.array(IDENTITY_MARK, np.uint8)).all(-1)
    assert not (plain == np.array(IDENTITY_MARK, np.uint8)).all(-1).any()
    ys, xs = np.nonzero(red)
    # Only the bottom-right cell is framed (5 mouth rows x 10 columns of 64 px).
    assert xs.min() > marked.shape[1] - 64 - 2 and ys.max() < marked.shape[0] - 20
    assert marked.shape[0] > plain.shape[0]  # the line that says what the frames mean
    # The unedited face every distance is taken from, in a column beside the grid.
    white = torch.ones(1, 3, 32, 32)
    ref = np.asarray(contact_sheet(images, GRID, "t", 64, identity=(dist, 0.6), reference=white))
    assert ref.shape[1] == marked.shape[1] + 64 + 16
    assert (ref[:, marked.shape[1] + 16 :] == 255).all(-1).sum() >= 64 * 64


def test_the_frontier_applies_an_identity_cutoff_to_every_triple():
    abs_r = np.array([[0.99, 0.99, 0.99], [0.95, 0.95, 0.95], [0.93, 0.93, 0.93]])
    worst = np.array([0.3, 0.8, np.nan])
    grids = [np.array([0.9, 0.94, 0.98])] * 3
    plain = fr.frontier(abs_r, grids)
    cut = fr.frontier(abs_r, grids, identity=fr.IdentityFilter(worst, 0.6))
    assert plain.passed[0, 0, 0] == 3 and cut.passed[0, 0, 0] == 1
    assert cut.identity_unknown[0, 0, 0] == 1 and cut.identity_unknown[1, 1, 1] == 0
    assert "identity_unknown" in cut.table().columns
    at = fr.judge_at(abs_r, dict.fromkeys(("eyes", "mouth", "pose"), 0.9), None, None, 0.8,
                     fr.IdentityFilter(worst, 0.6))  # fmt: skip
    assert at["passed"] == 1 and at["identity_unknown"] == 1


def test_compare_shows_the_identity_distance_of_what_changed():
    corr = np.full((3, 3), 0.99)
    ident = _identity([0.3, 0.7, 0.5])
    a = judge.per_vector_table(corr, CUT, cases=np.arange(3), identity=ident)
    b = judge.per_vector_table(corr, {**CUT, "identity": 0.6}, cases=np.arange(3), identity=ident)
    side = [RunSide(r, r, "evaluation", 3) for r in ("a", "b")]
    same = Candidates("d" * 32, frozenset(range(3)))
    c = compare_tables(*side, (a, b), check_candidates(same, same), pd.DataFrame())
    assert c.left == [1]
    assert c.changes.loc[0, "identity_max_b"] == pytest.approx(0.7)
    text = c.markdown()
    assert "identity a | identity b" in text and "| passed, mean identity distance |" in text


def test_the_sweep_table_counts_who_keeps_their_person():
    table = pd.DataFrame(
        {
            "job": [0, 1], "cutoff.identity": [0.5, 0.6], "run_id": ["x", "y"],
            "status": ["FINISHED"] * 2, "passed": [3, 5], "pass_rate": [0.03, 0.05],
            "r_passed": [8, 8], "r_passed_same_person": [3, 5], "identity_threshold": [0.5, 0.6],
        }
    )  # fmt: skip
    text = markdown_table(table)
    assert "| cutoff.identity | passed |" in text and "same person of those" in text
    assert "| 0.6 | 5 |" in text and "| 8 | 5 (<= 0.6) |" in text
