"""Reading a registered selection back: the version a ``<name>@<alias>`` or
``<name>/<version>`` names, and its manifest and vectors (verify, ``ohlora_eval.selection``).
Recording one: ``registry.py``."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ohlora_eval.errors import UserError
from ohlora_eval.formats.z_vectors import MANIFEST, Z_FILE, read_z_csv
from ohlora_eval.tracking import store


def version_of(client: MlflowClient, spec: str):
    """The registered version ``spec`` names (``<name>@<alias>`` or ``<name>/<version>``);
    an unknown model, alias or version is a UserError naming what exists instead."""
    alias = version = None
    if "@" in spec:
        name, alias = spec.split("@", 1)
    elif "/" in spec:
        name, version = spec.rsplit("/", 1)
    else:
        raise UserError(
            f"model={spec!r}: write <name>@<alias> or <name>/<version>,"
            " e.g. 'ohlora-final-latents@final' or 'ohlora-final-latents/1'"
        )
    try:
        registered = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        raise UserError(
            f"model={spec}: no registered model {name!r} in the store"
            f" {store.display_uri(client.tracking_uri)} (registered: {', '.join(names) or 'none'});"
            " record a selection with python -m ohlora_eval.select run_id=<run> cases=[...], or"
            " point uri=/root= (or MLFLOW_TRACKING_URI) at the store that has it"
        ) from None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if alias is not None and alias not in registered.aliases:
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(registered.aliases.items()))
        raise UserError(
            f"model={spec}: {name!r} has no alias {alias!r} (aliases: {aliases or 'none'};"
            f" versions: {versions}); use {name}@<alias> or {name}/<version>"
        )
    if version is not None and (not version.isdigit() or int(version) not in versions):
        raise UserError(
            f"model={spec}: {name!r} has no version {version!r} (versions: {versions});"
            f" use {name}/<version> or {name}@<alias>"
        )
    if alias is not None:
        return store.retry(client.get_model_version_by_alias, name, alias)
    return store.retry(client.get_model_version, name, version)


def load_selection(client: MlflowClient, spec: str, tmp: Path) -> tuple[dict, np.ndarray, str]:
    """The manifest and vectors of a registered selection, and 'name/version'."""
    mv = version_of(client, spec)
    what = f"model={spec} (version {mv.version}, run {mv.run_id}, files at {mv.source})"
    try:
        # The version's files are those of its logged model; found through this client's
        # store (never MLflow's process-wide URIs, which may point elsewhere).
        model_id = mv.model_id or str(mv.source).rsplit("/", 1)[-1]
        location = client.get_logged_model(model_id).artifact_location
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=str(tmp), tracking_uri=client.tracking_uri
            )
        )
    except Exception as exc:  # the version's files deleted or unreachable
        raise UserError(
            f"{what}: its files cannot be read ({type(exc).__name__}: {exc}); were they"
            " deleted? record the selection again with python -m ohlora_eval.select"
        ) from None
    if not any(local.rglob("*")):
        raise UserError(
            f"{what}: its files are gone (deleted?); record the selection again with"
            " python -m ohlora_eval.select"
        )
    found = list(local.rglob(MANIFEST))
    if not found:
        raise UserError(f"{what} holds no {MANIFEST}: not an ohlora_eval selection")
    folder = found[0].parent
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except ValueError as exc:
        raise UserError(f"{what}: {MANIFEST} is not valid JSON ({exc})") from None
    return manifest, read_z_csv(folder / Z_FILE), f"{mv.name}/{mv.version}"
