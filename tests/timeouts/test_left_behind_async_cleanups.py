"""drain() and the lifespan shutdown wait for an async cleanup its phase left behind: one that
did not stop within ABANDON_GRACE of its timeout's cancellation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from raw import (
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


@pytest.fixture(autouse=True)
def short_grace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.1)
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.1)


class Stubborn:
    """``/`` registers ``cleanup``, which refuses to stop until ``release``; the lifespan
    scope goes to a lifespan app logging when it sees the shutdown."""

    def __init__(self) -> None:
        self.release = anyio.Event()
        self.log: list[str] = []

    async def cleanup(self) -> None:
        with anyio.CancelScope(shield=True):  # keeps its timeout's cancellation out
            await self.release.wait()
        self.log.append("cleanup ended")

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send, self.log)
            return
        scope["cleanup"].register(self.cleanup)
        for message in respond():
            await send(message)


async def with_cleanup_left_behind(
    caplog: pytest.LogCaptureFixture,
    check: Callable[[Stubborn, CleanupMiddleware], Awaitable[Any]],
    **options: Any,
) -> None:
    """Serve one request whose cleanup the phase leaves behind (0.05 s timeout), then run
    ``check``; on trio the request's task goes on with the cleanup, so the request runs
    beside it. The cleanup is released at the end, whatever happened."""
    caplog.set_level(logging.WARNING, logger="asgi_cleanup")
    stubborn = Stubborn()
    reported = anyio.Event()  # the phase reports the timeout once it has left the cleanup

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.set()

    middleware = CleanupMiddleware(stubborn.app, timeout=0.05, on_error=on_error, **options)
    async with anyio.create_task_group() as tg:
        tg.start_soon(call, middleware, http_scope("/"))
        try:
            with anyio.fail_after(2):
                await reported.wait()
            caplog.clear()
            await check(stubborn, middleware)
        finally:
            stubborn.release.set()  # before the task group waits for the request (trio)


async def test_drain_waits_for_an_async_cleanup_left_running_past_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check(stubborn: Stubborn, middleware: CleanupMiddleware) -> None:
        await returns_only_after(stubborn.release.set, middleware.drain, stubborn.log)
        assert stubborn.log == ["cleanup ended"]
        with anyio.fail_after(1):
            await middleware.drain()  # nothing left: at once

    await with_cleanup_left_behind(caplog, check)


async def test_lifespan_shutdown_waits_for_an_async_cleanup_left_running_past_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check(stubborn: Stubborn, middleware: CleanupMiddleware) -> None:
        await returns_only_after(
            stubborn.release.set, lambda: run_lifespan(middleware), stubborn.log
        )
        assert stubborn.log == ["cleanup ended", "app sees shutdown"]
        assert not [r for r in caplog.records if r.levelno == logging.WARNING], caplog.text

    await with_cleanup_left_behind(caplog, check, shutdown_timeout=5)


async def test_lifespan_shutdown_counts_an_async_cleanup_left_running_after_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def check(stubborn: Stubborn, middleware: CleanupMiddleware) -> None:
        with anyio.fail_after(2):
            await run_lifespan(middleware)
        assert stubborn.log == ["app sees shutdown"]
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert warning.getMessage() == (
            "Shutting down with 0 cleanup phase(s) still running, 1 async"
            " cleanup(s) left running past their timeout and 0 sync cleanup(s) still in worker"
            " threads after 0.2s"
        )

    await with_cleanup_left_behind(caplog, check, shutdown_timeout=0.2)
