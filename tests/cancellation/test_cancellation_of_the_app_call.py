"""Cancellation of the app call and of the request task (SPEC 2.2, 2.6)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from raw import Recorder, call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_app_cancelled_inside_a_trio_nursery_runs_its_phase_before_the_cancellation() -> None:
    # trio nurseries are strict: a cancelled app that has one raises
    # BaseExceptionGroup([Cancelled, ...]), not Cancelled. That is still "the app call was
    # cancelled" (2.2): the phase runs to its end, then the cancellation is delivered. The
    # middleware takes it for an app error and hands the phase to a system task instead.
    import trio

    log: list[str] = []

    async def cleanup() -> None:
        await anyio.sleep(0.1)
        log.append("cleanup end")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()

    middleware = CleanupMiddleware(app)
    with anyio.fail_after(2):
        with anyio.move_on_after(0.05):
            await call(middleware)
        log.append("call returned")
        await middleware.drain()
    assert log == ["cleanup end", "call returned"]


async def test_many_concurrent_requests_cancelled_at_random_points_run_each_cleanup_once() -> None:
    # Exactly once (2.4) with cancellations landing before, during and after the phase, and
    # async (suspending and not), sync, and sync-returning-awaitable cleanups mixed.
    counts: dict[str, int] = {}

    def bump(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    async def suspending(key: str) -> None:
        await anyio.sleep(0.01)
        bump(key)

    async def eager(key: str) -> None:
        bump(key)

    def sync(key: str) -> None:
        bump(key)

    def returns_awaitable(key: str) -> Any:
        return eager(key)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        n = scope["n"]
        registry = scope["cleanup"]
        for kind, func in (
            ("s", suspending),
            ("e", eager),
            ("y", sync),
            ("a", returns_awaitable),
        ):
            registry.register(func, f"{n}{kind}")
        if n % 3 == 0:
            await anyio.sleep(0.05)  # cancelled inside the app
        for message in respond():
            await send(message)
        if n % 3 == 1:
            raise RuntimeError("app failed")

    middleware = CleanupMiddleware(app, thread_limit=2)

    async def one(n: int) -> None:
        with anyio.move_on_after(0.005 * (n % 7)):
            with contextlib.suppress(RuntimeError):
                await call(middleware, http_scope(n=n))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for n in range(60):
                tg.start_soon(one, n)
        await middleware.drain()
    expected = {f"{n}{kind}" for n in range(60) for kind in "seya"}
    assert set(counts) == expected
    assert set(counts.values()) == {1}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_cancel_during_a_first_step_that_enters_an_anyio_scope_is_held() -> None:
    # The first step of the cleanup enters an anyio cancel scope with a deadline as the
    # worker task; the request task is natively cancelled meanwhile. The cleanup finishes
    # normally, then the cancellation reaches the caller.
    log: list[str] = []

    async def cleanup() -> None:
        with anyio.fail_after(1):
            await anyio.sleep(0.1)
        log.append("cleanup end")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    task = asyncio.get_running_loop().create_task(call(middleware))
    await asyncio.sleep(0.02)
    task.cancel()
    with anyio.fail_after(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert log == ["cleanup end"]


async def test_cleanup_using_task_groups_to_thread_and_sleep0_inside_runs_fully() -> None:
    log: list[str] = []

    async def child(name: str) -> None:
        await anyio.sleep(0.01)
        log.append(name)

    async def cleanup() -> None:
        await anyio.lowlevel.checkpoint()
        async with anyio.create_task_group() as tg:
            tg.start_soon(child, "a")
            tg.start_soon(child, "b")
        log.append(await anyio.to_thread.run_sync(lambda: "thread"))
        with anyio.move_on_after(0):
            await anyio.sleep(1)
        log.append("end")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app, timeout=1)
    for _ in range(2):  # the second time on a reused idle worker (asyncio)
        log.clear()
        with anyio.fail_after(2):
            await call(middleware)
        assert sorted(log[:2]) == ["a", "b"]
        assert log[2:] == ["thread", "end"]


async def test_recorder_shows_the_response_before_a_cancelled_phase_ends() -> None:
    # The response is sent before the phase, even when the request is then cancelled.
    recorder = Recorder()
    ended: list[str] = []

    async def cleanup() -> None:
        await anyio.sleep(0.05)
        ended.append(str(recorder.types))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    with anyio.fail_after(2):
        with anyio.move_on_after(0.01):
            await call(CleanupMiddleware(app), recorder=recorder)
    assert ended == [str(["http.response.start", "http.response.body"])]
