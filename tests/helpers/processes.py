"""Subprocesses and the servers tests start."""

from __future__ import annotations

import os
import socket


def clean_env() -> dict[str, str]:
    """Environment for a subprocess: its own store from its arguments, no inherited URI."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    return env


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
