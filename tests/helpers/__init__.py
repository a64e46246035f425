"""Plain helpers and constants the tests share, imported like any module: ``from helpers import
ROOT, clean_env`` (``pythonpath = ["tests"]`` in pyproject.toml's pytest settings puts
``tests/`` on the import path). Fixtures stay in ``tests/conftest.py``, where pytest finds
them; nothing imports a conftest.

By subject: ``paths`` (the checkout, its configs, the reference data), ``config`` (configs
composed as the apps compose them), ``processes`` (subprocesses and servers), ``browser``
(Chromium and Playwright), ``faces`` (the real-faces packages). What only one test folder
uses sits beside its tests (``models/parity_recipe.py``, ``review/review_wrappers.py``,
``scale/scale_common.py``, ``ui/ui_common.py``).
"""

from helpers.browser import CHROMIUM, CHROMIUM_ARGS, playwright_or_skip
from helpers.config import SMALL, compose_app, composer, conf_cutoffs, conf_grid
from helpers.faces import FACES_PACKAGES, real_faces_or_skip
from helpers.paths import CONF_DIR, REFERENCE, ROOT, reference_file
from helpers.processes import clean_env, free_port

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "CONF_DIR",
    "FACES_PACKAGES",
    "REFERENCE",
    "ROOT",
    "SMALL",
    "clean_env",
    "compose_app",
    "composer",
    "conf_cutoffs",
    "conf_grid",
    "free_port",
    "playwright_or_skip",
    "real_faces_or_skip",
    "reference_file",
]
