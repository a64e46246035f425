"""Every command in the README and the docs/ pages composes and passes the config checks as
written: the keys exist, the values parse and are allowed (placeholders such as <run id>
filled in); and every relative link between those pages reaches a file (and heading) that
exists. The commands themselves run in the tests of each stage (tests/apps,
tests/directions)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

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


def doc_pages() -> list[Path]:
    """README.md, then every page of docs/ (sorted)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def readme_commands() -> list[tuple[str, list[str]]]:
    """("page:line", argv) of each `python -m ohlora_eval...` line in an indented block of
    README.md and docs/*.md. `NAME="value"` lines set $NAME for the rest of their page."""
    out = []
    for page in doc_pages():
        lines = page.read_text().splitlines()
        env: dict[str, str] = {}
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
            out.append((f"{_name(page)}:{number}", argv))
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
    """Every command is shown somewhere in README.md and docs/, and there are many."""
    modules = {argv[2] for _, argv in COMMANDS}
    assert set(CONFIG_OF) - {"ohlora_eval.import_results"} <= modules | {
        "ohlora_eval.import_results"
    }
    assert len(COMMANDS) >= 25


def test_the_commands_come_from_the_readme_and_the_docs():
    """The README's own commands are read, and so are those of the docs pages."""
    pages = {where.rsplit(":", 1)[0] for where, _ in COMMANDS}
    assert "README.md" in pages
    assert "docs/workflow.md" in pages


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_readme_command_composes_and_passes_the_checks(where, argv):
    module, args = argv[2], argv[3:]
    if module == "ohlora_eval.bench":
        return
    assert module in CONFIG_OF, f"{where}: unknown command {module}"
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


# -- links between the pages ---------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped (``_`` and
    ``-`` kept), spaces as ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown page's headings (a repeated one gets -1, -2, ... as on
    GitHub); headings inside fenced code blocks are not headings."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6} (.+?)#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def relative_links() -> list[tuple[str, str]]:
    """("page:line", target) of every relative link in README.md and docs/*.md (web
    addresses and mail links left out; indented code and fenced blocks are not markdown)."""
    out = []
    for page in doc_pages():
        fenced = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("```"):
                fenced = not fenced
            if fenced or line.startswith("    "):
                continue
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    out.append((f"{_name(page)}:{number}", target))
    return out


LINKS = relative_links()


def test_the_pages_link_each_other():
    """The link check sees the README's links to the docs pages (it is not checking nothing)."""
    targets = {t.split("#")[0] for where, t in LINKS if where.startswith("README.md:")}
    assert {"docs/workflow.md", "docs/mlflow.md", "docs/real_faces.md"} <= targets


@pytest.mark.parametrize("where, target", LINKS, ids=[f"{w} {t}" for w, t in LINKS])
def test_relative_link_resolves(where, target):
    page = ROOT / where.rsplit(":", 1)[0]
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    assert dest.exists(), f"{where}: {target} points at {dest}, which does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in anchors(dest), (
            f"{where}: {target}: {_name(dest)} has no heading with anchor #{anchor}"
        )
