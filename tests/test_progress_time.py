"""Honest time (issue 31, item 2): time left from a smoothed rate that falls as work goes on,
every long phase with a count and a time left, no silent start, one definition of images/s
(the measuring step's wall time), and a set-up without setuptools' editable-install box."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ohlora_eval import progress
from ohlora_eval.progress import Bar, Eta, Step, duration, phase, say, starting

ROOT = Path(__file__).resolve().parents[1]


def _shown(durations, every=0.5, **kw):
    """(time, time left shown, true time left) every ``every`` seconds of a run of units that
    take ``durations`` seconds each, told to an ``Eta`` as each one ends."""
    ends = np.cumsum(durations)
    eta, out, k, t = Eta(len(durations), now=0.0, **kw), [], 0, 0.0
    while True:
        t += every
        while k < len(ends) and ends[k] <= t:
            eta.update(k + 1, now=float(ends[k]))
            k += 1
        if k == len(ends):
            return out
        left = eta.left(now=t)
        if left is not None:
            out.append((t, left, float(ends[-1]) - t))


def _rises(shown):
    return [(a, b) for a, b in zip(shown, shown[1:]) if b[1] > a[1] + 1e-9]


def test_time_left_after_a_slow_start_falls_and_is_right():
    """The tester's case, in small: the first unit is slow (warm-up), then units of 1 s. The
    time left counts down second by second and is the true time left (the warm-up is not
    taken for the rate); the old estimate (elapsed / done x left) started 5x too high."""
    shown = _shown([5.0] + [1.0] * 49)
    assert shown and shown[0][0] < 10  # known after a few units
    assert not _rises(shown)
    for _, left, truth in shown:
        assert left == pytest.approx(truth, rel=0.3, abs=1.0)
    assert max(abs(left - truth) for _, left, truth in shown if truth >= 5) < 0.51


def test_time_left_does_not_run_away_while_a_unit_is_under_way():
    """Between updates the estimate counts down (never grows with the time spent waiting, as
    the old elapsed / done did: "about 240 s left" at 120 s, "about 320 s left" at 160 s) and
    holds at what the units not yet begun take."""
    eta = Eta(10, now=0.0)
    for k in range(1, 6):
        eta.update(k, now=float(k))  # 1 s a unit
    seen = [eta.left(now=5.0 + dt) for dt in (0.0, 0.5, 1.0, 3.0, 20.0)]
    assert seen[0] == pytest.approx(5.0) and seen[1] == pytest.approx(4.5)
    assert all(b <= a + 1e-9 for a, b in zip(seen, seen[1:]))
    assert seen[-1] == pytest.approx(4.0, abs=1e-6)  # 4 units not begun: held there


@pytest.mark.parametrize("seed", range(5))
def test_time_left_on_a_noisy_machine_falls_within_30_percent(seed):
    """Units that vary by +-25 % (a shared machine): over the run's first 85 %, what is shown
    falls monotonically (an estimate within 15 % of the last one shown is not shown: that one
    counts down) and stays within 30 % of the true time left."""
    rng = np.random.default_rng(seed)
    durations = np.r_[3.0, 1.0 + 0.25 * (2 * rng.random(99) - 1)]
    shown = [s for s in _shown(durations) if s[2] >= 0.15 * durations.sum()]
    assert len(shown) > 100
    assert len(_rises(shown)) <= 1, _rises(shown)
    for t, left, truth in shown:
        assert abs(left - truth) <= 0.3 * truth, (t, left, truth)


def test_time_left_follows_a_machine_that_became_slower():
    """Honest, not merely monotone: when the units take twice as long from some point on,
    the estimate rises to the new truth within a few units."""
    shown = _shown([2.0] + [1.0] * 30 + [2.0] * 40)
    later = [s for s in shown if 31 + 2 * 12 <= s[0] <= 31 + 2 * 30]
    assert later
    for _, left, truth in later:
        assert abs(left - truth) <= 0.3 * truth


def test_durations_read_as_meant():
    assert duration(42.4) == "42 s"
    assert duration(425) == "7 min 05 s"
    assert duration(2 * 3600 + 180) == "2 h 03 min"


def test_a_counted_phase_says_its_count_and_time_left_every_beat(caplog):
    """A phase with a total says, at every beat, how many units are done, about how long is
    left (once known) and its note."""
    with caplog.at_level("INFO", logger="ohlora_eval.progress"):
        with phase("rendering", total=40, unit="sheets", every_s=0.05) as step:
            step.note = "12 sheets/s"
            for _ in range(40):
                time.sleep(0.01)
                step.advance()
    lines = [r.getMessage() for r in caplog.records]
    beats = [ln for ln in lines[1:-1] if "of 40 sheets" in ln]
    assert beats and all(ln.endswith("(12 sheets/s)") for ln in beats), lines
    assert any(re.search(r", (about \d+ s|under 1 s) left \(", ln) for ln in beats), lines


def test_a_step_counts_from_count_and_says_no_time_left_when_done():
    step = Step("fitting", None, "")
    step.count(3, "epochs")
    assert "0 of 3 epochs" in step.line() and "left" not in step.line()
    step.advance(3)
    assert "3 of 3 epochs" in step.line() and "left" not in step.line()


def test_a_bar_redraws_while_a_long_unit_runs_with_this_modules_time_left():
    """tqdm draws a bar only when it moves; ours is redrawn on a timer too (a long chunk
    leaves no silence), and its time left is the Eta's."""
    out = io.StringIO()
    with Bar(total=10, desc="screening", file=out, every_s=0.05, mininterval=0) as bar:
        for _ in range(5):
            bar.update(1)
            time.sleep(0.06)
        drawn = out.getvalue().count("\r")
        time.sleep(0.4)  # a unit that takes long: the bar is still redrawn
        assert out.getvalue().count("\r") >= drawn + 3
    text = out.getvalue()
    assert "screening:" in text and "5/10" in text
    assert "<?" in text  # no time left before the rate is known (tqdm's would guess)
    assert bar.eta.left() is not None and re.search(r"<00:0\d, ", text), text


