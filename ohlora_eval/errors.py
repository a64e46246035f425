"""The errors that mean "the input is wrong": any package may raise them; the commands
(``apps/cli.friendly_errors``) print their message as one line and exit 2.

Imports nothing, so every layer can use it (docs/architecture.md).
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with the user's input; the message says what to change."""


class ConfigError(UserError):  # noqa: N818 - reads as the field it names
    """Bad configuration: the message names the field and what is allowed."""


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal (SIGTERM from a scheduler or ``timeout``,
    SIGHUP): runs end as after Ctrl-C (KILLED, reason tagged, measurements kept)."""

    def __init__(self, signum: int, name: str) -> None:
        super().__init__(name)
        self.signum = signum
        self.name = name
