"""The offline review page: its HTML, and the command it builds in a real (headless) browser."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import CHROMIUM, CHROMIUM_ARGS, conf_grid, playwright_or_skip

from ohlora_eval.formats.pictures import contact_sheet
from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
from ohlora_eval.pipeline import judge
from ohlora_eval.pipeline.edit import grid_points
from ohlora_eval.pipeline.measure import edited_mids
from ohlora_eval.pipeline.protocols import CORE_PROPERTIES
from ohlora_eval.review.page import PageInputs, SheetLink, near_misses, write_review_page
from ohlora_eval.review.settings import ReviewSettings
from ohlora_eval.review.steps import add_review_columns, build_review_page

GRID = grid_points(conf_grid())
CUTOFFS = {"eyes": 0.9, "mouth": 0.85, "pose": 0.85}
RUN_ID = "0123abcd<run>&id"  # odd characters on purpose: they must be escaped, not injected
N = 12


@pytest.fixture(scope="module")
def run_table() -> pd.DataFrame:
    """A small run: per_vector with review columns; about half the vectors pass."""
    rng = np.random.default_rng(7)
    gain = rng.uniform(0.4, 1.6, (N, 1, 3))
    noise = rng.uniform(0.05, 1.2, (N, 1, 1))
    scores = GRID[None] * gain + rng.normal(0, 1, (N, 50, 3)) * noise
    corr = np.stack([judge.pearson_rows(GRID[:, k], scores[:, :, k]) for k in range(3)], 1)
    groups = [f"g{i % 3}" for i in range(N)]
    groups[1] = '<b>"bold" & </b>'
    per_vector = judge.per_vector_table(corr, CUTOFFS, groups, cases=np.arange(N) * 7 + 3)
    locality = {"bg_drift": rng.uniform(0.005, 0.05, N), "face_iou": rng.uniform(0.7, 1.0, N)}
    table, _ = add_review_columns(per_vector, GRID, scores, locality)
    assert 2 <= (table["passed"] == "O").sum() < N
    return table


@pytest.fixture(scope="module")
def sheets(run_table, tmp_path_factory) -> dict[int, Path]:
    """Real contact sheets of synthetic faces, one per passed case."""
    gen = SyntheticFaceGenerator(resolution=64, device="cpu")
    g = torch.Generator().manual_seed(0)
    dirs = {
        p: torch.nn.functional.normalize(torch.randn(1, 512, generator=g)) for p in CORE_PROPERTIES
    }
    folder = tmp_path_factory.mktemp("sheets")
    out = {}
    for i, case in enumerate(run_table.loc[run_table["passed"] == "O", "case"]):
        mid = gen.to_mid(gen.sample_latents(1, 100 + i), "w")
        images = gen.synthesize(edited_mids(mid, dirs, GRID), "w")
        path = folder / f"sheet_{case}.png"
        contact_sheet(images, GRID, f"case {case}").save(path)
        out[int(case)] = path
    return out


def _settings(**kw) -> ReviewSettings:
    """``ReviewSettings`` fields: all cards and no near misses unless ``kw`` says otherwise."""
    return ReviewSettings(**{"max_cards": None, "near_miss_margin": 0.0, **kw})


def _page(tmp_path, run_table, sheets, **kw) -> tuple[Path, str]:
    inputs = PageInputs(RUN_ID, run_table, CUTOFFS)
    path = write_review_page(tmp_path / "review", inputs, sheets, _settings(**kw))
    return path, path.read_text(encoding="utf-8")


def _expected_order(table: pd.DataFrame) -> list[int]:
    passed = table[table["passed"] == "O"]
    return passed.sort_values("review_score", ascending=False, kind="mergesort")["case"].tolist()


def test_every_passed_vector_has_a_card_in_rank_order(tmp_path, run_table, sheets):
    path, text = _page(tmp_path, run_table, sheets)
    assert path == tmp_path / "review" / "index.html"
    cards = [int(c) for c in re.findall(r'<article class="card" id="card-(\d+)"', text)]
    assert cards == _expected_order(run_table)
    failed = run_table.loc[run_table["passed"] == "X", "case"].tolist()
    assert not set(cards) & set(failed)
    for case in cards:
        assert f'src="sheets/case_{case:05d}.png"' in text
        assert (path.parent / "sheets" / f"case_{case:05d}.png").is_file()
        assert f'value="{case}"' in text


def test_page_escapes_and_loads_nothing_from_the_network(tmp_path, run_table, sheets):
    _, text = _page(tmp_path, run_table, sheets)
    assert "<run>" not in text and "0123abcd&lt;run&gt;&amp;id" in text
    if "O" == run_table.loc[1, "passed"]:
        assert "&lt;b&gt;&#34;bold&#34; &amp; &lt;/b&gt;" in text  # Jinja2's autoescape
    assert '<b>"bold"' not in text
    assert not re.search(r"https?://", text)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:/|[a-z]+:)""", text)
    assert "@import" not in text and "url(" not in text


