import contextvars
import functools
import logging
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send


def app_registering(*cleanups: tuple[Any, ...]) -> Any:
    """An app that registers each ``(func, *args)`` then sends a complete 200 response."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for func, *args in cleanups:
            scope["cleanup"].register(func, *args)
        for message in respond():
            await send(message)

    return app


def app_registering_for(paths: dict[str, list[tuple[Any, ...]]]) -> Any:
    """An app that registers each ``(func, *args)`` listed for the request's path, then sends
    a complete 200 response."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await app_registering(*paths[scope["path"]])(scope, receive, send)

    return app


@pytest.mark.anyio
async def test_dynamic_cleanups_run_in_reverse_order_of_registration() -> None:
    ran: list[str] = []

    async def async_cleanup(name: str) -> None:
        ran.append(name)

    def sync_cleanup(name: str) -> None:
        ran.append(name)

    app = app_registering(
        (sync_cleanup, "first"),
        (async_cleanup, "second"),
        (sync_cleanup, "third"),
        (sync_cleanup, "fourth"),
        (async_cleanup, "fifth"),
    )
    await call(CleanupMiddleware(app))
    assert ran == ["fifth", "fourth", "third", "second", "first"]


@pytest.mark.anyio
async def test_cleanup_receives_its_positional_and_keyword_arguments() -> None:
    received: list[tuple[Any, ...]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(lambda *a, **k: received.append((a, k)), 1, 2, key="v")
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert received == [((1, 2), {"key": "v"})]


@pytest.mark.anyio
async def test_each_cleanup_runs_exactly_once_whatever_the_others_do() -> None:
    counts = {"ok_async": 0, "ok_sync": 0}

    async def ok_async() -> None:
        counts["ok_async"] += 1

    def ok_sync() -> None:
        counts["ok_sync"] += 1

    async def failing_async() -> None:
        raise RuntimeError("async failure")

    def failing_sync() -> None:
        raise RuntimeError("sync failure")

    app = app_registering(
        (ok_async,), (failing_sync,), (ok_sync,), (failing_async,), (ok_async,), (ok_sync,)
    )
    await call(CleanupMiddleware(app))
    assert counts == {"ok_async": 2, "ok_sync": 2}


@pytest.mark.anyio
async def test_async_cleanups_run_on_the_event_loop_thread() -> None:
    threads: list[int] = []

    async def cleanup() -> None:
        threads.append(threading.get_ident())

    await call(CleanupMiddleware(app_registering((cleanup,))))
    assert threads == [threading.get_ident()]


@pytest.mark.anyio
async def test_objects_with_async_call_and_partials_are_awaited() -> None:
    ran: list[str] = []

    class AsyncCallable:
        async def __call__(self, name: str) -> None:
            await anyio.lowlevel.checkpoint()
            ran.append(name)

    async def coroutine_function(name: str) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(name)

    app = app_registering(
        (AsyncCallable(), "object"),
        (functools.partial(coroutine_function, "partial"),),
        (functools.partial(AsyncCallable(), "partial object"),),
    )
    await call(CleanupMiddleware(app))
    assert ran == ["partial object", "partial", "object"]


@pytest.mark.anyio
async def test_sync_cleanups_run_in_a_worker_thread_not_the_event_loop() -> None:
    threads: list[int] = []
    await call(CleanupMiddleware(app_registering((lambda: threads.append(threading.get_ident()),))))
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
async def test_consecutive_sync_cleanups_share_one_thread_hop() -> None:
    hops: list[tuple[str, int]] = []

    def sync_cleanup(name: str) -> None:
        hops.append((name, threading.get_ident()))

    async def async_cleanup() -> None:
        hops.append(("async", threading.get_ident()))

    app = app_registering(
        (sync_cleanup, "a"),
        (sync_cleanup, "b"),
        (async_cleanup,),
        (sync_cleanup, "c"),
        (sync_cleanup, "d"),
        (sync_cleanup, "e"),
    )
    # One worker thread: the two runs of sync cleanups must still be separate hops.
    await call(CleanupMiddleware(app, thread_limit=1))
    assert [name for name, _ in hops] == ["e", "d", "c", "async", "b", "a"]
    loop_thread = threading.get_ident()
    assert hops[3][1] == loop_thread
    assert {ident for _, ident in hops[:3]} == {hops[0][1]} != {loop_thread}


@pytest.mark.anyio
async def test_sync_callable_returning_an_awaitable_has_it_awaited_in_order() -> None:
    ran: list[str] = []

    async def later(name: str) -> None:
        await anyio.lowlevel.checkpoint()
        ran.append(name)

    app = app_registering(
        (ran.append, "last"),
        (lambda: later("from lambda"),),
        (ran.append, "first"),
    )
    await call(CleanupMiddleware(app))
    assert ran == ["first", "from lambda", "last"]


@pytest.mark.anyio
async def test_thread_limit_bounds_sync_cleanups_running_at_once() -> None:
    lock = threading.Lock()
    running = 0
    peak = 0

    def cleanup() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    middleware = CleanupMiddleware(app_registering((cleanup,)), thread_limit=3)
    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(call, middleware)
    assert peak == 2  # the third thread is the lane of context managers' exits


@pytest.mark.anyio
async def test_cleanup_failure_is_logged_and_the_next_cleanup_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken_cleanup() -> None:
        raise ValueError("disk full")

    app = app_registering((ran.append, "after"), (broken_cleanup,))
    recorder = await call(CleanupMiddleware(app))
    assert ran == ["after"]
    assert recorder.types == ["http.response.start", "http.response.body"]
    errors = [r for r in caplog.records if r.name == "asgi_cleanup"]
    assert len(errors) == 1
    assert errors[0].levelno == logging.ERROR
    assert "broken_cleanup" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


@pytest.mark.anyio
async def test_async_cleanup_past_its_timeout_is_abandoned_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def hanging_cleanup() -> None:
        try:
            await anyio.sleep(10)
        finally:
            ran.append("hanging cancelled")

    app = app_registering((ran.append, "next"), (hanging_cleanup,))
    with anyio.fail_after(5):
        await call(CleanupMiddleware(app, timeout=0.1))
    assert ran == ["hanging cancelled", "next"]
    [record] = [r for r in caplog.records if r.name == "asgi_cleanup"]
    assert record.levelno == logging.ERROR
    assert "hanging_cleanup" in record.getMessage()
    assert "timed out" in record.getMessage()


@pytest.mark.anyio
async def test_sync_cleanup_past_its_timeout_is_abandoned_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []
    release = threading.Event()

    def blocking_cleanup() -> None:
        release.wait(5)
        ran.append("blocking returned")

    app = app_registering((ran.append, "next sync"), (blocking_cleanup,))
    start = time.monotonic()
    await call(CleanupMiddleware(app, timeout=0.1))
    elapsed = time.monotonic() - start
    try:
        assert ran == ["next sync"]
        assert elapsed < 2
        [record] = [r for r in caplog.records if r.name == "asgi_cleanup"]
        assert "blocking_cleanup" in record.getMessage()
        assert "timed out" in record.getMessage()
    finally:
        release.set()


@pytest.mark.anyio
async def test_timeout_applies_to_each_sync_cleanup_not_the_whole_batch() -> None:
    ran: list[int] = []

    def slowish(n: int) -> None:
        time.sleep(0.08)
        ran.append(n)

    # Together they take 0.24 s, each 0.08 s: none may be abandoned under a 0.15 s timeout.
    app = app_registering((slowish, 1), (slowish, 2), (slowish, 3))
    await call(CleanupMiddleware(app, timeout=0.15))
    assert ran == [3, 2, 1]


@pytest.mark.anyio
async def test_timeout_none_lets_a_cleanup_take_its_time() -> None:
    ran: list[str] = []

    async def slow() -> None:
        await anyio.sleep(0.2)
        ran.append("done")

    await call(CleanupMiddleware(app_registering((slow,)), timeout=None))
    assert ran == ["done"]


@pytest.mark.anyio
async def test_abandoned_sync_cleanup_keeps_its_thread_slot_until_it_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    started: list[float] = []
    quick_ran = threading.Event()

    def blocking() -> None:
        release.wait(5)

    def quick() -> None:
        started.append(time.monotonic())
        quick_ran.set()

    app = app_registering_for({"/blocking": [(blocking,)], "/quick": [(quick,)]})
    middleware = CleanupMiddleware(app, thread_limit=1, timeout=0.1)
    try:
        await call(middleware, http_scope("/blocking"))  # abandons `blocking` in its thread
        # The only worker thread is still taken: `quick` cannot start within its timeout.
        await call(middleware, http_scope("/quick"))
        assert started == []
        messages = [r.getMessage() for r in caplog.records]
        assert any(
            "quick timed out after 0.1s waiting for a free worker thread" in m
            and "it runs when one is free" in m
            for m in messages
        ), messages
        released_at = time.monotonic()
        release.set()
        # Given up by the phase, it still runs once, as soon as the thread is free.
        assert await anyio.to_thread.run_sync(quick_ran.wait, 5)
        assert len(started) == 1
        assert started[0] >= released_at
    finally:
        release.set()


@pytest.mark.anyio
async def test_sync_cleanup_given_up_waiting_for_a_thread_runs_once_when_one_is_free(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    ran: list[str] = []
    all_ran = threading.Event()
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")
    reported: list[tuple[str, type[BaseException]]] = []

    def blocking() -> None:
        release.wait(5)

    def late(name: str) -> None:
        ran.append(f"{name} in {marker.get()}")
        if name == "failing":
            raise ValueError("late failure")
        if name == "second":
            all_ran.set()

    async def on_loop() -> None:
        ran.append("async, with the phase")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/blocking":
            scope["cleanup"].register(blocking)
        else:
            marker.set(scope["path"])
            scope["cleanup"].register(late, "second")
            scope["cleanup"].register(on_loop)
            scope["cleanup"].register(late, "failing")
            scope["cleanup"].register(late, "first")
        for message in respond():
            await send(message)

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append((getattr(cleanup, "__name__", ""), type(exc)))

    middleware = CleanupMiddleware(app, thread_limit=1, timeout=0.1, on_error=on_error)
    try:
        await call(middleware, http_scope("/blocking"))  # its thread stays taken
        reported.clear()
        with anyio.fail_after(2):  # three waits of 0.1 s: the phase is bounded by its timeouts
            await call(middleware, http_scope("/late"))
        # The phase went on past each sync cleanup it gave up waiting for, in order.
        assert ran == ["async, with the phase"]
        assert reported == [("late", TimeoutError)] * 3
        release.set()
        assert await anyio.to_thread.run_sync(all_ran.wait, 5)
        await anyio.sleep(0.05)  # nothing more runs
        assert ran == [
            "async, with the phase",
            "first in /late",
            "failing in /late",
            "second in /late",
        ]
        failures = [r for r in caplog.records if "failed after it was abandoned" in r.getMessage()]
        assert len(failures) == 1
        assert "late" in failures[0].getMessage()
        assert failures[0].exc_info is not None
        assert isinstance(failures[0].exc_info[1], ValueError)
        assert reported == [("late", TimeoutError)] * 3  # no second report for the failure
    finally:
        release.set()


@pytest.mark.anyio
async def test_keyboard_interrupt_from_a_cleanup_is_not_swallowed() -> None:
    def interrupting() -> None:
        raise KeyboardInterrupt

    async def async_interrupting() -> None:
        raise KeyboardInterrupt

    for cleanup in (interrupting, async_interrupting):
        with pytest.raises(KeyboardInterrupt):
            await call(CleanupMiddleware(app_registering((cleanup,))))


@pytest.mark.anyio
async def test_awaitable_from_a_sync_cleanup_run_late_is_closed_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    closed = threading.Event()

    def blocking() -> None:
        release.wait(5)

    async def never_awaited() -> None:
        raise AssertionError("a late cleanup's awaitable is not awaited")

    def returns_awaitable() -> Any:
        coro = never_awaited()
        original_close = coro.close

        class Closing:
            def __await__(self) -> Any:
                return coro.__await__()

            def close(self) -> None:
                original_close()
                closed.set()

        return Closing()

    app = app_registering_for({"/blocking": [(blocking,)], "/late": [(returns_awaitable,)]})
    middleware = CleanupMiddleware(app, thread_limit=1, timeout=0.1)
    try:
        await call(middleware, http_scope("/blocking"))
        await call(middleware, http_scope("/late"))
        release.set()
        assert await anyio.to_thread.run_sync(closed.wait, 5)
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert any(
            "returns_awaitable returned an awaitable after it was abandoned" in m for m in messages
        ), messages
    finally:
        release.set()


class CustomBaseError(BaseException):
    pass


@pytest.mark.anyio
@pytest.mark.parametrize("raised", [KeyboardInterrupt, SystemExit, GeneratorExit, CustomBaseError])
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_base_exception_lets_the_remaining_cleanups_run_then_the_first_propagates(
    raised: type[BaseException], kind: str
) -> None:
    ran: list[str] = []

    def sync_raising() -> None:
        ran.append("raising")
        raise raised

    async def async_raising() -> None:
        ran.append("raising")
        raise raised

    async def later_one() -> None:
        ran.append("later async")

    def later_two() -> None:
        ran.append("later sync")

    def second_raising() -> None:
        ran.append("second raising")
        raise CustomBaseError("second")

    first = sync_raising if kind == "sync" else async_raising
    middleware = CleanupMiddleware(
        app_registering((later_two,), (second_raising,), (later_one,), (first,))
    )
    with pytest.raises(raised):
        await call(middleware)
    assert ran == ["raising", "later async", "second raising", "later sync"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio's Cancelled is trio's own
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_cleanup_raising_the_loop_s_cancellation_class_failed_and_cancels_nothing(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    ran: list[str] = []

    def sync_cancelled() -> None:
        raise asyncio.CancelledError

    async def async_cancelled() -> None:
        raise asyncio.CancelledError

    def after() -> None:
        ran.append("after")

    middleware = CleanupMiddleware(
        app_registering((after,), (sync_cancelled if kind == "sync" else async_cancelled,))
    )
    await call(middleware)  # not cancelled
    await anyio.lowlevel.checkpoint()  # nor later
    assert ran == ["after"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "cancelled failed" in record.getMessage()


@pytest.mark.parametrize("raised", [KeyboardInterrupt, CustomBaseError])
def test_trio_a_base_exception_in_a_phase_of_its_own_is_logged_not_a_trio_crash(
    raised: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    import trio

    ran: list[str] = []

    async def raising() -> None:
        raise raised

    async def later() -> None:
        ran.append("later")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(later)
        scope["cleanup"].register(raising)
        raise RuntimeError("the app failed: the phase runs in a task of its own")

    async def main() -> None:
        middleware = CleanupMiddleware(app)
        with pytest.raises(RuntimeError, match="the app failed"):
            await call(middleware)
        await middleware.drain()

    trio.run(main)  # no TrioInternalError
    assert ran == ["later"]
    assert any(
        f"raised {raised.__name__} in a phase of its own task" in r.getMessage()
        for r in caplog.records
    )