def test_starting_says_what_a_silent_command_is_doing_until_it_speaks(caplog):
    with caplog.at_level("INFO", logger="ohlora_eval"):
        with starting("starting: loading", first_s=0.05, every_s=0.05):
            time.sleep(0.5)
            say("the first line")
            time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    first = lines.index("ohlora_eval: the first line")
    assert lines[0] == "ohlora_eval: starting: loading ..."
    assert any(re.fullmatch(r"ohlora_eval: starting: \d+ s", ln) for ln in lines[1:first]), lines
    assert len(lines) == first + 1, lines  # nothing after the command spoke


def test_starting_says_nothing_for_a_command_that_speaks_at_once(caplog):
    with caplog.at_level("INFO", logger="ohlora_eval"):
        with starting("starting: loading", first_s=0.3, every_s=0.05):
            say("at once")
            time.sleep(0.4)
        with starting("starting: loading", first_s=0.3, every_s=0.05):
            pass  # a command that ends at once
    assert [r.getMessage() for r in caplog.records] == ["ohlora_eval: at once"]
    assert not progress._listening
    assert not [
        h for h in logging.getLogger("ohlora_eval").handlers if isinstance(h, progress._Heard)
    ]


def test_the_fit_counts_epochs_not_properties():
    """The fit's time left counted 3 properties of very different length (15, 22, 78 s):
    it now counts every regressor's epochs (or each group's SVM)."""
    from ohlora_eval.directions.fit import fit_directions, fit_work
    from ohlora_eval.directions.spec import FitSpec, GradientSpec

    rng = np.random.default_rng(0)
    mid = rng.standard_normal((300, 6)).astype(np.float32)
    scores = {p: mid[:, i].copy() for i, p in enumerate(("eyes", "mouth", "pose", "bg", "top"))}
    spec = FitSpec(n=300, grouped=False, gradient=GradientSpec(hidden=[8], epochs=3))
    step = Step("fitting", None, "")
    fit_directions(mid, scores, "z", spec, None, step=step, group_props=("bg", "top"))
    assert (step.total, step.unit, step.done) == (9, "epochs", 9)
    mixed = {"eyes": "gradient", "mouth": "svm", "pose": "svm"}
    assert fit_work(mixed, spec, 16) == (3 + 32, "epochs and SVM fits")
    assert fit_work(dict.fromkeys(mixed, "svm"), spec, 4) == (12, "SVM fits")


def test_sampling_counts_its_faces():
    """ "sampling, generating and scoring 20,000 faces" gave no count for minutes."""
    from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
    from ohlora_eval.models.scorers.synthetic import SyntheticScorer
    from ohlora_eval.pipeline.sample import FaceSetup, sample_and_score

    faces = FaceSetup(
        SyntheticFaceGenerator(resolution=32),
        SyntheticScorer(resolution=32, calibration_n=200),
        "w",
    )
    step = Step("sampling", 300, "faces")
    _, plain_mid, _ = sample_and_score(faces, 300, 3, batch=100)
    _, mid, _ = sample_and_score(faces, 300, 3, batch=100, step=step)
    assert step.done == 300 and "300 of 300 faces" in step.line()
    assert np.array_equal(mid.numpy(), plain_mid.numpy())  # counting changes no number