def test_zero_passed_vectors_shows_a_message(tmp_path, run_table):
    none = run_table.assign(passed="X")
    _, text = _page(tmp_path, none, {})
    assert "No vector passed" in text and 'class="card"' not in text
    assert 'id="command"' in text


def test_max_cards_and_missing_sheets(tmp_path, run_table, sheets):
    order = _expected_order(run_table)
    some = {order[0]: sheets[order[0]]}
    _, text = _page(tmp_path, run_table, some, max_cards=2)
    assert len(re.findall(r'class="card"', text)) == 2
    assert f"{len(order) - 2} more passed vectors are not shown" in text
    assert "no contact sheet for this vector" in text


def test_build_review_page_renders_missing_sheets_and_copies_locally(tmp_path, run_table, sheets):
    from PIL import Image

    rendered = []

    def render(case: int):
        rendered.append(case)
        return Image.new("RGB", (40, 20), "white")

    order = _expected_order(run_table)
    given = {order[0]: sheets[order[0]]}
    page = build_review_page(
        tmp_path / "art" / "review",
        PageInputs("runid42", run_table, CUTOFFS, grid=GRID),
        ReviewSettings(near_miss_margin=0),
        render=render,
        sheets=given,
        local_dir=tmp_path / "local",
    )
    assert page == tmp_path / "art" / "review" / "index.html"
    assert rendered == order[1:]
    local = tmp_path / "local" / "runid42"
    assert (local / "index.html").read_text() == page.read_text()
    assert sorted(p.name for p in (local / "sheets").iterdir()) == sorted(
        f"case_{c:05d}.png" for c in order
    )
    assert "0.866" in page.read_text()  # the eyes Spearman ceiling is explained
    assert (
        build_review_page(
            tmp_path / "x", PageInputs("r", run_table, CUTOFFS), ReviewSettings(page=False)
        )
        is None
    )


