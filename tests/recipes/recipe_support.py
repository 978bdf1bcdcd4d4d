"""Driving the recipe apps in-process and reading what their cleanups logged.

Every cleanup of the examples logs one record carrying the request's ``Outcome`` as
``record.outcome``; :func:`cleanups_run` turns the records into comparable tuples.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import pytest

from asgi_cleanup import CleanupMiddleware, Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

#: What one cleanup saw: ("dynamic" or "directive", path, status, exception type name or
#: None, response complete).
Ran = tuple[str, str, int | None, str | None, bool]


def client_for(app: Any) -> httpx.AsyncClient:
    """An in-process client that answers 500 when the app raises, as a server would."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def summary(kind: str, outcome: Outcome) -> Ran:
    exception = None if outcome.exception is None else type(outcome.exception).__name__
    return (kind, outcome.scope["path"], outcome.status, exception, outcome.response_complete)


def cleanups_run(caplog: pytest.LogCaptureFixture) -> list[Ran]:
    """What the examples' cleanups logged so far, in order."""
    ran = []
    for record in caplog.records:
        outcome = getattr(record, "outcome", None)
        if isinstance(outcome, Outcome):
            kind = record.getMessage().split(" ", 1)[0]  # "dynamic cleanup: ..."
            ran.append(summary(kind, outcome))
    return ran


def cleanup_layer(app: Any) -> CleanupMiddleware:
    """The ``CleanupMiddleware`` in ``app``: itself, or the first found down the ``.app`` /
    ``.asgi_app`` / ``.middleware_stack`` chain of a started framework app."""
    layer = app
    for _ in range(50):
        if isinstance(layer, CleanupMiddleware):
            return layer
        layer = (
            getattr(layer, "middleware_stack", None)
            or getattr(layer, "app", None)
            or getattr(layer, "asgi_app", None)
        )
        if layer is None:
            break
    raise AssertionError(f"no CleanupMiddleware in {app!r}")


def websocket_scope(path: str) -> Scope:
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
    }


async def websocket_echo(app: ASGIApp, path: str, text: str) -> list[Message]:
    """Connect to ``path``, send ``text``, and return what the app sent until it returned.

    The client's disconnect is delivered only after the app has sent its close, so that a
    framework listening for it (Quart) does not end the session early.
    """
    sent: list[Message] = []
    to_app, from_client = anyio.create_memory_object_stream[Message](8)
    with to_app, from_client:
        to_app.send_nowait({"type": "websocket.connect"})
        to_app.send_nowait({"type": "websocket.receive", "text": text})

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "websocket.close":
                to_app.send_nowait({"type": "websocket.disconnect", "code": 1000})

        with anyio.fail_after(5):
            await app(websocket_scope(path), from_client.receive, send)
    return sent


async def lifespan(app: ASGIApp) -> list[str]:
    """Run a lifespan startup, then a shutdown, through ``app``; the message types it sent."""
    sent: list[str] = []
    started = anyio.Event()
    asked: list[str] = []

    async def receive() -> Message:
        if not asked:
            asked.append("lifespan.startup")
        else:
            await started.wait()
            asked.append("lifespan.shutdown")
        return {"type": asked[-1]}

    async def send(message: Message) -> None:
        sent.append(message["type"])
        if message["type"].startswith("lifespan.startup."):
            started.set()

    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
    with anyio.fail_after(5):
        await app(scope, receive, send)
    return sent


@contextmanager
def root_logging_kept() -> Iterator[None]:
    """Undo what constructing an app does to the root logger (Litestar's default
    ``LoggingConfig`` replaces its handlers and level), so other tests log as before."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
