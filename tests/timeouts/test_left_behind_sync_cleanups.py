"""drain() and the lifespan shutdown wait for sync cleanups their phase left in worker threads:
one abandoned at its timeout, and one given up waiting for a free thread (it runs later)."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
import warnings
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from raw import (
    app_registering,
    call,
    http_scope,
    respond,
    returns_only_after,
    run_lifespan,
    serve_lifespan,
)

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


class Blocked:
    """``blocking`` holds its worker thread until ``release``; ``late`` logs that it ran.

    An app for them: ``/blocking`` registers ``blocking``, ``/late`` registers ``late``; the
    lifespan scope goes to a lifespan app logging when it sees the shutdown."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.log: list[str] = []

    def blocking(self) -> None:
        self.release.wait(5)
        self.log.append("blocking returned")

    def late(self) -> None:
        self.log.append("late ran")

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self.log)
            return
        scope["cleanup"].register(self.blocking if scope["path"] == "/blocking" else self.late)
        for message in respond():
            await send(message)


@contextlib.asynccontextmanager
async def two_left_behind(
    caplog: pytest.LogCaptureFixture | None = None, **options: Any
) -> AsyncIterator[tuple[Blocked, CleanupMiddleware]]:
    """A middleware (one worker thread, 0.1 s timeout, ``options``) whose phases have left
    ``blocking`` abandoned in the only thread, then ``late`` given up waiting for it; the
    thread is released at the exit, whatever happened. ``caplog`` then holds the WARNINGs
    from there on."""
    if caplog is not None:
        caplog.set_level(logging.WARNING, logger="asgi_cleanup")
    blocked = Blocked()
    middleware = CleanupMiddleware(blocked.app, thread_limit=1, timeout=0.1, **options)
    try:
        with anyio.fail_after(2):
            await call(middleware, http_scope("/blocking"))
            await call(middleware, http_scope("/late"))
        if caplog is not None:
            caplog.clear()
        yield blocked, middleware
    finally:
        blocked.release.set()


async def test_drain_waits_for_a_sync_cleanup_abandoned_at_its_timeout_until_it_returns() -> None:
    blocked = Blocked()
    middleware = CleanupMiddleware(blocked.app, timeout=0.1)
    try:
        with anyio.fail_after(2):
            await call(middleware, http_scope("/blocking"))
        await returns_only_after(blocked.release.set, middleware.drain, blocked.log)
        assert blocked.log == ["blocking returned"]
    finally:
        blocked.release.set()


async def test_drain_waits_for_a_sync_cleanup_given_up_waiting_for_a_thread_to_run() -> None:
    async with two_left_behind() as (blocked, middleware):
        await returns_only_after(blocked.release.set, middleware.drain, blocked.log)
        # The late cleanup ran, in the thread the abandoned one gave back, before drain() ended.
        assert blocked.log == ["blocking returned", "late ran"]
        with anyio.fail_after(1):
            await middleware.drain()  # nothing left: at once


async def test_lifespan_shutdown_waits_for_sync_cleanups_left_in_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two_left_behind(caplog, shutdown_timeout=5) as (blocked, middleware):
        await returns_only_after(blocked.release.set, lambda: run_lifespan(middleware), blocked.log)
        assert blocked.log == ["blocking returned", "late ran", "app sees shutdown"]
        assert not [r for r in caplog.records if r.levelno == logging.WARNING], caplog.text


async def test_lifespan_shutdown_goes_on_after_shutdown_timeout_with_sync_cleanups_in_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with two_left_behind(caplog, shutdown_timeout=0.2) as (blocked, middleware):
        began = time.monotonic()
        with anyio.fail_after(2):
            await run_lifespan(middleware)
        elapsed = time.monotonic() - began

        assert 0.19 <= elapsed < 1.0
        assert blocked.log == ["app sees shutdown"]
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.getMessage() == (
            "Shutting down with 0 cleanup phase(s) still running, 0 async cleanup(s) left"
            " running past their timeout and 2 sync cleanup(s) still in worker threads after 0.2s"
        )
    with anyio.fail_after(2):
        await middleware.drain()
    assert blocked.log == ["app sees shutdown", "blocking returned", "late ran"]


class Transaction:
    """A context manager whose exit commits after a success and rolls back after an error."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.log.append("rollback" if exc_type is not None else "commit")


async def test_a_sync_cleanup_run_late_still_sees_how_the_request_ended() -> None:
    blocked = Blocked()
    seen: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        if scope["path"] == "/blocking":
            registry.register(blocked.blocking)
            for message in respond():
                await send(message)
            return
        registry.register(lambda: seen.append(registry.outcome.exception))
        registry.enter_context(Transaction(blocked.log))
        raise LookupError("the request failed")

    middleware = CleanupMiddleware(app, thread_limit=1, timeout=0.1)
    with anyio.fail_after(5):
        await call(middleware, http_scope("/blocking"))
        with pytest.raises(LookupError):
            await call(middleware, http_scope("/failing"))
        await anyio.sleep(0.5)  # the phase gives up waiting for a thread for each, at 0.1 s
        assert blocked.log == [], "nothing runs while the only thread is held"
        blocked.release.set()
        await middleware.drain()
    assert blocked.log == ["blocking returned", "rollback"]
    assert [type(exc) for exc in seen] == [LookupError]


async def test_a_base_exception_from_an_abandoned_sync_cleanup_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def exits_the_process_late() -> None:
        release.wait(5)
        raise SystemExit(3)

    middleware = CleanupMiddleware(app_registering(exits_the_process_late), timeout=0.1)
    with anyio.fail_after(5):
        await call(middleware)
        release.set()
        await middleware.drain()
    [record] = [r for r in caplog.records if "cannot be re-raised" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert "exits_the_process_late raised SystemExit after it was abandoned" in record.getMessage()
    assert record.exc_info is not None
    assert type(record.exc_info[1]) is SystemExit


@pytest.mark.anyio
async def test_an_awaitable_from_a_sync_cleanup_abandoned_at_its_timeout_is_closed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Nobody is left to await it: it is closed, so Python does not warn it was never awaited.
    returned = threading.Event()

    async def never_awaited() -> None:
        raise AssertionError("an abandoned cleanup's awaitable is not awaited")

    def slow_then_awaitable() -> Any:
        time.sleep(0.3)
        coro = never_awaited()
        returned.set()
        return coro

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(slow_then_awaitable)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app, timeout=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await call(middleware)
        with anyio.fail_after(3):
            await middleware.drain()
        assert returned.is_set()
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], caught
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(
        "slow_then_awaitable returned an awaitable after it was abandoned" in m for m in messages
    ), messages
