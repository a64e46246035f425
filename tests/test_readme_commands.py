"""Every command in the README composes and passes the config checks as written: the keys
exist, the values parse and are allowed (placeholders such as <run id> filled in). The
commands themselves run in the tests of each stage (tests/apps, tests/directions)."""

from __future__ import annotations

import re
import shlex

import pytest
from helpers import CONF_DIR, ROOT
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ohlora_eval.apps.build import preflight

CONFIG_OF = {
    "ohlora_eval": "config",
    "ohlora_eval.find_directions": "find_directions",
    "ohlora_eval.select": "select",
    "ohlora_eval.verify": "verify",
    "ohlora_eval.retest": "retest",
    "ohlora_eval.frontier": "frontier",
    "ohlora_eval.sheets": "sheets",
    "ohlora_eval.alias": "alias",
    "ohlora_eval.choose": "choose",
    "ohlora_eval.import_results": "import_results",
    "ohlora_eval.rejudge": "rejudge",
    "ohlora_eval.compare": "compare",
}
FILL = {"<run id>": "0123abcd", "<run>": "0123abcd", "<it>": "0123abcd", "<case>": "1"}


def readme_commands() -> list[tuple[int, list[str]]]:
    """(line number, argv) of each `python -m ohlora_eval...` line in an indented block."""
    lines = (ROOT / "README.md").read_text().splitlines()
    env: dict[str, str] = {}
    out = []
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        while line.endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line[:-1] + " " + lines[i].strip()
        i += 1
        m = re.match(r"^    ([A-Z]+)=\"(.*)\"$", line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        if not line.startswith("    python -m ohlora_eval"):
            continue
        text = line.strip()
        for k, v in env.items():
            text = text.replace(f"${k}", v)
        for k, v in FILL.items():
            text = text.replace(k, v)
        argv = shlex.split(text, comments=True)
        out.append((number, argv))
    return out


COMMANDS = readme_commands()


def _first_point(override: str) -> str:
    """A sweep's override (``key=a,b``, ``key={x:1},{x:2}``) as its first point; any other
    override as it is."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (parsed,) = OverridesParser.create().parse_overrides([override])
    if not parsed.is_sweep_override():
        return override
    first = next(iter(parsed.sweep_string_iterator()))
    return f"{parsed.get_key_element()}={first}"


def test_the_readme_has_the_workflow_commands():
    modules = {argv[2] for _, argv in COMMANDS}
    assert set(CONFIG_OF) - {"ohlora_eval.import_results"} <= modules | {
        "ohlora_eval.import_results"
    }
    assert len(COMMANDS) >= 25


@pytest.mark.parametrize("number, argv", COMMANDS, ids=[f"README:{n}" for n, _ in COMMANDS])
def test_readme_command_composes_and_passes_the_checks(number, argv):
    module, args = argv[2], argv[3:]
    if module == "ohlora_eval.bench":
        return
    assert module in CONFIG_OF, f"README line {number}: unknown command {module}"
    overrides = []
    for a in args:
        if a == "-m" or (a.startswith("[") and a.endswith("]") and "=" in a):
            continue  # the sweep flag; optional arguments shown in brackets
        overrides.append(_first_point(a))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(CONFIG_OF[module], overrides=overrides, return_hydra_config=True)
    if CONFIG_OF[module] == "config":
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        preflight(cfg, OmegaConf.to_container(cfg, resolve=True))