def test_the_speed_line_is_images_over_the_measuring_steps_wall_time():
    from ohlora_eval.pipeline.measure import Measured

    measured = Measured(
        scores=np.zeros((10, 50, 3), np.float32),
        extras={},
        groups=[""] * 10,
        compute_seconds=9.0,
        reused=1,
        computed=2,
        measured_vectors=8,
        measured_seconds=7.5,  # model time summed over chunks: not the figure
        wall_seconds=10.0,
    )
    assert measured.images_per_sec(50) == pytest.approx(40.0)
    assert measured.metrics(50)["images_per_sec"] == pytest.approx(40.0)
    assert measured.speed_line(50) == (
        "400 images generated and scored at 40 images/s (400 images in 10.0 s, the measuring"
        " step's wall time; no tracking or sheets); 1 of 3 chunks re-used from the cache"
    )


def test_screening_without_a_terminal_says_its_count_in_lines(caplog):
    """Piped to a file, the screening says lines (a phase), not a bar's carriage returns."""
    import torch

    from ohlora_eval.models.generators.synthetic import SyntheticFaceGenerator
    from ohlora_eval.models.scorers.synthetic import SyntheticScorer
    from ohlora_eval.pipeline.context import MeasureContext
    from ohlora_eval.pipeline.directions import ALL_GROUPS, Directions
    from ohlora_eval.pipeline.edit import EditSetup, grid_points
    from ohlora_eval.pipeline.measure import measure

    gen = torch.Generator().manual_seed(0)
    vectors = {
        p: {ALL_GROUPS: torch.randn(512, generator=gen).numpy()} for p in ("eyes", "mouth", "pose")
    }
    dirs = Directions(layer="w", dim=512, vectors=vectors, method=dict.fromkeys(vectors, "random"))
    grid = grid_points({"eyes": [-1.0, 1.0], "mouth": [-1.0, 1.0], "pose": [-1.0, 1.0]})
    setup = EditSetup(
        SyntheticFaceGenerator(resolution=32), SyntheticScorer(resolution=32, calibration_n=200),
        dirs, grid, "w",
    )  # fmt: skip
    z = setup.generator.sample_latents(4, 1)
    with caplog.at_level("INFO", logger="ohlora_eval"):
        got = measure(setup, z, 2, context=MeasureContext(progress=True))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ohlora_eval: screening 4 vectors ..."
    assert re.fullmatch(r"ohlora_eval: screening 4 vectors: \d+\.\d s", lines[-1]), lines
    assert got.wall_seconds >= got.measured_seconds > 0


def _pip_warning_filter() -> str:
    found = re.search(r'^PIP := PYTHONWARNINGS="([^"]+)"', (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile's pip runs with a PYTHONWARNINGS filter"
    return found.group(1)


def test_the_setup_hides_setuptools_editable_install_box():
    """`pip install -e` shows setuptools' "Editable installation." box (an InformationOnly
    warning of its editable_wheel command) even with -q; the Makefile's filter hides exactly
    that warning, in the build backend's process too (it inherits the environment)."""
    emit = (
        "from setuptools.warnings import InformationOnly;"
        "InformationOnly.emit('Editable installation.', 'Please be careful with folders')"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    plain = subprocess.run([sys.executable, "-c", emit], env=env, capture_output=True, text=True)
    assert "Editable installation" in plain.stderr  # what the box is
    hidden = subprocess.run(
        [sys.executable, "-c", emit],
        env={**env, "PYTHONWARNINGS": _pip_warning_filter()},
        capture_output=True,
        text=True,
    )
    assert hidden.returncode == 0 and hidden.stderr == ""
    other = "import warnings; warnings.warn('a real problem', UserWarning)"
    kept = subprocess.run(
        [sys.executable, "-c", other],
        env={**env, "PYTHONWARNINGS": _pip_warning_filter()},
        capture_output=True,
        text=True,
    )
    assert "a real problem" in kept.stderr  # other warnings still show


def test_the_setup_says_what_it_installs_and_about_how_long():
    text = (ROOT / "Makefile").read_text()
    recipe = text[text.index("$(STAMP): pyproject.toml") : text.index("setup: $(STAMP)")]
    steps = re.findall(r"\$\(call installing,([^,]+),([^,]+),", recipe)
    assert [what for what, _ in steps][:3] == [
        "creating $(VENV)",
        "upgrading pip",
        "installing $(TORCH_SPEC)",
    ]
    assert all(re.fullmatch(r"\d+ s", about) for _, about in steps), steps
    assert "$(PIP) install" in recipe and " -m pip install" not in recipe  # all with the filter
