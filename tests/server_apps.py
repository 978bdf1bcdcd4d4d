"""ASGI apps served by real servers in ``test_real_servers.py`` and by the soak tool.

Loaded by uvicorn/hypercorn/granian/daphne in a subprocess as ``server_apps:app``. Built from
the public API only: the routes register cleanups on ``scope["cleanup"]``, and every cleanup
leaves its marks as JSON lines in the file named by the ``ASGI_CLEANUP_MARKS`` environment
variable, so that the test process can see what happened (and when) across the process boundary.

A mark is ``{"event": ..., "id": ..., "t": time.time(), "pid": ..., ...}``. Events: "reg" when a
cleanup is registered, "start" and "end" from the cleanup itself ("end" also when it raises, is
cancelled or is abandoned; "end" marks also carry the request's ``Outcome`` as read from
``scope["cleanup"].outcome`` at cleanup time: ``status``, ``exception``, ``response_complete``,
``client_disconnected``), and some route-specific ones named below. Cleanup marks carry ``idx``,
the cleanup's place in its request's registration order.

Environment: ``ASGI_CLEANUP_TIMEOUT`` and ``ASGI_CLEANUP_SHUTDOWN_TIMEOUT`` (seconds or
``none``; defaults 5 and 30), ``ASGI_CLEANUP_THREAD_LIMIT`` (default 8) and
``ASGI_CLEANUP_ON_ERROR=raise`` (an ``on_error`` hook that fails) configure the middleware;
``ASGI_CLEANUP_LOG_LOCALS=1`` adds every traceback local to the log lines;
``ASGI_CLEANUP_BYPASS=1`` serves everything without it (a baseline for the server's own memory
use). The middleware's log records go to stderr, so to
the server's log, one line each (traceback included, as JSON) after :data:`LOG_PREFIX`.

Routes (query parameters in brackets, ``id`` names the request in the marks); responses of this
module carry an ``x-pid`` header with the serving process's pid:

- ``/health``: 200 "ok", no cleanup.
- ``/slow`` [id, sleep=1.5, n=1, sync=0, mix=0, hold=0]: 200 "ok"; registers ``n`` cleanups that
  sleep ``sleep`` seconds (async, or sync with ``sync=1``; ``mix=1`` makes even indexes sync and
  odd ones async); the app itself sleeps ``hold`` seconds before it answers.
- ``/slow-sync`` [id, sleep=1.5]: ``/slow`` with a sync cleanup (``time.sleep``).
- ``/long-cleanup`` [id, seconds=3, sync=0]: ``/slow`` with a longer default, for shutdown tests.
- ``/error`` [id, sleep=1.5]: registers a cleanup, then raises before starting the response.
- ``/error-after-start`` [id, sleep=1.5]: sends the start and a first body chunk
  (``more_body=True``), then raises.
- ``/error-after-response`` [id, sleep=1.5]: sends a complete response, then raises.
- ``/stream`` [id, chunks=25, interval=0.2, sleep=0]: streams chunks slowly, watching
  ``receive()`` for ``http.disconnect`` as Starlette's ``StreamingResponse`` does, and stops when
  the client has gone; registers a cleanup that records the outcome.
- ``/upload`` [id, sleep=0]: registers a cleanup, then reads the request body; "upload-progress"
  marks (bytes so far) at each MiB; on ``http.disconnect`` marks "disconnect-seen" and returns
  without a response; otherwise answers with the byte count.
- ``/faulty`` [id, faults=raise,hang,block,late, block=2, hang=30]: registers well-behaved
  cleanups (even ``idx``, alternately sync and async, 20 ms each) between faulty ones: one that
  raises :class:`CleanupFailure`, one that awaits ``hang`` seconds (past its timeout), a sync
  one that blocks its thread ``block`` seconds, one that registers another cleanup late (which
  must never run: it would mark "late-ran").
- ``/late-receive`` [id]: sends a complete response, then calls ``receive()`` (0.5 s bound)
  and marks "late-receive" with what came (``message``: its type, or None).
- ``/file`` [id]: Starlette's ``FileResponse`` of this file, with a cleanup.
- ``/scope`` : JSON: ``scope["asgi"]``, ``scope.get("extensions")``, whether lifespan started.
- ``/odd-callable`` [id]: registers a cleanup, then one that raises when looked at or called
  (as an unbound werkzeug ``LocalProxy``); 200 "ok".
- ``/linger`` [id, seconds=2]: sends a complete response, then goes on ``seconds`` in the app
  call; marks "linger-start", then "linger-end", or "linger-cancelled" if cancelled, and
  "linger-finally" in any case. Under ``/bare`` (no cleanup phase) it shows what the server
  does to an app call that outlives its response.
- websocket ``/ws`` [id, sleep=0, linger=0]: accepts, registers a cleanup, echoes text
  messages; on the text "close" it closes itself (code 4000); when the client closed, marks
  "ws-disconnect" (with the code) and returns ``linger`` seconds later.

Every route is also served *without* the middleware under the prefix ``/bare`` (e.g.
``/bare/error``), so that a test can compare what the server does with and without it; there no
cleanup is registered (``scope`` has no ``"cleanup"``).

Any route given ``cancel_after`` (seconds) runs inside a deadline outside the middleware, as a
request-timeout middleware would: on asyncio the app call runs in a task that is cancelled
natively (``asyncio.wait_for``), as servers cancel request tasks; on trio in a cancel scope. If
the response has not started by then, the deadline answers 504 itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
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
#: Every log record of the ``asgi_cleanup`` logger is one line of the server's log after this.
LOG_PREFIX = "[asgi_cleanup log]"
#: In the message of every exception a cleanup of this module raises.
CLEANUP_ERROR_TEXT = "CLEANUP-FAILURE-TEXT"

FAULTS = ("raise", "hang", "block", "late")


class AppError(RuntimeError):
    """The error the ``/error*`` routes raise."""


class CleanupFailure(RuntimeError):
    """The error the failing cleanups raise."""


def mark(event: str, rid: str, **fields: Any) -> None:
    """Append one JSON line to the marks file (one ``write`` per line, then flush)."""
    path = os.environ.get(MARKS_ENV)
    if not path:
        return
    record = {"event": event, "id": rid, "t": time.time(), "pid": os.getpid(), **fields}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


class _OneLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = {"level": record.levelname, "message": record.getMessage(), "exc": exc}
        if record.exc_info and os.environ.get("ASGI_CLEANUP_LOG_LOCALS") == "1":
            fields["locals"] = _traceback_locals(record.exc_info[2])
        return f"{LOG_PREFIX} {json.dumps(fields)}"


def _traceback_locals(tb: Any) -> list[str]:
    """Every local of every frame of ``tb``, as a formatter that renders locals (or an error
    tracker with Sentry's default ``include_local_variables``) would record them."""
    rendered = []
    while tb is not None:
        for name, value in tb.tb_frame.f_locals.items():
            try:
                if isinstance(value, dict | list | tuple):
                    text = repr(list(value.items()) if isinstance(value, dict) else list(value))
                else:
                    text = repr(value)
            except Exception as exc:
                text = f"<repr failed: {exc!r}>"
            rendered.append(f"{name}={text}")
        tb = tb.tb_next
    return rendered


def _configure_logging() -> None:
    logger = logging.getLogger("asgi_cleanup")
    if any(isinstance(h.formatter, _OneLineFormatter) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


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
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            # Cut by its timeout (or a cancellation that reached the phase): the mark says so.
            mark("end", rid, idx=idx, kind="async", cancelled=True, **outcome_fields(registry))
            raise
    mark("end", rid, idx=idx, kind="async", **outcome_fields(registry))


def sync_cleanup(registry: Any, rid: str, idx: int, seconds: float) -> None:
    mark("start", rid, idx=idx, kind="sync")
    if seconds > 0:
        time.sleep(seconds)
    mark("end", rid, idx=idx, kind="sync", **outcome_fields(registry))


async def raising_cleanup(registry: Any, rid: str, idx: int) -> None:
    mark("start", rid, idx=idx, kind="raise")
    mark("end", rid, idx=idx, kind="raise", **outcome_fields(registry))
    raise CleanupFailure(f"{CLEANUP_ERROR_TEXT} from cleanup {idx} of {rid}")


async def hanging_cleanup(registry: Any, rid: str, idx: int, seconds: float) -> None:
    mark("start", rid, idx=idx, kind="hang")
    cancelled = False
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        cancelled = True
        raise
    finally:
        mark("end", rid, idx=idx, kind="hang", cancelled=cancelled, **outcome_fields(registry))


def blocking_cleanup(registry: Any, rid: str, idx: int, seconds: float) -> None:
    mark("start", rid, idx=idx, kind="block")
    time.sleep(seconds)
    mark("end", rid, idx=idx, kind="block", **outcome_fields(registry))


async def late_registering_cleanup(registry: Any, rid: str, idx: int) -> None:
    mark("start", rid, idx=idx, kind="late")
    registry.register(mark, "late-ran", rid)  # the phase has started: must never run
    mark("end", rid, idx=idx, kind="late", **outcome_fields(registry))


def _register(scope: Scope, rid: str, idx: int, func: Callable[..., Any], *args: Any) -> None:
    registry = scope.get("cleanup")
    if registry is None:  # a /bare route: no middleware
        return
    registry.register(func, registry, rid, idx, *args)
    mark("reg", rid, idx=idx)


def _register_sleep(scope: Scope, rid: str, idx: int, seconds: float, sync: bool) -> None:
    _register(scope, rid, idx, sync_cleanup if sync else async_cleanup, seconds)


def _query(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return {k: v[-1] for k, v in parse_qs(raw).items()}


async def _drain_request(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


def _start(status: int = 200, length: int | None = None, ctype: bytes = b"text/plain") -> Message:
    headers = [(b"content-type", ctype + b"; charset=utf-8"), (b"x-pid", b"%d" % os.getpid())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


async def _send_text(
    send: Send, text: bytes, status: int = 200, ctype: bytes = b"text/plain"
) -> None:
    await send(_start(status, len(text), ctype))
    await send({"type": "http.response.body", "body": text, "more_body": False})


async def _stream(scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
    rid = q.get("id", "-")
    chunks = int(q.get("chunks", "25"))
    interval = float(q.get("interval", "0.2"))
    _register_sleep(scope, rid, 0, float(q.get("sleep", "0")), False)
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


async def _upload(scope: Scope, receive: Receive, send: Send, q: dict[str, str]) -> None:
    rid = q.get("id", "-")
    _register_sleep(scope, rid, 0, float(q.get("sleep", "0")), False)
    received = 0
    next_progress = 1 << 20
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            mark("disconnect-seen", rid, received=received)
            return
        received += len(message.get("body", b""))
        if received >= next_progress:
            mark("upload-progress", rid, received=received)
            next_progress += 1 << 20
        if not message.get("more_body", False):
            break
    await _send_text(send, b"got %d" % received)


def _register_faulty(scope: Scope, rid: str, q: dict[str, str]) -> None:
    faults = [f for f in q.get("faults", ",".join(FAULTS)).split(",") if f]
    idx = 0
    for i, fault in enumerate([*faults, None]):
        _register_sleep(scope, rid, idx, 0.02, sync=i % 2 == 0)
        idx += 1
        if fault == "raise":
            _register(scope, rid, idx, raising_cleanup)
        elif fault == "hang":
            _register(scope, rid, idx, hanging_cleanup, float(q.get("hang", "30")))
        elif fault == "block":
            _register(scope, rid, idx, blocking_cleanup, float(q.get("block", "2")))
        elif fault == "late":
            _register(scope, rid, idx, late_registering_cleanup)
        elif fault is not None:
            raise ValueError(f"unknown fault {fault!r}")
        idx += 1


async def _late_receive(scope: Scope, receive: Receive, send: Send, rid: str) -> None:
    _register_sleep(scope, rid, 0, 0, False)
    await _drain_request(receive)
    await _send_text(send, b"ok")
    message: Message | None = None
    with anyio.move_on_after(0.5):
        message = await receive()
    mark("late-receive", rid, message=None if message is None else message["type"])


async def _linger(send: Send, q: dict[str, str]) -> None:
    rid = q.get("id", "-")
    await _send_text(send, b"ok")
    mark("linger-start", rid)
    try:
        await anyio.sleep(float(q.get("seconds", "2")))
        mark("linger-end", rid)
    except BaseException as exc:
        if isinstance(exc, anyio.get_cancelled_exc_class()):
            mark("linger-cancelled", rid)
        raise
    finally:
        mark("linger-finally", rid)


async def _websocket(scope: Scope, receive: Receive, send: Send) -> None:
    q = _query(scope)
    rid = q.get("id", "-")
    message = await receive()
    assert message["type"] == "websocket.connect", message
    _register_sleep(scope, rid, 0, float(q.get("sleep", "0")), False)
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            mark("ws-disconnect", rid, code=message.get("code"))
            await anyio.sleep(float(q.get("linger", "0")))
            return
        text = message.get("text")
        if text == "close":
            await send({"type": "websocket.close", "code": 4000})
            return
        await send({"type": "websocket.send", "text": f"echo {text}"})


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The app under test, without the middleware."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
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
            _register_sleep(scope, rid, idx, sleep, (idx % 2 == 0) if mix else sync)
        await _drain_request(receive)
        if float(q.get("hold", "0")) > 0:
            await anyio.sleep(float(q["hold"]))
        await _send_text(send, b"ok")
    elif path == "/error":
        _register_sleep(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        raise AppError(f"boom before start {rid}")
    elif path == "/error-after-start":
        _register_sleep(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        await send(_start(200))
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise AppError(f"boom after start {rid}")
    elif path == "/error-after-response":
        _register_sleep(scope, rid, 0, sleep, False)
        await _drain_request(receive)
        await _send_text(send, b"ok")
        raise AppError(f"boom after response {rid}")
    elif path == "/stream":
        await _stream(scope, receive, send, q)
    elif path == "/upload":
        await _upload(scope, receive, send, q)
    elif path == "/faulty":
        _register_faulty(scope, rid, q)
        await _drain_request(receive)
        await _send_text(send, b"ok")
    elif path == "/late-receive":
        await _late_receive(scope, receive, send, rid)
    elif path == "/file":
        from starlette.responses import FileResponse

        _register_sleep(scope, rid, 0, 0, False)
        await _drain_request(receive)
        await FileResponse(__file__)(scope, receive, send)
    elif path == "/scope":
        await _drain_request(receive)
        info = {
            "asgi": scope.get("asgi"),
            "extensions": scope.get("extensions"),
            "lifespan_started": _lifespan_started,
        }
        await _send_text(send, json.dumps(info).encode(), ctype=b"application/json")
    elif path == "/linger":
        await _drain_request(receive)
        await _linger(send, q)
    elif path == "/odd-callable":
        # Looking at this cleanup raises, as at an unbound werkzeug LocalProxy; calling it
        # raises too. The well-behaved cleanup registered before it must still run.
        _register(scope, rid, 0, async_cleanup, 0.0)
        scope["cleanup"].register(_OddCallable())
        await _drain_request(receive)
        await _send_text(send, b"ok")
    else:
        await _drain_request(receive)
        await _send_text(send, b"not found", status=404)


class _OddCallable:
    def __getattribute__(self, name: str) -> Any:
        if name == "__class__":
            return _OddCallable
        raise RuntimeError(f"working outside of request context ({name})")

    def __call__(self) -> None:
        raise RuntimeError("working outside of request context")


_lifespan_started = False


async def _lifespan(receive: Receive, send: Send) -> None:
    global _lifespan_started
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            _lifespan_started = True
            mark("lifespan-startup", "-")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("lifespan-shutdown", "-")
            await send({"type": "lifespan.shutdown.complete"})
            return


def _env_number(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _env_seconds(name: str, default: float) -> float | None:
    value = os.environ.get(name)
    return None if value == "none" else default if value is None else float(value)


def _failing_on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
    raise CleanupFailure("on_error failed too")


_configure_logging()
wrapped_app = CleanupMiddleware(
    inner_app,
    timeout=_env_seconds("ASGI_CLEANUP_TIMEOUT", 5.0),
    shutdown_timeout=_env_seconds("ASGI_CLEANUP_SHUTDOWN_TIMEOUT", 30.0),
    thread_limit=int(_env_number("ASGI_CLEANUP_THREAD_LIMIT", 8)),
    on_error=_failing_on_error if os.environ.get("ASGI_CLEANUP_ON_ERROR") == "raise" else None,
)


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # trio
        return False
    return True


async def _with_deadline(
    target: Callable[[Scope, Receive, Send], Awaitable[None]],
    seconds: float,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """``target`` cancelled after ``seconds``, as a request-timeout middleware would; 504 if
    the response had not started by then."""
    started = False

    async def watched_send(message: Message) -> None:
        nonlocal started
        started = True
        await send(message)

    if _on_asyncio():
        try:
            await asyncio.wait_for(target(scope, receive, watched_send), seconds)
            return
        except TimeoutError:
            pass
    else:
        with anyio.move_on_after(seconds):
            await target(scope, receive, watched_send)
            return
    if not started:
        await _send_text(send, b"deadline", status=504)


_BYPASS = os.environ.get("ASGI_CLEANUP_BYPASS") == "1"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """What the servers serve: ``/bare/...`` without the middleware, all else through it."""
    target: Callable[[Scope, Receive, Send], Awaitable[None]] = wrapped_app
    if scope["type"] in ("http", "websocket"):
        path: str = scope["path"]
        if _BYPASS:
            target = inner_app
        elif path == BARE_PREFIX or path.startswith(BARE_PREFIX + "/"):
            scope = dict(scope)
            scope["path"] = path[len(BARE_PREFIX) :] or "/"
            target = inner_app
        cancel_after = _query(scope).get("cancel_after")
        if cancel_after is not None:
            await _with_deadline(target, float(cancel_after), scope, receive, send)
            return
    await target(scope, receive, send)
