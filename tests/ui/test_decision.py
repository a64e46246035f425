"""The decision in MLflow's UI, in a real browser: the chosen run marked in the runs table,
the registered selection's version linking to the screening run it came from, the list of
every experiment (ones made after the server started too), and a motion preview playing on
the review page. Screenshots for docs/img are kept (``keep_shot``)."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from ohlora_eval.tracking.ui_links import experiments_url

from .conftest import ROOT, _env
from .test_mlflow_ui import TIMEOUT_MS, _blob_frame, _close_assistant
from .ui_common import keep_shot

MODEL = "ohlora-ui-test"


def _row_text(page, name: str) -> str:
    """The text of the runs table's row holding ``name``, all its cells: the grid draws the
    pinned name column and the other columns as separate rows of the same index."""
    row = page.locator(".ag-row").filter(has=page.get_by_text(name, exact=True)).first
    row.wait_for(timeout=TIMEOUT_MS)
    index = row.get_attribute("row-index")
    return " ".join(page.locator(f".ag-row[row-index='{index}']").all_inner_texts())


@pytest.fixture(scope="module")
def decided(ui_sweep, mlflow_ui):
    """After the server started: a point with passed vectors chosen, and one of its passed
    vectors recorded as a new version of ``MODEL``. (the point, the version)."""
    point = next(r for r in ui_sweep.points if r.data.metrics["passed"] >= 1)
    client = MlflowClient(ui_sweep.uri, registry_uri=ui_sweep.uri)  # not a registry set before
    table = client.download_artifacts(point.info.run_id, "per_vector.csv")
    import pandas as pd

    per_vector = pd.read_csv(table)
    case = int(per_vector.loc[per_vector["passed"] == "O", "case"].iloc[0])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ohlora_eval.select",
            f"tracking.root={ui_sweep.root}",
            f"run_id={point.info.run_id}",
            f"cases=[{case}]",
            f"name={MODEL}",
            "choose=true",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (version,) = client.search_model_versions(f"name = '{MODEL}'")
    assert client.get_run(point.info.run_id).data.tags.get("chosen") == "true"
    return point, version


def test_the_chosen_run_is_marked_in_the_runs_table(
    ui_sweep, mlflow_ui, decided, chromium, tmp_path
):
    base, port = mlflow_ui
    point, version = decided
    page = chromium.new_page()
    page.goto(ui_sweep.printed_link("all runs (after make ui):", port))
    parent_name = ui_sweep.parent.info.run_name
    page.get_by_text(parent_name, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    _close_assistant(page)
    # The decision's columns are in the shared view without typing a filter.
    for column in ("chosen", "ohlora.selection"):
        page.get_by_role("columnheader", name=column).first.wait_for(timeout=TIMEOUT_MS)
    # The sweep's row shows its points' best figures, not "-".
    best = max(int(r.data.metrics["passed"]) for r in ui_sweep.points)
    text = _row_text(page, parent_name)
    assert re.search(rf"(^|\s){best}(\s|$)", text), text
    page.get_by_role("row").filter(has_text=parent_name).get_by_role("button").first.click()
    text = _row_text(page, point.info.run_name)
    assert "true" in text and f"{MODEL}/{version.version}" in text, text
    for other in ui_sweep.points:
        if other.info.run_id != point.info.run_id:
            text = _row_text(page, other.info.run_name)
            assert "true" not in text, text
    shot = tmp_path / "ui_chosen_run.png"
    page.screenshot(path=str(shot))
    keep_shot(shot, "ui_chosen_run.png")
    page.close()


def test_the_model_version_links_to_its_screening_run(
    ui_sweep, mlflow_ui, decided, chromium, tmp_path
):
    base, port = mlflow_ui
    point, version = decided
    assert version.run_id == point.info.run_id  # the version's source run is the screening
    page = chromium.new_page()
    page.goto(f"{base}/#/models/{MODEL}/versions/{version.version}")
    link = page.get_by_role("link", name=re.compile(re.escape(point.info.run_name)))
    link.first.wait_for(timeout=TIMEOUT_MS)
    shot = tmp_path / "ui_model_version.png"
    page.screenshot(path=str(shot))
    keep_shot(shot, "ui_model_version.png")
    link.first.click()
    page.wait_for_url(re.compile(rf"/runs/{point.info.run_id}\b"), timeout=TIMEOUT_MS)
    # Every experiment is listed, the selections' (made after the server started) too.
    page.goto(experiments_url(base))
    page.get_by_text("ohlora-selections", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    page.close()


def test_a_motion_preview_plays_on_the_review_page(ui_sweep, mlflow_ui, chromium, tmp_path):
    base, port = mlflow_ui
    first = ui_sweep.points[0]  # measured, so it stored the sheets and their previews
    run_id, exp_id = first.info.run_id, ui_sweep.experiment.experiment_id
    page = chromium.new_page()
    page.goto(
        f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/review/index.html"
        "?workflowType=machine_learning"
    )
    frame = _blob_frame(page)
    box = frame.locator("article.card details.motion").first
    box.wait_for(timeout=TIMEOUT_MS)
    assert not frame.evaluate("() => document.querySelector('img.preview')")  # none yet
    box.locator("summary").click()
    frame.wait_for_function(
        "() => { const i = document.querySelector('details.motion[open] img.preview');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    src = frame.evaluate("() => document.querySelector('img.preview').src")
    assert "/get-artifact?" in src and ".gif" in src, src
    preview = box.locator("img.preview")
    preview.scroll_into_view_if_needed()
    # It plays: the picture changes while we look (16 frames of 110 ms in a loop).
    seen = {preview.screenshot()}
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        page.wait_for_timeout(150)
        seen.add(preview.screenshot())
    assert len(seen) >= 3, "the preview did not move"
    frame.evaluate(
        "() => document.querySelector('details.motion').scrollIntoView({block: 'center'})"
    )
    shot = tmp_path / "ui_review_preview.png"
    page.screenshot(path=str(shot))
    keep_shot(shot, "ui_review_preview.png")
    page.close()
