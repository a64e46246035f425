"""Names and aliases of registered selections: checked before anything is written, shown
quoted for a shell, and moved (``python -m ohlora_eval.alias``).

MLflow refuses some names and aliases only after a version was logged, and an alias that
reads as a version number would be mistaken for one: ``check_model_name`` and
``check_alias`` turn either into one ``UserError`` line first. ``model_ref`` is how printed
commands name a version; ``alias_version`` and ``move_alias`` read and move an alias.
"""

from __future__ import annotations

import posixpath
import re
import shlex

from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError
from ohlora_eval.tracking import store


def check_model_name(name: object, key: str = "name") -> str:
    """A registered-model name MLflow accepts, checked before anything is written: not
    empty, no ``/``, ``:`` or ``@`` (name@alias), not a path that resolves elsewhere (``..``,
    ``a/./b``), printable, at most 250 characters. Else a UserError naming ``key``."""
    text = "" if name is None else str(name)
    problem = None
    if not text.strip():
        problem = "is empty"
    elif "/" in text or ":" in text:
        problem = "holds / or :, which MLflow does not allow in a model name"
    elif "@" in text:
        problem = "holds @, which model=<name>@<alias> would read as an alias"
    elif posixpath.normpath(text) != text or text in (".", "..") or text.startswith(".."):
        problem = "would resolve to another name as a path"
    elif not text.isprintable():
        problem = "holds a control character"
    elif len(text) > 250:
        problem = f"is {len(text)} characters long (at most 250)"
    if problem:
        raise UserError(f"{key}={text!r} {problem}; e.g. {key}=ohlora-final-latents")
    return text


_ALIAS = re.compile(r"^[\w\-]+$")


def check_alias(alias: object, key: str = "alias") -> str:
    """An alias MLflow accepts and that cannot be mistaken for a version: letters, digits,
    ``_`` and ``-`` only, at most 255 characters, not ``latest`` (reserved), not ``v<n>``
    (a version's own alias) and not a bare number. Else a UserError naming ``key``."""
    text = "" if alias is None else str(alias)
    problem = None
    if not text:
        problem = "is empty"
    elif len(text) > 255:
        problem = f"is {len(text)} characters long (at most 255)"
    elif not _ALIAS.match(text):
        problem = "may hold only letters, digits, _ and -"
    elif text.lower() == "latest":
        problem = "is reserved by MLflow (it means the newest version)"
    elif re.fullmatch(r"[vV]\d+", text) or text.isdigit():
        problem = "reads as a version number"
    if problem:
        raise UserError(
            f"{key}={text[:60]!r}{'...' if len(text) > 60 else ''} {problem}; e.g. {key}=final"
        )
    return text


def model_ref(name: str, alias: str | None = None, version: str | None = None) -> str:
    """``name@alias`` or ``name/version`` quoted for a shell command line (a name may hold
    spaces): what printed commands show."""
    return shlex.quote(f"{name}@{alias}" if alias else f"{name}/{version}")


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version ``alias`` points to, or None."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except Exception:  # noqa: BLE001 - no such alias (or model)
        return None


def move_alias(client: MlflowClient, name: str, version: str, alias: str) -> str:
    """Point ``alias`` of registered model ``name`` at ``version``; say what changed."""
    try:
        client.get_model_version(name, str(version))
    except Exception:
        raise UserError(f"model={name}/{version}: no such registered model version") from None
    before = alias_version(client, name, alias)
    if before == str(version):
        return f"alias {alias!r} already on version {version}"
    store.retry(client.set_registered_model_alias, name, alias, str(version))
    if before is None:
        return f"alias {alias!r} set on version {version}"
    return f"alias {alias!r} moved to version {version} (was on version {before})"
