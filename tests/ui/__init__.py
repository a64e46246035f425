"""Browser tests of MLflow's UI (a package, so its conftest does not shadow tests/conftest.py)."""
