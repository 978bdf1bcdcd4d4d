"""The registry against threads racing the freeze, log record contents, Outcome
edge cases, and event-loop reuse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware, Outcome
from asgi_cleanup._types import Message, Receive, Scope, Send

SECRETS = ("q-secret-3141", "h-secret-2718", "c-secret-1618")


def secret_scope(path: str = "/account") -> Scope:
    return http_scope(
        path,
        method="POST",
        query_string=f"token={SECRETS[0]}".encode(),
        headers=[
            (b"host", b"example.com"),
            (b"authorization", f"Bearer {SECRETS[1]}".encode()),
            (b"cookie", f"session={SECRETS[2]}".encode()),
        ],
    )


@pytest.mark.anyio
async def test_registrations_racing_the_freeze_from_threads_either_run_once_or_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[int] = []
    ran_lock = threading.Lock()
    registered = [0] * 4
    stop = threading.Event()

    def cleanup(n: int) -> None:
        with ran_lock:
            ran.append(n)

    threads: list[threading.Thread] = []

    def stop_after_late_registrations() -> None:
        # Cleanups start only after the freeze, so of the registrations counted from here at
        # most one per thread (one in flight each) began before it: wait for twice that.
        start = sum(registered)
        deadline = time.monotonic() + 2
        while sum(registered) < start + 2 * len(registered) and time.monotonic() < deadline:
            time.sleep(0.001)
        stop.set()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(stop_after_late_registrations)  # runs last (LIFO)

        def hammer(slot: int) -> None:
            n = slot * 1_000_000
            while not stop.is_set():
                registry.register(cleanup, n)
                n += 1
                registered[slot] += 1
                time.sleep(0.0001)

        for slot in range(4):
            threads.append(threading.Thread(target=hammer, args=(slot,), daemon=True))
            threads[-1].start()
        while sum(registered) < 100:  # noqa: ASYNC110 - plain threads, no event to wait on
            await anyio.sleep(0.001)
        for message in respond():
            await send(message)
        # return while the threads are still registering

    with caplog.at_level(logging.WARNING, logger="asgi_cleanup"):
        with anyio.fail_after(5):
            await call(CleanupMiddleware(app, timeout=None))
        for thread in threads:
            thread.join(1)
    warned = [r for r in caplog.records if "registered after cleanups started" in r.getMessage()]
    assert warned, "no registration raced the freeze"
    assert len(ran) == len(set(ran))
    assert len(ran) + len(warned) == sum(registered)


@pytest.mark.anyio
async def test_timeout_log_records_name_method_and_path_but_no_query_header_or_cookie(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    async def slow_async() -> None:
        await anyio.sleep(1)

    def slow_sync() -> None:
        release.wait(1)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(slow_sync)
        scope["cleanup"].register(slow_async)
        for message in respond():
            await send(message)

    try:
        with caplog.at_level(logging.DEBUG, logger="asgi_cleanup"):
            with anyio.fail_after(3):
                await call(CleanupMiddleware(app, timeout=0.05), secret_scope())
    finally:
        release.set()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("slow_async timed out" in m and "POST /account" in m for m in messages), messages
    assert any("slow_sync timed out" in m and "POST /account" in m for m in messages), messages
    formatter = logging.Formatter("%(message)s")
    for record in caplog.records:
        text = formatter.format(record) + repr(record.__dict__)
        for secret in SECRETS:
            assert secret not in text


def test_asyncio_runner_reusing_its_loop_keeps_serving_suspending_cleanups() -> None:
    ran: list[int] = []

    async def cleanup(n: int) -> None:
        await asyncio.sleep(0.001)
        ran.append(n)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup, scope["n"])
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    with asyncio.Runner() as runner:
        for n in range(3):
            runner.run(call(middleware, http_scope(n=n)))
    for n in range(3, 5):
        asyncio.run(call(middleware, http_scope(n=n)))
    assert ran == [0, 1, 2, 3, 4]


async def outcome_of(app_body: Any, *incoming: Message, send_raises_on: str | None = None) -> Any:
    outcomes: list[Outcome | None] = []
    queue = list(incoming)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(lambda: outcomes.append(registry.outcome))
        await app_body(receive, send)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError

    async def send(message: Message) -> None:
        if message["type"] == send_raises_on:
            raise OSError("client gone")

    middleware = CleanupMiddleware(app)
    with anyio.fail_after(2):
        with contextlib.suppress(OSError):
            await middleware(http_scope(), receive, send)
        await middleware.drain()
    [outcome] = outcomes
    return outcome


@pytest.mark.anyio
async def test_disconnect_received_after_pathsend_does_not_count() -> None:
    async def body(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.pathsend", "path": "/etc/hostname"})
        assert (await receive())["type"] == "http.disconnect"

    outcome = await outcome_of(body, {"type": "http.disconnect"})
    assert (outcome.status, outcome.response_complete, outcome.client_disconnected) == (
        200,
        True,
        False,
    )


@pytest.mark.anyio
async def test_trailers_complete_only_with_the_last_trailers_message() -> None:
    async def body(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": True})
        assert (await receive())["type"] == "http.disconnect"

    outcome = await outcome_of(body, {"type": "http.disconnect"})
    assert (outcome.response_complete, outcome.client_disconnected) == (False, True)


@pytest.mark.anyio
async def test_send_raising_on_the_last_body_counts_as_disconnect_and_not_complete() -> None:
    async def body(receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    outcome = await outcome_of(body, send_raises_on="http.response.body")
    assert (outcome.status, outcome.response_complete, outcome.client_disconnected) == (
        503,
        False,
        True,
    )
    assert isinstance(outcome.exception, OSError)


@pytest.mark.anyio
async def test_sync_cleanups_and_releases_of_many_requests_respect_thread_limit_and_run_once() -> (
    None
):
    running = peak = others = others_peak = 0
    lock = threading.Lock()
    ran: list[int] = []

    def cleanup(n: int) -> None:
        nonlocal running, peak, others, others_peak
        with lock:
            running += 1
            others += n % 2 == 0
            peak, others_peak = max(peak, running), max(others_peak, others)
        time.sleep(0.01)
        with lock:
            running -= 1
            others -= n % 2 == 0
            ran.append(n)

    @contextlib.contextmanager
    def resource(n: int) -> Iterator[None]:
        yield
        cleanup(n)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        n = scope["n"]
        if n % 2:  # a release: it may take the lane
            scope["cleanup"].enter_context(resource(n))
        else:
            scope["cleanup"].register(cleanup, n)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app, thread_limit=3)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            for n in range(40):
                tg.start_soon(call, middleware, http_scope(n=n))
    assert sorted(ran) == list(range(40))
    assert peak <= 3
    assert others_peak == 2  # the third thread is the lane of releases