def _near_table(run_table: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The run's table and a margin that makes its closest failures near misses."""
    failed = run_table[run_table["passed"] == "X"]
    gap = judge.shortfall(failed, CUTOFFS)
    gap = gap[np.isfinite(gap)].sort_values()
    assert len(gap) >= 2
    return run_table, float(gap.iloc[1]) + 1e-9  # the two closest failures


def test_near_misses_are_the_failures_within_the_margin_closest_first(run_table):
    table, margin = _near_table(run_table)
    near = near_misses(table, CUTOFFS, margin)
    gaps = judge.shortfall(table, CUTOFFS)
    expected = gaps[(gaps > 0) & (gaps <= margin)].sort_values(kind="mergesort")
    assert near["case"].tolist() == table.loc[expected.index, "case"].tolist()
    assert (near["passed"] == "X").all() and len(near) >= 2
    for _, row in near.iterrows():  # the property that falls shortest, and by how much
        p = row["near_prop"]
        assert row["near_short"] == pytest.approx(CUTOFFS[p] - abs(row[f"{p}_corr"]))
        assert row["near_short"] == pytest.approx(gaps.loc[row.name])
    assert near_misses(table, CUTOFFS, 0).empty


def test_near_miss_cards_are_marked_and_get_sheets(tmp_path, run_table, sheets):
    from PIL import Image

    table, margin = _near_table(run_table)
    near = near_misses(table, CUTOFFS, margin)["case"].tolist()
    rendered = []

    def render(case: int):
        rendered.append(case)
        return Image.new("RGB", (40, 20), "white")

    page = build_review_page(
        tmp_path / "review",
        PageInputs("run7", table, CUTOFFS),
        ReviewSettings(near_miss_margin=margin),
        render=render,
        sheets=sheets,
    )
    text = page.read_text()
    assert rendered == near  # passed cases had sheets; near misses were rendered
    cards = re.findall(r'<article class="card( near)?" id="card-(\d+)"', text)
    assert [int(c) for n, c in cards if n] == near
    assert [int(c) for n, c in cards if not n] == _expected_order(table)
    for case in near:
        card = text.split(f'id="card-{case}"')[1].split("</article>")[0]
        assert "near miss" in card and "failed:" in card and "data-failed" in card
        assert f'src="sheets/case_{case:05d}.png"' in card
    assert "Near misses: failed by at most" in text
    # The card budget: passed first, then near misses fill what is left.
    n_passed = len(_expected_order(table))
    text = write_review_page(
        tmp_path / "r2",
        PageInputs("run7", table, CUTOFFS),
        {},
        _settings(near_miss_margin=margin, max_cards=n_passed + 1),
    ).read_text()
    assert len(re.findall(r'class="card near"', text)) == 1
    assert f"{len(near) - 1} more near misses are not shown" in text


def test_linked_sheets_name_their_run_and_path_for_mlflow(tmp_path, run_table):
    order = _expected_order(run_table)
    links = {
        order[0]: SheetLink("../../other/artifacts/review/sheets/a.png", "other", "review/x.png"),
        order[1]: SheetLink(None, "other", "review/sheets/b.png"),
    }
    path = write_review_page(
        tmp_path / "review", PageInputs(RUN_ID, run_table, CUTOFFS), links, _settings()
    )
    text = path.read_text()
    assert not (tmp_path / "review" / "sheets").exists()  # links are not copied
    first = text.split(f'id="card-{order[0]}"')[1].split("</article>")[0]
    assert 'src="../../other/artifacts/review/sheets/a.png"' in first
    assert 'data-run="other" data-path="review/x.png"' in first
    second = text.split(f'id="card-{order[1]}"')[1].split("</article>")[0]
    assert "src=" not in second and 'data-path="review/sheets/b.png"' in second
    assert "get-artifact?path=" in text  # how the page asks MLflow for them


# --- the browser test ----------------------------------------------------------------------------


def test_page_in_headless_chromium_builds_the_select_command(tmp_path, run_table, sheets):
    sync_playwright = playwright_or_skip("the review-page browser test")
    _, margin = _near_table(run_table)
    near = near_misses(run_table, CUTOFFS, margin)["case"].tolist()
    page_path, _ = _page(tmp_path, run_table, sheets, near_miss_margin=margin)
    order = _expected_order(run_table)
    first, second = order[1], order[0]  # tick out of order: the command sorts them
    expected = (
        f"python -m ohlora_eval.select run_id={RUN_ID} cases=[{min(first, second)},"
        f"{max(first, second)}]"
    )
    shot = tmp_path / "review_page.png"
    requests: list[str] = []
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            assert page.locator("#command").inner_text() == ""
            assert page.locator("#copy").is_disabled()
            page.check(f"#pick-{first}")
            page.check(f"#pick-{second}")
            assert page.locator("#command").inner_text() == expected
            assert page.locator("#count").inner_text() == "2"
            assert page.locator(f"#card-{first}").get_attribute("class") == "card picked"
            page.locator("#copy").click()
            page.wait_for_function("document.getElementById('status').textContent !== ''")
            # Every contact sheet loaded from the folder beside the page.
            for case in order:
                img = page.locator(f"#card-{case} img")
                img.scroll_into_view_if_needed()
                page.wait_for_function(
                    "el => el.complete && el.naturalWidth > 0", arg=img.element_handle()
                )
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shot), full_page=False)
            page.uncheck(f"#pick-{second}")
            assert page.locator("#command").inner_text() == (
                f"python -m ohlora_eval.select run_id={RUN_ID} cases=[{first}]"
            )
            page.check(f"#pick-{near[0]}")  # a near miss failed: select must be told
            assert page.locator("#command").inner_text() == (
                f"python -m ohlora_eval.select run_id={RUN_ID}"
                f" cases=[{','.join(map(str, sorted([first, near[0]])))}] allow_failed=true"
            )
            page.locator("#clear").click()
            assert page.locator("#command").inner_text() == ""
            assert not errors, errors
        finally:
            context.close()
    assert all(u.startswith("file://") for u in requests), [u for u in requests]
    assert shot.is_file() and shot.stat().st_size > 10_000
    extra = os.environ.get("OHLORA_SCREENSHOT")
    if extra:
        Path(extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, extra)
    print(f"review page screenshot: {shot}" + (f" (and {extra})" if extra else ""))


def test_a_near_miss_reads_below_its_cutoff_and_short_by_more_than_nothing():
    from ohlora_eval.review.page import near_miss_text

    assert near_miss_text("pose", 0.85, 0.88, 0.03) == "pose |r| 0.850 < 0.88 (short by 0.030)"
    text = near_miss_text("pose", 0.87996, 0.88, 0.00004)
    assert text == "pose |r| 0.87996 < 0.88 (short by 0.00004)", text
    assert "0.000)" not in near_miss_text("eyes", 0.9199999, 0.92, 0.0000001)
