"""What a command says, through ``logging``: on the terminal as plain lines (results on
stdout, the rest on stderr), in Hydra's job log too, and nothing set up for a program that
only imports the package."""

from __future__ import annotations

import logging
import warnings

import pytest
from helpers.paths import CONF_DIR
from omegaconf import OmegaConf

from ohlora_eval import progress
from ohlora_eval.apps import cli
from ohlora_eval.tracking import runs

PKG = logging.getLogger("ohlora_eval")


def test_the_terminal_shows_the_messages_as_print_did(capsys):
    saved = PKG.level, PKG.propagate, list(PKG.handlers)
    with cli.terminal():
        with cli.terminal():  # nested: set up once
            progress.say("fitting ...")
        result = "\nohlora_eval: passed 1 of 2\n  run r"
        logging.getLogger("ohlora_eval.apps.x").info(result, extra=progress.STDOUT)
        with runs.timed("slow step", slow_s=-1):
            pass
        logging.getLogger("ohlora_eval.y").debug("not shown")
    out, err = capsys.readouterr()
    assert out == "\nohlora_eval: passed 1 of 2\n  run r\n"
    assert err.startswith("ohlora_eval: fitting ...\nohlora_eval: slow step: ")
    assert err.endswith(" s\n") and err.count("\n") == 2
    assert (PKG.level, PKG.propagate, list(PKG.handlers)) == saved  # as it was after


def test_a_program_that_imports_the_package_gets_no_handler_of_it(capsys):
    assert not PKG.handlers and PKG.propagate
    progress.say("nobody asked")  # INFO: where the program's logging puts it (nowhere here)
    assert capsys.readouterr() == ("", "")


@pytest.fixture
def hydra_job(tmp_path, monkeypatch):
    """A Hydra job's logging as our ``job_logging`` (conf/hydra/job_logging/ohlora.yaml)
    leaves it: a file handler on the root and on the package's logger, with its terminal."""
    monkeypatch.setattr(cli, "job_folder", lambda: tmp_path)
    handler = logging.FileHandler(tmp_path / "job.log")
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    PKG.handlers = [cli.Terminal("stdout"), cli.Terminal("stderr"), handler]
    PKG.propagate = False
    PKG.setLevel(logging.INFO)
    yield tmp_path / "job.log"
    cli._after_job()  # what a command's job does when it ends
    root.removeHandler(handler)
    handler.close()


def test_our_job_logging_gives_the_package_the_terminal_and_the_job_log():
    conf = OmegaConf.load(CONF_DIR / "hydra" / "job_logging" / "ohlora.yaml")
    assert conf.loggers.ohlora_eval.handlers == ["stdout", "stderr", "file"]
    assert not conf.loggers.ohlora_eval.propagate and "file" in conf.root.handlers
    assert conf.handlers.stdout["()"] == "ohlora_eval.apps.cli.Terminal"


def test_the_job_log_gets_every_line_the_terminal_shows(hydra_job, capsys):
    own = logging.getLogger("selfshown")  # a library that writes to the terminal itself
    own.propagate, own.handlers = False, [logging.StreamHandler()]
    try:
        with cli.terminal(), cli.job_log() as path:
            assert path == hydra_job
            progress.say("sampling ...")
            logging.getLogger("ohlora_eval.r").info("the summary", extra=progress.STDOUT)
            own.warning("a library's note")
            # logging.captureWarnings: to the root's handlers (a job's: its terminal and log)
            warnings.warn("cache chunk c.npz is not used", UserWarning, stacklevel=1)
        own.warning("after the job")
    finally:
        own.handlers, own.propagate = [], True
    out, err = capsys.readouterr()
    assert out == "the summary\n"
    assert err == "ohlora_eval: sampling ...\na library's note\nafter the job\n"
    log = hydra_job.read_text()
    assert "[ohlora_eval.progress][INFO] - ohlora_eval: sampling ...\n" in log
    assert "[ohlora_eval.r][INFO] - the summary\n" in log
    assert "[selfshown][WARNING] - a library's note\n" in log
    assert "[py.warnings][WARNING] - " in log and "cache chunk c.npz is not used" in log
    assert "after the job" not in log  # the job's handlers are gone after it


def test_outside_a_job_nothing_is_logged_to_a_file(monkeypatch):
    monkeypatch.setattr(cli, "job_folder", lambda: None)
    with cli.job_log() as path:
        assert path is None


def test_a_long_phase_says_where_it_is_every_few_seconds(caplog):
    """No step is silent for long: a phase says, every ``every_s``, how long it has run, how
    many of its units are done and (once a few units past the first are done: a rate)
    about how long is left; then its total time."""
    import time

    from ohlora_eval.progress import phase

    with caplog.at_level("INFO", logger="ohlora_eval.progress"):
        with phase("rendering", total=8, unit="sheets", every_s=0.1) as step:
            for _ in range(8):
                time.sleep(0.12)
                step.advance()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ohlora_eval: rendering ..."
    beats = [ln for ln in lines[1:-1] if "of 8 sheets" in ln]
    assert len(beats) >= 3, lines
    assert any("s left" in ln for ln in beats), lines
    assert lines[-1].startswith("ohlora_eval: rendering: ") and lines[-1].endswith(" s")
