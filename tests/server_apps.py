"""ASGI apps served by real servers in ``test_real_servers.py``.

Loaded by uvicorn/hypercorn in a subprocess as ``server_apps:app``. Built from the public API
only: the routes register cleanups on ``scope["cleanup"]``, and every cleanup leaves its marks as
JSON lines in the file named by the ``ASGI_CLEANUP_MARKS`` environment variable, so that the test
process can see what happened (and when) across the process boundary.

A mark is ``{"event": "start" | "end", "id": ..., "idx": ..., "t": time.time(), "pid": ...}``;
"end" marks also carry the request's ``Outcome`` as read from ``scope["cleanup"].outcome`` at
cleanup time (``status``, ``exception``, ``response_complete``, ``client_disconnected``).

Routes (query parameters in brackets, ``id`` names the request in the marks):

- ``/health``: 200 "ok", no cleanup.
- ``/slow`` [id, sleep=1.5, n=1, sync=0, mix=0]: 200 "ok"; registers ``n`` cleanups that sleep
  ``sleep`` seconds (async, or sync with ``sync=1``; ``mix=1`` makes even indexes sync and odd
  ones async).
- ``/slow-sync`` [id, sleep=1.5]: ``/slow`` with a sync cleanup (``time.sleep``).
- ``/long-cleanup`` [id, seconds=3, sync=0]: ``/slow`` with a longer default, for shutdown tests.
- ``/error`` [id, sleep=1.5]: registers a cleanup, then raises before starting the response.
- ``/error-after-start`` [id, sleep=1.5]: sends the start and a first body chunk
  (``more_body=True``), then raises.
- ``/error-after-response`` [id, sleep=1.5]: sends a complete response, then raises.
- ``/stream`` [id, chunks=25, interval=0.2, sleep=0]: streams chunks slowly, watching
  ``receive()`` for ``http.disconnect`` as Starlette's ``StreamingResponse`` does, and stops when
  the client has gone; registers a cleanup that records the outcome.

Every route is also served *without* the middleware under the prefix ``/bare`` (e.g.
``/bare/error``), so that a test can compare what the server does with and without it; there no
cleanup is registered (``scope`` has no ``"cleanup"``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import anyio

from asgi_cleanup import CleanupMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MARKS_ENV = "ASGI_CLEANUP_MARKS"
BARE_PREFIX = "/bare"


class AppError(RuntimeError):
    """The error the ``/error*`` routes raise."""


def mark(event: str, rid: str, **fields: Any) -> None:
    """Append one JSON line to the marks file (one ``write`` per line, then flush)."""
    path = os.environ.get(MARKS_ENV)
    if not path:
        return
    record = {"event": event, "id": rid, "t": time.time(), "pid": os.getpid(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def outcome_fields(registry: Any) -> dict[str, Any]:
    """The request's Outcome as JSON-able fields (``outcome: None`` if there is none yet)."""
    outcome = getattr(registry, "outcome", None)
    if outcome is None:
        return {"outcome": None}
    exc = getattr(outcome, "exception", None)
    return {
        "outcome": {
            "status": getattr(outcome, "status", None),
            "exception": None if exc is None else repr(exc),
            "response_complete": getattr(outcome, "response_complete", None),
            "client_disconnected": getattr(outcome, "client_disconnected", None),
            "duration": getattr(outcome, "duration", None),
        }
    }


async def async_cleanup(registry: Any, rid: str, idx: int, seconds: float) -> None:
    mark("start", rid, idx=idx, kind="async")
    if seconds > 0:
        await anyio.sleep(seconds)
    mark("end", rid, idx=idx, kind="async", **outcome_fields(registry))


def sync_cleanup(registry: Any, rid: str, idx: int, seconds: float) -> None:
    mark("start", rid, idx=idx, kind="sync")
    if seconds > 0:
        time.sleep(seconds)
    mark("end", rid, idx=idx, kind="sync", **outcome_fields(registry))


def _register(scope: Scope, rid: str, idx: int, seconds: float, sync: bool) -> None:
    registry = scope.get("cleanup")
    if registry is None:  # a /bare route: no middleware
        return
    func = sync_cleanup if sync else async_cleanup
    registry.register(func, registry, rid, idx, seconds)


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


async def _drain_request(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _start(status: int = 200, length: int | None = None) -> Message:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_text(send: Send, text: bytes, status: int = 200) -> None:
    await send(_start(status, len(text)))
    await send({"type": "http.response.body", "body": text, "more_body": False})


async def _stream(scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
    rid = q.get("id", "-")
    chunks = int(q.get("chunks", "25"))
    interval = float(q.get("interval", "0.2"))
    _register(scope, rid, 0, float(q.get("sleep", "0")), False)
    await _drain_request(receive)
    async with anyio.create_task_group() as tg:

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    mark("disconnect-seen", rid)
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(watch_disconnect)
        await send(_start(200))
        for i in range(chunks):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
            await anyio.sleep(interval)
        await send({"type": "http.response.body", "body": b"done\n", "more_body": False})
        mark("stream-complete", rid)
        tg.cancel_scope.cancel()


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app under test, without the middleware."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    q = _query(scope)
    rid = q.get("id", "-")
    sleep = float(q.get("sleep", "1.5"))

    if path == "/health":
        await _drain_request(receive)
        await _send_text(send, b"ok")
    elif path in ("/slow", "/slow-sync", "/long-cleanup"):
        if path == "/long-cleanup":
            sleep = float(q.get("seconds", "3"))
        sync = path == "/slow-sync" or q.get("sync") == "1"
        mix = q.get("mix") == "1"
        for idx in range(int(q.get("n", "1"))):
            _register(scope, rid, idx, sleep, (idx % 2 == 0) if mix else sync)
        await _drain_request(receive)
        await _send_text(send, b"ok")
    elif path == "/error":
        _register(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        raise AppError(f"boom before start {rid}")
    elif path == "/error-after-start":
        _register(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        await send(_start(200))
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise AppError(f"boom after start {rid}")
    elif path == "/error-after-response":
        _register(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        await _send_text(send, b"ok")
        raise AppError(f"boom after response {rid}")
    elif path == "/stream":
        await _stream(scope, receive, send, q)
    else:
        await _drain_request(receive)
        await _send_text(send, b"not found", status=404)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("lifespan-shutdown", "-")
            await send({"type": "lifespan.shutdown.complete"})
            return


wrapped_app = CleanupMiddleware(inner_app)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """What the servers serve: ``/bare/...`` without the middleware, all else through it."""
    if scope["type"] in ("http", "websocket"):
        path: str = scope["path"]
        if path == BARE_PREFIX or path.startswith(BARE_PREFIX + "/"):
            scope = dict(scope)
            scope["path"] = path[len(BARE_PREFIX) :] or "/"
            await inner_app(scope, receive, send)
            return
    await wrapped_app(scope, receive, send)
