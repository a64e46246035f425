"""Browser tests of MLflow's UI (a package, so its conftest is ``ui.conftest``, not a second
module named ``conftest`` beside tests/conftest.py)."""
