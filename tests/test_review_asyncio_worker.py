"""Review: the asyncio phase's worker tasks (first step run as an idle worker, then handed over)."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
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
    monkeypatch.setattr("asgi_cleanup._asyncio_phase.ABANDON_GRACE", 0.1)
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


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_middleware_dropped_while_its_loop_runs_lets_its_idle_worker_tasks_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # An app built per test or per sub-app inside one long-running loop: its idle worker
    # tasks wait on futures only they hold, so without the middleware they would be garbage
    # while pending ("Task was destroyed but it is pending!").
    async def suspends() -> None:
        await asyncio.sleep(0)

    middleware = CleanupMiddleware(app_registering(suspends))
    await call(middleware)
    workers = middleware._runner._workers
    assert workers is not None
    tasks = [worker.task for worker in workers.idle]
    assert tasks
    del middleware, workers
    gc.collect()
    await asyncio.wait(tasks, timeout=1)
    assert all(task.done() for task in tasks)
    assert not any(task.cancelled() or task.exception() for task in tasks)
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_middleware_served_from_a_new_loop_dismisses_the_old_loops_idle_workers() -> None:
    async def suspends() -> None:
        await asyncio.sleep(0)

    middleware = CleanupMiddleware(app_registering(suspends))
    old_tasks: list[asyncio.Task[Any]] = []

    async def in_another_loop() -> None:
        await call(middleware)
        assert middleware._runner._workers is not None
        old_tasks.extend(worker.task for worker in middleware._runner._workers.idle)

    # A loop that keeps running in its own thread, as a second server's would.
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(in_another_loop(), other).result(2)
        assert old_tasks
        assert not any(task.done() for task in old_tasks)
        await call(middleware)  # this loop's workers replace the other loop's
        asyncio.run_coroutine_threadsafe(asyncio.wait(old_tasks, timeout=1), other).result(2)
        assert all(task.done() and not task.cancelled() for task in old_tasks)
    finally:
        other.call_soon_threadsafe(other.stop)
        thread.join(2)
        other.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_phase_going_on_in_an_old_loop_leaves_no_idle_worker_behind_there() -> None:
    # The middleware moved to this loop while a phase still ran in the other: that phase's
    # next cleanup needs an idle worker there, which must end once the run gave it back.
    in_first = threading.Event()
    go_on = threading.Event()

    async def first() -> None:  # registered last: runs first, until this loop was served
        await asyncio.sleep(0)  # its phase is set up when it goes on (in a worker task)
        in_first.set()
        await asyncio.to_thread(go_on.wait, 2)

    async def second() -> None:
        pass

    async def suspends() -> None:
        await asyncio.sleep(0)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for cleanup in (second, first) if scope["path"] == "/old" else (suspends,):
            scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    async def pending_workers() -> list[asyncio.Task[Any]]:
        await asyncio.sleep(0.01)  # what the loop was given to do first is done
        return [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "_Worker._serve"
        ]

    middleware = CleanupMiddleware(app, timeout=None)
    other = asyncio.new_event_loop()
    thread = threading.Thread(target=other.run_forever, daemon=True)
    thread.start()
    try:
        served = asyncio.run_coroutine_threadsafe(call(middleware, http_scope("/old")), other)
        assert await anyio.to_thread.run_sync(in_first.wait, 2)
        await call(middleware, http_scope("/new"))  # this loop's workers replace the other's
        go_on.set()
        await anyio.to_thread.run_sync(served.result, 2)
        left = asyncio.run_coroutine_threadsafe(pending_workers(), other)
        assert await anyio.to_thread.run_sync(left.result, 2) == []
    finally:
        go_on.set()
        other.call_soon_threadsafe(other.stop)
        thread.join(2)
        other.close()
