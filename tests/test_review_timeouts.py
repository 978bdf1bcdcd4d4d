"""Review: the per-cleanup timeout (SPEC 2.6) against cleanups that resist cancellation."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from raw import app_registering, call, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


async def test_cleanup_that_swallows_the_timeout_cancellation_is_still_reported_as_timed_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "on expiry it is abandoned, logged at ERROR": the timeout expired whatever the cleanup
    # made of the cancellation.
    reported: list[tuple[str, type[BaseException]]] = []

    async def swallows() -> None:
        try:
            await anyio.sleep(0.3)
        except anyio.get_cancelled_exc_class():
            pass  # e.g. a library that turns cancellation into "give up quietly"

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append((cleanup.__name__, type(exc)))

    middleware = CleanupMiddleware(app_registering(swallows), timeout=0.05, on_error=on_error)
    with anyio.fail_after(2):
        await call(middleware)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("swallows timed out after 0.05s" in m for m in errors), errors
    assert reported == [("swallows", TimeoutError)]


async def test_cleanup_that_shields_itself_is_abandoned_at_its_timeout_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # "on expiry it is abandoned, logged at ERROR, and the next one runs": a cleanup that
    # shields its own work (a common "finish closing no matter what" pattern) must not hold
    # the phase past its timeout: ABANDON_GRACE after it, the phase leaves it behind.
    next_started: list[float] = []

    async def shields_itself() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(1.5)

    async def next_cleanup() -> None:
        next_started.append(time.monotonic())

    middleware = CleanupMiddleware(app_registering(next_cleanup, shields_itself), timeout=0.05)
    started = time.monotonic()
    with anyio.fail_after(2):
        await call(middleware)

    assert len(next_started) == 1
    assert next_started[0] - started < 1.4  # timeout 0.05 s + ABANDON_GRACE 1 s
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("shields_itself timed out" in m for m in errors), errors


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_watcher_sleeps_once_the_cleanup_it_watched_has_ended() -> None:
    # A cleanup that suspends starts the phase's watcher, with a wake-up at its timeout plus
    # the grace; it ends at once, and sync cleanups then run past that time.
    import trio

    class StepCounter(trio.abc.Instrument):
        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps += 1

    async def suspends_briefly() -> None:
        await trio.sleep(0.01)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for _ in range(9):  # 1.35 s of sync work, each within its timeout
            scope["cleanup"].register(time.sleep, 0.15)
        scope["cleanup"].register(suspends_briefly)
        for message in respond():
            await send(message)

    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await call(CleanupMiddleware(app, timeout=0.2))
    finally:
        trio.lowlevel.remove_instrument(counter)
    # A watcher waking at its stale time over and over takes thousands of steps here.
    assert counter.steps < 200


@pytest.mark.parametrize(
    "fails", [None, RuntimeError, TimeoutError], ids=["returns", "raises", "raises-timeout"]
)
async def test_cleanup_that_blocks_past_its_deadline_after_waiting_is_reported_as_timed_out(
    caplog: pytest.LogCaptureFixture, fails: type[Exception] | None
) -> None:
    # It waits once, then blocks the event loop past its deadline (no timer can fire) and
    # ends without waiting again: it overran its timeout, on asyncio as on trio.
    reported: list[type[BaseException]] = []

    async def blocks_after_waiting() -> None:
        await anyio.sleep(0.001)
        time.sleep(0.15)  # noqa: ASYNC251 - blocking the loop is the point
        if fails is not None:
            raise fails("failed after its deadline")  # its own TimeoutError too (a client's)

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append(type(exc))

    middleware = CleanupMiddleware(
        app_registering(blocks_after_waiting), timeout=0.05, on_error=on_error
    )
    with anyio.fail_after(2):
        await call(middleware)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("blocks_after_waiting timed out after 0.05s" in m for m in errors), errors
    assert reported == [TimeoutError]
