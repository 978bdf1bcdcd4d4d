"""Lifespan: passed through untouched, except that shutdown first drains running cleanup phases."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
import pytest

from asgi_cleanup import CleanupMiddleware

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

pytestmark = pytest.mark.anyio


class AppError(RuntimeError):
    pass


def lifespan_scope() -> Scope:
    return {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}


def http_scope(path: str = "/") -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def lifespan_server(log: list[str]) -> tuple[Receive, Send, list[Message]]:
    """A server side of lifespan: receive gives startup then shutdown; sent messages are kept."""
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        assert incoming, "receive() called after lifespan.shutdown"
        return incoming.pop(0)

    async def send(message: Message) -> None:
        log.append(message["type"])
        sent.append(message)

    return receive, send, sent


def app_with_failing_request(
    lifespan_app: Callable[..., Awaitable[None]], cleanup: Callable[[], Any]
) -> Callable[..., Awaitable[None]]:
    """``lifespan_app`` for lifespan; an http request registers ``cleanup`` and raises."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["cleanup"].register(cleanup)
            raise AppError("boom")
        await lifespan_app(scope, receive, send)

    return app


async def fail_one_request(middleware: CleanupMiddleware) -> None:
    """One request whose app raises: its cleanup phase runs in a task of its own."""

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        raise AssertionError(f"the app sends nothing, got {message!r}")

    with pytest.raises(AppError, match="boom"):
        await middleware(http_scope("/fail"), receive, send)


def handling_lifespan_app(log: list[str]) -> Callable[..., Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        log.append("app sees shutdown")
        await send({"type": "lifespan.shutdown.complete"})

    return app


async def test_lifespan_passes_through_untouched() -> None:
    seen: list[Any] = []
    log: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        message = await receive()
        seen.append(message)
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        seen.append(message)
        await send({"type": "lifespan.shutdown.complete"})

    scope = lifespan_scope()
    receive, send, sent = lifespan_server(log)
    await CleanupMiddleware(app)(scope, receive, send)

    assert seen == [scope, {"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    assert seen[0] is scope
    assert "cleanup" not in scope
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


async def test_lifespan_shutdown_waits_for_running_cleanup_phase() -> None:
    log: list[str] = []
    started = anyio.Event()

    async def slow_cleanup() -> None:
        log.append("cleanup start")
        started.set()
        await anyio.sleep(0.3)
        log.append("cleanup end")

    middleware = CleanupMiddleware(
        app_with_failing_request(handling_lifespan_app(log), slow_cleanup)
    )
    await fail_one_request(middleware)
    with anyio.fail_after(2):
        await started.wait()  # the phase of a failed request runs in a task of its own

    receive, send, _ = lifespan_server(log)
    with anyio.fail_after(2):
        await middleware(lifespan_scope(), receive, send)

    assert log == [
        "cleanup start",
        "lifespan.startup.complete",
        "cleanup end",
        "app sees shutdown",
        "lifespan.shutdown.complete",
    ]


async def test_lifespan_shutdown_timeout_bounds_the_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_cleanup")
    log: list[str] = []
    started = anyio.Event()
    release = anyio.Event()

    async def stuck_cleanup() -> None:
        log.append("cleanup start")
        started.set()
        await release.wait()
        log.append("cleanup end")

    middleware = CleanupMiddleware(
        app_with_failing_request(handling_lifespan_app(log), stuck_cleanup),
        shutdown_timeout=0.1,
    )
    await fail_one_request(middleware)
    with anyio.fail_after(2):
        await started.wait()

    receive, send, _ = lifespan_server(log)
    began = time.monotonic()
    with anyio.fail_after(2):
        await middleware(lifespan_scope(), receive, send)
    elapsed = time.monotonic() - began

    assert log == [
        "cleanup start",
        "lifespan.startup.complete",
        "app sees shutdown",
        "lifespan.shutdown.complete",
    ]
    assert 0.09 <= elapsed < 1.0
    warnings = [
        r for r in caplog.records if r.name == "asgi_cleanup" and r.levelno == logging.WARNING
    ]
    assert len(warnings) == 1, caplog.text

    release.set()
    with anyio.fail_after(2):
        await middleware.drain()
    assert log[-1] == "cleanup end"


async def django_like_rejecting_app(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("Django can only handle ASGI/HTTP connections, not lifespan.")


async def silent_app(scope: Scope, receive: Receive, send: Send) -> None:
    return


@pytest.mark.parametrize("rejecting_app", [django_like_rejecting_app, silent_app])
async def test_lifespan_rejected_by_app_is_answered_and_still_drains(
    rejecting_app: Callable[..., Awaitable[None]],
) -> None:
    log: list[str] = []
    started = anyio.Event()

    async def slow_cleanup() -> None:
        log.append("cleanup start")
        started.set()
        await anyio.sleep(0.3)
        log.append("cleanup end")

    middleware = CleanupMiddleware(app_with_failing_request(rejecting_app, slow_cleanup))
    await fail_one_request(middleware)
    with anyio.fail_after(2):
        await started.wait()

    receive, send, sent = lifespan_server(log)
    with anyio.fail_after(2):
        await middleware(lifespan_scope(), receive, send)

    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]
    assert log == [
        "cleanup start",
        "lifespan.startup.complete",
        "cleanup end",
        "lifespan.shutdown.complete",
    ]


async def test_lifespan_startup_failure_raised_by_app_passes_through() -> None:
    error = RuntimeError("no database")
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        raise error

    receive, send, sent = lifespan_server([])
    with pytest.raises(RuntimeError) as info:
        await CleanupMiddleware(app)(lifespan_scope(), receive, send)

    assert info.value is error
    assert received == [{"type": "lifespan.startup"}]
    assert sent == [{"type": "lifespan.startup.failed", "message": "no database"}]


async def test_lifespan_startup_failure_returned_by_app_passes_through() -> None:
    received: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(await receive())
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    receive, send, sent = lifespan_server([])
    await CleanupMiddleware(app)(lifespan_scope(), receive, send)

    assert received == [{"type": "lifespan.startup"}]
    assert sent == [{"type": "lifespan.startup.failed", "message": "no database"}]


async def test_drain_returns_once_every_spawned_phase_has_finished() -> None:
    finished: list[float] = []
    delays = [0.2, 0.05, 0.1]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seconds = delays.pop(0)

        async def cleanup() -> None:
            await anyio.sleep(seconds)
            finished.append(seconds)

        scope["cleanup"].register(cleanup)
        raise AppError("boom")

    middleware = CleanupMiddleware(app)
    for _ in range(3):
        await fail_one_request(middleware)
    assert finished == []

    with anyio.fail_after(2):
        await middleware.drain()

    assert sorted(finished) == [0.05, 0.1, 0.2]


async def test_drain_returns_at_once_when_nothing_is_running() -> None:
    with anyio.fail_after(1):
        await CleanupMiddleware(silent_app).drain()


async def test_an_app_rejecting_lifespan_is_logged_once_at_info_with_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="asgi_cleanup")
    middleware = CleanupMiddleware(django_like_rejecting_app)
    receive, send, _ = lifespan_server([])
    with anyio.fail_after(2):
        await middleware(lifespan_scope(), receive, send)

    [record] = [r for r in caplog.records if r.name == "asgi_cleanup"]
    assert record.levelno == logging.INFO
    assert (
        "ValueError: Django can only handle ASGI/HTTP connections, not lifespan."
        in record.getMessage()
    )
