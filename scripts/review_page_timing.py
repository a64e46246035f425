"""How soon the review page shows its first screenful of contact sheets inside MLflow's UI.

    .venv/bin/python scripts/review_page_timing.py STORE_ROOT RUN_ID [JS_FILE ...]

STORE_ROOT is a ``tracking.root`` (``mlflow.db`` and ``artifacts/`` in it), RUN_ID a run with
a review page (``review/index.html`` and its sheets). For each JS file (default: the shipped
``ohlora_eval/review/static/sheet_images.js``) a copy of the page with that file as its
sheet-loading script is written beside the run's page (``review/timing_<n>.html``, removed
afterwards), opened in MLflow's artifact view (``mlflow server`` on 127.0.0.1, one worker, as
``make ui``) in Debian's headless Chromium (playwright), and timed three times: from the
navigation to every sheet on the first screen shown, and to every sheet of the page shown.
Also prints how many sheets had been asked for when the first screen was complete.

A measuring tool, not a test: timings depend on the machine (say which in what you report).
Needs ``pip install playwright`` and ``/usr/bin/chromium`` (``OHLORA_CHROMIUM`` to override).
"""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SHIPPED = Path(__file__).resolve().parents[1] / "ohlora_eval/review/static/sheet_images.js"
CHROMIUM = os.environ.get("OHLORA_CHROMIUM", "/usr/bin/chromium")
FIRST_SCREEN = """() => {
  const imgs = Array.from(document.images);
  const seen = imgs.filter(i => { const r = i.getBoundingClientRect();
    return r.top < innerHeight && r.bottom > 0; });
  return imgs.length > 0 && seen.length > 0
    && seen.every(i => i.src && i.complete && i.naturalWidth > 0);
}"""
ASKED = "() => Array.from(document.images).filter(i => i.src).length"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _page_dir(root: Path, run_id: str) -> tuple[Path, str]:
    """The run's local ``review`` folder and its experiment id."""
    with sqlite3.connect(root / "mlflow.db") as db:
        uri, exp = db.execute(
            "select artifact_uri, experiment_id from runs where run_uuid = ?", (run_id,)
        ).fetchone()
    folder = Path(re.sub(r"^file://", "", uri)) / "review"
    if not (folder / "index.html").is_file():
        sys.exit(f"run {run_id} has no review/index.html under {folder}")
    return folder, str(exp)


def _with_script(page: str, js: str) -> str:
    """The page with its sheet-loading script (the first inline one) replaced by ``js``."""
    start = page.index("<script>") + len("<script>")
    end = page.index("</script>", start)
    return page[:start] + js + page[end:]


def _server(root: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    mlflow = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"],
        cwd=root.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("mlflow server did not answer in 120 s")


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        sys.exit(__doc__)
    from playwright.sync_api import sync_playwright

    root, run_id = Path(argv[0]).resolve(), argv[1]
    scripts = [Path(p) for p in argv[2:]] or [SHIPPED]
    folder, exp = _page_dir(root, run_id)
    page_html = (folder / "index.html").read_text()
    port = _free_port()
    made = []
    proc = _server(root, port)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            for n, js in enumerate(scripts):
                name = f"timing_{n}.html"
                (folder / name).write_text(_with_script(page_html, js.read_text()))
                made.append(folder / name)
                url = (
                    f"http://127.0.0.1:{port}/#/experiments/{exp}/runs/{run_id}"
                    f"/artifacts/review/{name}?workflowType=machine_learning"
                )
                first, whole, asked = [], [], []
                for _ in range(3):
                    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
                    tab = ctx.new_page()
                    t0 = time.monotonic()
                    tab.goto(url)
                    frame = None
                    while frame is None:
                        frame = next((f for f in tab.frames if f.url.startswith("blob:")), None)
                        if frame is None:
                            tab.wait_for_timeout(20)
                    frame.wait_for_function(FIRST_SCREEN, timeout=120_000, polling=20)
                    first.append(time.monotonic() - t0)
                    asked.append(frame.evaluate(ASKED))
                    total = frame.evaluate("() => document.images.length")
                    for k in range(total):  # scroll through: every sheet shown
                        frame.evaluate(f"() => document.images[{k}].scrollIntoView()")
                        frame.wait_for_function(
                            f"() => {{ const i = document.images[{k}];"
                            " return i.src && i.complete && i.naturalWidth > 0; }",
                            timeout=120_000,
                            polling=20,
                        )
                    whole.append(time.monotonic() - t0)
                    ctx.close()
                print(
                    f"{js}: first screen {statistics.median(first):.2f} s"
                    f" (runs {', '.join(f'{x:.2f}' for x in first)}),"
                    f" {statistics.median(asked):.0f} of {total} sheets asked for by then;"
                    f" all {total} after scrolling through {statistics.median(whole):.1f} s"
                )
            browser.close()
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main(sys.argv[1:])
