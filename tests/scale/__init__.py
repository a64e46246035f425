"""Ray workers and the PostgreSQL team server (a package, so its conftest is
``scale.conftest``, not a second module named ``conftest`` beside tests/conftest.py)."""
