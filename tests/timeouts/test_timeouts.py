"""the per-cleanup timeout (SPEC 2.6) against cleanups that resist cancellation."""

from __future__ import annotations

import contextlib
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


async def test_cleanup_that_shields_itself_goes_on_to_its_end_after_its_timeout_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same on asyncio and trio: the timeout cancels through a cancel scope, which an
    # anyio shield keeps out, not through a native Task.cancel(), which it does not.
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)
    finished: list[str] = []
    reports: list[Any] = []

    async def shields_itself() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)
        finished.append("its shielded work")

    def on_complete(ran: Any, outcome: Any) -> None:
        reports.extend(ran)

    app = app_registering(shields_itself)
    middleware = CleanupMiddleware(app, timeout=0.05, on_complete=on_complete)
    with anyio.fail_after(2):
        await call(middleware)
        assert [(r.timed_out, finished) for r in reports] == [(True, [])]
        await middleware.drain()
    assert finished == ["its shielded work"]


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


@pytest.mark.parametrize("hook", ["on_error", "on_complete"])
async def test_a_hook_that_shields_itself_is_bounded_by_the_timeout(
    hook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)

    async def shielded_hook(*args: Any) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.5)

    async def failing() -> None:
        raise RuntimeError("for on_error")

    middleware = CleanupMiddleware(app_registering(failing), timeout=0.1, **{hook: shielded_hook})
    began = time.monotonic()
    with anyio.fail_after(2):
        await call(middleware)
    assert time.monotonic() - began < 0.4  # not the hook's 0.5 s


async def test_an_awaitable_from_a_sync_cleanup_gets_what_is_left_of_its_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def second_half() -> None:
        await anyio.sleep(0.2)

    def first_half() -> Any:
        time.sleep(0.2)
        return second_half()

    middleware = CleanupMiddleware(app_registering(first_half), timeout=0.3)
    began = time.monotonic()
    with anyio.fail_after(2):
        await call(middleware)
    assert time.monotonic() - began < 0.38  # 0.3 s in all, not 0.2 s + a fresh 0.3 s
    assert any("first_half timed out after 0.3s" in r.getMessage() for r in caplog.records)


def test_trio_timeouts_still_apply_to_a_phase_of_its_own_once_the_main_task_returned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server's shutdown ends trio's main task with such a phase still running: each
    # cleanup is still cut at its timeout, and the timeout is logged when it happens.
    import trio

    async def long() -> None:
        await trio.sleep(3)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(long)
        scope["cleanup"].register(long)
        raise RuntimeError("the phase runs in a task of its own")

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await call(CleanupMiddleware(app, timeout=0.2))

    began, began_at = time.monotonic(), time.time()
    trio.run(main)
    assert time.monotonic() - began < 1.5  # 2 × 0.2 s, not 2 × 3 s
    timeouts = [r for r in caplog.records if "timed out after 0.2s" in r.getMessage()]
    assert len(timeouts) == 2
    assert timeouts[0].created - began_at < 0.6


async def test_a_cleanup_left_behind_among_async_ones_lets_the_rest_run_each_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # On 3.11 and trio consecutive async cleanups share one task: the one that does not stop
    # at its timeout is left behind there, and the rest go on in a new task, once each.
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)
    ran: list[str] = []
    stubborn_ended = anyio.Event()

    def named(name: str) -> Any:
        async def cleanup() -> None:
            await anyio.sleep(0.01)
            ran.append(name)

        return cleanup

    async def stubborn() -> None:
        end = time.monotonic() + 0.4
        with anyio.CancelScope(shield=True):
            while end > time.monotonic():
                with contextlib.suppress(anyio.get_cancelled_exc_class()):
                    await anyio.sleep(end - time.monotonic())
        ran.append("stubborn")
        stubborn_ended.set()

    middleware = CleanupMiddleware(
        app_registering(named("first"), named("second"), stubborn, named("third")), timeout=0.1
    )
    began = time.monotonic()
    with anyio.fail_after(3):
        await call(middleware)
    assert time.monotonic() - began < 0.35  # not the stubborn cleanup's 0.4 s
    assert ran == ["third", "second", "first"]
    with anyio.fail_after(3):
        await middleware.drain()
    assert ran == ["third", "second", "first", "stubborn"]
    timeouts = [r for r in caplog.records if "stubborn timed out after 0.1s" in r.getMessage()]
    assert len(timeouts) == 1
