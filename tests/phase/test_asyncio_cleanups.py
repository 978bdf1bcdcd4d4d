"""The asyncio phase's worker tasks (first step run as an idle worker, then handed over)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import anyio
import pytest
from raw import app_registering, call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send


async def warm_up_an_idle_worker(middleware: CleanupMiddleware) -> None:
    """One request whose cleanups suspend (each on a fresh worker task, where the bug does
    not show), so that worker tasks are left idle for the next request."""
    await call(middleware)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_expired_asyncio_timeout_entered_in_the_first_step_lets_the_cleanup_go_on(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cleanup whose budget is already spent enters asyncio.timeout(0) (same for
    # async_timeout, or asyncio.timeout_at(a past deadline)): asyncio schedules the
    # cancellation of the current task with call_soon. The current task is the worker, still
    # parked on its inbox, so the cancellation kills the worker before it takes the job.
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.1)
    ran: list[str] = []

    async def budget_spent() -> None:
        try:
            async with asyncio.timeout(0):
                await asyncio.sleep(1)
        except TimeoutError:
            ran.append("budget_spent: timed out by its own timeout")

    async def suspends() -> None:
        await asyncio.sleep(0)
        ran.append("suspends")

    middleware = CleanupMiddleware(app_registering(suspends, budget_spent), timeout=0.2)
    await warm_up_an_idle_worker(middleware)
    ran.clear()
    caplog.clear()
    started = time.monotonic()
    with anyio.fail_after(2):
        await call(middleware)
    elapsed = time.monotonic() - started

    assert ran == ["budget_spent: timed out by its own timeout", "suspends"]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert elapsed < 0.15


def test_event_loop_shutdown_during_a_spawned_phase_still_runs_its_later_async_cleanup() -> None:
    # asyncio.run() ends by cancelling every task: the spawned phase task holds its
    # cancellation (2.6) and goes on, but the idle worker tasks die and stay in the idle list;
    # the next async cleanup that suspends is handed to a dead worker: InvalidStateError.
    ran: list[str] = []
    handler_calls: list[dict[str, Any]] = []

    def sync_cleanup() -> None:
        time.sleep(0.1)
        ran.append("sync")

    async def async_cleanup() -> None:
        await asyncio.sleep(0.01)
        ran.append("async")

    async def warm() -> None:
        await asyncio.sleep(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/warm":
            scope["cleanup"].register(warm)
            for message in respond():
                await send(message)
            return
        scope["cleanup"].register(async_cleanup)
        scope["cleanup"].register(sync_cleanup)  # LIFO: runs first
        raise RuntimeError("app failed")

    middleware = CleanupMiddleware(app, timeout=2)

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: handler_calls.append(ctx))
        await call(middleware, http_scope("/warm"))  # leaves an idle worker task
        with pytest.raises(RuntimeError):
            await call(middleware, http_scope("/fail"))
        await asyncio.sleep(0.02)  # the phase is now in sync_cleanup's thread
        # main returns: asyncio.run cancels every task, the phase task included

    asyncio.run(main())
    errors = [repr(ctx.get("exception")) for ctx in handler_calls]
    assert (ran, errors) == (["sync", "async"], [])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cancelled_error_raised_by_a_cleanup_does_not_stop_the_phase_or_cancel_the_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A cleanup that stops a helper task with task.cancel(); await task (forgetting to suppress
    # the CancelledError) raises CancelledError itself. Nobody cancelled the request: the next
    # cleanups must still run (2.4) and the call must return normally.
    ran: list[str] = []

    async def stops_helper_task() -> None:
        helper = asyncio.get_running_loop().create_task(asyncio.sleep(10))
        helper.cancel()
        await helper

    async def later() -> None:
        ran.append("later")

    def directive(outcome: Any) -> None:
        ran.append("directive")

    middleware = CleanupMiddleware(
        app_registering(later, stops_helper_task), settings={"handlers": [directive]}
    )
    with anyio.fail_after(2):
        await call(middleware)
    assert ran == ["later", "directive"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_first_steps_driver_survives_suspending_and_failing_cleanups_across_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # First steps of async cleanups go through one driver per event loop; a cleanup that
    # suspends takes the driver with it, and one that raises ends it. Requests after each
    # must still run every cleanup once, in order, with results and failures as before.
    ran: list[str] = []

    async def quick(name: str) -> None:
        ran.append(name)

    async def suspends() -> str:
        await asyncio.sleep(0.01)
        ran.append("suspends")
        return "ignored"

    async def fails() -> None:
        raise ValueError("first step failed")

    def app(*cleanups: tuple[Any, ...]) -> Any:
        async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
            for cleanup in cleanups:
                scope["cleanup"].register(*cleanup)
            for message in respond():
                await send(message)

        return CleanupMiddleware(endpoint)

    with anyio.fail_after(5):
        await call(app((quick, "a1"), (suspends,), (quick, "a2")))
        await call(app((quick, "b1"), (fails,), (quick, "b2")))
        await call(app((quick, "c1"), (quick, "c2")))
    assert ran == ["a2", "suspends", "a1", "b2", "b1", "c2", "c1"]
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["first step failed"]
