"""What a person sees in MLflow's UI after a sweep, driven in a real browser: the runs view
(not the GenAI overview), runs named by what differs, the sweep's table as the parent's
description, and the review page with its contact sheets inside MLflow's artifact view."""

from __future__ import annotations

import re
import time

from .ui_common import CUTOFFS, keep_shot

TIMEOUT_MS = 30_000


def _close_assistant(page) -> None:
    """MLflow's assistant panel opens beside the runs on a first visit; close it if there."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()


def _blob_frame(page):
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        frames = [f for f in page.frames if f.url.startswith("blob:")]
        if frames:
            return frames[0]
        page.wait_for_timeout(250)
    raise AssertionError(f"no blob: iframe on {page.url}: {[f.url for f in page.frames]}")


def test_sweep_opens_on_runs_named_by_what_differs(ui_sweep, mlflow_ui, chromium, tmp_path):
    base, port = mlflow_ui
    parent_name = ui_sweep.parent.info.run_name
    point_names = [f"cutoff.eyes={c}" for c in CUTOFFS]
    assert [r.info.run_name for r in ui_sweep.points] == point_names
    assert parent_name == "sweep cutoff.eyes=" + ",".join(CUTOFFS) + " | 24 vectors"

    page = chromium.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # The link the sweep printed for all its runs.
    page.goto(ui_sweep.printed_link("all runs (after make ui):", port))
    page.get_by_text(parent_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    assert re.search(r"#/experiments/\d+/runs\b", page.url), page.url
    assert "overview" not in page.url and "genai" not in page.url
    _close_assistant(page)
    # The compared columns are there without picking them by hand (the grid draws only the
    # columns in sight: scrolled to its right end for the last ones).
    for column in ("chosen", "passed", "pass_rate", "cutoff.eyes"):
        page.get_by_role("columnheader", name=column).first.wait_for(timeout=TIMEOUT_MS)
    page.evaluate(
        "() => document.querySelectorAll('.ag-body-horizontal-scroll-viewport,"
        " .ag-center-cols-viewport').forEach(e => { e.scrollLeft = e.scrollWidth; })"
    )
    page.get_by_role("columnheader", name="Description").first.wait_for(timeout=TIMEOUT_MS)
    # The sweep is one row; expanding it shows its points by their swept values.
    page.get_by_role("row").filter(has_text=parent_name).get_by_role("button").first.click()
    for name in point_names:
        page.get_by_text(name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    # Each point's description starts with its verdict.
    first = ui_sweep.points[0]
    verdict = f"passed {int(first.data.metrics['passed'])} of 24"
    page.get_by_text(re.compile("^" + re.escape(verdict))).first.wait_for(timeout=TIMEOUT_MS)
    shot = tmp_path / "ui_runs.png"
    page.screenshot(path=str(shot))
    keep_shot(shot, "ui_runs.png")

    # The parent's page: its description is the sweep's table.
    page.goto(ui_sweep.printed_link(f"parent run {ui_sweep.parent.info.run_id}:", port))
    table = page.locator("table").filter(has_text="pass rate").first
    table.wait_for(timeout=TIMEOUT_MS)
    text = table.inner_text()
    for cut, run in zip(CUTOFFS, ui_sweep.points, strict=True):
        passed = int(run.data.metrics["passed"])
        assert re.search(rf"{re.escape(cut)}\s+{passed}\s", text), (cut, passed, text)
    shot = tmp_path / "ui_sweep_parent.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_shot(shot, "ui_sweep_parent.png")
    assert not errors, errors
    page.close()


def test_review_page_shows_its_sheets_in_the_artifact_view(ui_sweep, mlflow_ui, chromium, tmp_path):
    base, port = mlflow_ui
    last = ui_sweep.points[-1]  # re-used the first point's measurement: its sheets are linked
    run_id, exp_id = last.info.run_id, ui_sweep.experiment.experiment_id
    page = chromium.new_page()
    page.goto(
        f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/review/index.html"
        "?workflowType=machine_learning"
    )
    frame = _blob_frame(page)  # MLflow shows an .html artifact in a sandboxed blob: iframe
    frame.wait_for_selector("article.card img", timeout=TIMEOUT_MS)
    # Sheets load as their cards come near the screen: the first one first ...
    frame.wait_for_function(
        "() => document.images.length && document.images[0].complete"
        " && document.images[0].naturalWidth > 0",
        timeout=TIMEOUT_MS,
    )
    # ... the far ones not yet (asked for when they come within a screen of it) ...
    page.wait_for_timeout(1000)
    n, asked, far = frame.evaluate(
        "() => [document.images.length,"
        " Array.from(document.images).filter(i => i.src).length,"
        " Array.from(document.images).filter(i => !i.src"
        "   || i.getBoundingClientRect().top > 4 * innerHeight).length]"
    )
    assert asked < n or not far, f"all {n} sheets asked for at once, {far} of them far below"
    # ... and every one once scrolled to.
    for k in range(n):
        frame.evaluate(f"() => document.images[{k}].scrollIntoView()")
        frame.wait_for_function(
            f"() => {{ const i = document.images[{k}];"
            " return i.src && i.complete && i.naturalWidth > 0; }",
            timeout=TIMEOUT_MS,
        )
    images = frame.evaluate(
        "() => Array.from(document.images).map(i => ({w: i.naturalWidth, run: i.dataset.run,"
        " src: i.src}))"
    )
    assert images, "the page shows no contact sheet"
    assert all(i["w"] > 0 for i in images), images
    assert all("/get-artifact?" in i["src"] for i in images), images
    linked = [i for i in images if i["run"] != run_id]
    assert linked, "this point re-used the measurement: its sheets should be the first point's"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(ui_sweep.uri)
    own = {a.path for a in client.list_artifacts(run_id, "review")}
    assert "review/sheets" not in own, own  # it stored no image itself
    frame.locator("article.card").first.scroll_into_view_if_needed()
    shot = tmp_path / "ui_review_page.png"
    page.screenshot(path=str(shot))
    keep_shot(shot, "ui_review_page.png")
    page.close()
