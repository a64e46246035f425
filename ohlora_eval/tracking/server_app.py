"""The team server's MLflow app (``mlflow server --app-name ohlora-team``): MLflow's own
basic-auth app (every request needs a user and password) behind a guard that keeps every
artifact inside the server's proxied store.

Why a guard: MLflow lets a client choose an experiment's ``artifact_location``; with a
local path the server itself then reads and writes there (``get-artifact``,
``upload-artifact``, ``artifacts/list``), so anyone who can reach the port could read or
write any file the server's process can (MLflow's CVE-2024-1483 and CVE-2024-3848 are of
this class). The guard refuses, with 403:

- any request whose JSON body sets ``artifact_location``, ``artifact_root`` or
  ``default_artifact_root`` to anything but the proxied store (``mlflow-artifacts:``);
- artifact reads, lists and uploads of a run, and model-version artifact reads, whose stored
  location is not in the proxied store (experiments made before the guard, or by hand).

Registered as the ``mlflow.app`` entry point ``ohlora-team`` (``pyproject.toml``);
``tracking/server.py`` starts ``mlflow server`` with it. MLflow's auth settings come from
``MLFLOW_AUTH_CONFIG_PATH`` (written by ``tracking/server.py``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

PROXIED = "mlflow-artifacts:"
LOCATION_KEYS = ("artifact_location", "artifact_root", "default_artifact_root")
RUN_ARTIFACT_PATHS = (
    "/get-artifact",
    "/ajax-api/2.0/mlflow/upload-artifact",
    "/api/2.0/mlflow/artifacts/list",
    "/ajax-api/2.0/mlflow/artifacts/list",
)
MODEL_VERSION_ARTIFACT_PATH = "/model-versions/get-artifact"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def bad_location(body: Any) -> str | None:
    """The first artifact location in a JSON body (at any depth) outside the proxied store."""
    todo = [body]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in LOCATION_KEYS and isinstance(value, str) and value.strip():
                    if not value.strip().startswith(PROXIED):
                        return value
                else:
                    todo.append(value)
        elif isinstance(item, list):
            todo.extend(item)
    return None


def _run_location(query: dict[str, list[str]]) -> str | None:
    """The stored artifact location of the run a request names (None: it names none)."""
    run_id = (query.get("run_uuid") or query.get("run_id") or [None])[0]
    if not run_id:
        return None
    from mlflow.server.handlers import _get_tracking_store

    try:
        return str(_get_tracking_store().get_run(run_id).info.artifact_uri)
    except Exception:  # noqa: BLE001 - no such run: MLflow answers that itself
        return None


def _model_version_location(query: dict[str, list[str]]) -> str | None:
    name, version = (query.get("name") or [None])[0], (query.get("version") or [None])[0]
    if not name or not version:
        return None
    from mlflow.server.handlers import _get_model_registry_store

    try:
        return str(_get_model_registry_store().get_model_version_download_uri(name, version))
    except Exception:  # noqa: BLE001 - no such version: MLflow answers that itself
        return None


def outside_store(location: str | None) -> bool:
    """Whether a stored location is somewhere the server would read or write directly."""
    if location is None:
        return False
    return not (location.startswith(PROXIED) or location.startswith("runs:/"))


class ArtifactGuard:
    """ASGI middleware: the checks above, then the wrapped app."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        if scope.get("type") != "http" or b"authorization" not in headers:
            await self.app(scope, receive, send)  # no login: MLflow's auth refuses it (401)
            return
        path = str(scope.get("path", ""))
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if path.endswith(RUN_ARTIFACT_PATHS) and outside_store(_run_location(query)):
            await _refuse(send, "this run's artifacts are outside the server's artifact store")
            return
        if path.endswith(MODEL_VERSION_ARTIFACT_PATH) and outside_store(
            _model_version_location(query)
        ):
            await _refuse(send, "this model version is outside the server's artifact store")
            return
        if scope.get("method") in ("POST", "PATCH", "PUT") and "/api/" in path:
            body, receive = await _buffered(receive)
            try:
                parsed = json.loads(body) if body.strip() else None
            except (ValueError, UnicodeDecodeError):
                parsed = None  # not JSON: MLflow answers it itself
            where = bad_location(parsed)
            if where is not None:
                await _refuse(
                    send,
                    f"artifact location {where!r} refused: this server keeps every artifact in"
                    f" its own store; leave it out (the server's default, {PROXIED}/...)",
                )
                return
        await self.app(scope, receive, send)


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that hands it on once."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = bool(message.get("more_body", False))
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _refuse(send: Send, why: str) -> None:
    payload = json.dumps({"error_code": "PERMISSION_DENIED", "message": why}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def create_app() -> ArtifactGuard:
    """MLflow's basic-auth app behind the artifact guard (an ``mlflow server`` app factory)."""
    from mlflow.server.auth import create_app as with_basic_auth

    return ArtifactGuard(with_basic_auth())
