"""The cleanup phase is shielded: cancellations wait for it, then take effect."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import types
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from asgi_cleanup import CleanupMiddleware, Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

pytestmark = pytest.mark.anyio

START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY = {"type": "http.response.body", "body": b"ok"}


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


def client(*incoming: Message) -> tuple[Receive, Send, list[Message]]:
    """receive() gives ``incoming`` in order, then waits forever; sent messages are kept."""
    queue = list(incoming)
    sent: list[Message] = []

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    return receive, send, sent


def slow_cleanup(
    log: list[str], started: asyncio.Event | anyio.Event, seconds: float = 0.3
) -> Callable[[], Awaitable[None]]:
    async def cleanup() -> None:
        log.append("cleanup start")
        started.set()
        await anyio.sleep(seconds)
        log.append("cleanup end")

    return cleanup


def complete_response_app(cleanup: Callable[[], Awaitable[None]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup)
        await send(START)
        await send(BODY)

    return app


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_task_cancel_waits_for_cleanup_then_cancels() -> None:
    log: list[str] = []
    started = asyncio.Event()
    middleware = CleanupMiddleware(complete_response_app(slow_cleanup(log, started)))
    receive, send, sent = client()

    task = asyncio.create_task(middleware(http_scope(), receive, send))
    await asyncio.wait_for(started.wait(), 2)
    assert sent == [START, BODY]
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2)

    assert log == ["cleanup start", "cleanup end"]
    assert task.cancelled()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_native_task_cancelled_twice_waits_for_cleanup_then_cancels() -> None:
    log: list[str] = []
    started = asyncio.Event()
    middleware = CleanupMiddleware(complete_response_app(slow_cleanup(log, started)))
    receive, send, sent = client()

    task = asyncio.create_task(middleware(http_scope(), receive, send))
    await asyncio.wait_for(started.wait(), 2)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2)

    assert log == ["cleanup start", "cleanup end"]
    assert task.cancelled()
    assert sent == [START, BODY]


async def test_cancel_scope_cancelled_during_cleanup_waits_for_it() -> None:
    log: list[str] = []
    started = anyio.Event()
    middleware = CleanupMiddleware(complete_response_app(slow_cleanup(log, started)))
    receive, send, sent = client()

    async def call() -> None:
        await middleware(http_scope(), receive, send)
        log.append("call returned")
        await anyio.sleep(1)  # the scope's pending cancellation must end the task here
        log.append("not cancelled")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await started.wait()
            tg.cancel_scope.cancel()

    assert tg.cancel_scope.cancelled_caught
    assert log[:2] == ["cleanup start", "cleanup end"]
    assert "not cancelled" not in log
    assert sent == [START, BODY]


async def test_cancelled_app_runs_its_phase_to_the_end_then_cancellation_propagates() -> None:
    log: list[str] = []
    outcomes: list[Outcome | None] = []
    app_waiting = anyio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def cleanup() -> None:
            outcomes.append(registry.outcome)
            log.append("cleanup start")
            await anyio.sleep(0.2)
            log.append("cleanup end")

        registry.register(cleanup)
        await send(START)
        app_waiting.set()
        await anyio.sleep_forever()

    middleware = CleanupMiddleware(app)
    receive, send, sent = client()

    async def call() -> None:
        try:
            await middleware(http_scope(), receive, send)
        except anyio.get_cancelled_exc_class():
            log.append("cancelled")
            raise
        log.append("returned")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await app_waiting.wait()
            tg.cancel_scope.cancel()

    assert log == ["cleanup start", "cleanup end", "cancelled"]
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.exception is None
    assert outcome.status == 200
    assert outcome.response_complete is False
    assert sent == [START]


async def test_client_disconnect_mid_stream_still_runs_cleanups() -> None:
    outcomes: list[Outcome | None] = []
    ran: list[str] = []
    chunk = {"type": "http.response.body", "body": b"chunk", "more_body": True}

    async def first() -> None:
        ran.append("first")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(first)
        registry.register(lambda: outcomes.append(registry.outcome))
        assert (await receive())["type"] == "http.request"
        await send(START)
        await send(chunk)
        # As Starlette's StreamingResponse does: stop streaming once the client has gone.
        assert (await receive())["type"] == "http.disconnect"

    middleware = CleanupMiddleware(app)
    receive, send, sent = client(
        {"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}
    )
    with anyio.fail_after(2):
        await middleware(http_scope("/stream"), receive, send)
        await middleware.drain()

    assert sent == [START, chunk]
    assert ran == ["first"]
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.client_disconnected is True
    assert outcome.response_complete is False
    assert outcome.status == 200
    assert outcome.exception is None


async def test_send_failing_after_client_left_still_runs_cleanups() -> None:
    outcomes: list[Outcome | None] = []
    gone = OSError("client went away")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def cleanup() -> None:
            outcomes.append(registry.outcome)

        registry.register(cleanup)
        await send(START)
        await send({"type": "http.response.body", "body": b"chunk", "more_body": True})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise gone
        sent.append(message)

    middleware = CleanupMiddleware(app)
    with pytest.raises(OSError, match="client went away") as info:
        await middleware(http_scope("/stream"), receive, send)
    assert info.value is gone
    with anyio.fail_after(2):
        await middleware.drain()

    assert sent == [START]
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.client_disconnected is True
    assert outcome.response_complete is False
    assert outcome.exception is gone


def app_with_cleanup_seconds() -> Any:
    """Registers a cleanup sleeping ``?seconds`` (from the path, ``/<id>/<seconds>``) that
    logs its end."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        _, rid, seconds = scope["path"].split("/")

        async def cleanup() -> None:
            await anyio.sleep(float(seconds))
            scope["log"].append(f"{rid} end")

        scope["cleanup"].register(cleanup)
        await send(START)
        await send(BODY)

    return app


async def cancel_two_requests(
    middleware: CleanupMiddleware, paths: tuple[str, str] = ("/short/0.1", "/long/0.4")
) -> list[str]:
    """Two requests (by default both with cleanups running, of 0.1 s and 0.4 s), both tasks
    cancelled natively at once, as daphne does at shutdown; what had happened when the first
    task ended."""
    log: list[str] = []
    tasks = []
    for path in paths:
        scope = http_scope(path)
        scope["log"] = log
        receive, send, _ = client()
        tasks.append(asyncio.create_task(middleware(scope, receive, send)))
    await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    done, _ = await asyncio.wait(tasks, timeout=2, return_when=asyncio.FIRST_COMPLETED)
    assert done
    seen = [*log, "first task ended"]
    await asyncio.wait(tasks, timeout=2)
    assert all(task.cancelled() for task in tasks)
    return seen


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(
    ("other", "first_end"),
    [("/long/0.4", "short end"), ("/busy/registered", "busy's cleanup")],
    ids=["other-in-its-phase", "other-cancelled-in-the-app"],
)
async def test_a_natively_cancelled_request_never_waits_for_other_requests_phases(
    other: str, first_end: str
) -> None:
    # An asyncio.timeout() around an in-process call, or daphne's --application-close-timeout,
    # cancels one request's task: it ends after its own phase, whatever else is running.
    with_cleanup = app_with_cleanup_seconds()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/busy/registered":

            async def quick() -> None:
                scope["log"].append("busy's cleanup")

            scope["cleanup"].register(quick)
            await anyio.sleep_forever()
        await with_cleanup(scope, receive, send)

    seen = await cancel_two_requests(CleanupMiddleware(app), ("/short/0.1", other))

    assert seen == [first_end, "first task ended"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_twisted_reactor_shutdown_waits_for_every_phase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # daphne has no lifespan: at shutdown it cancels every request's task and stops when the
    # first has ended. Its Twisted reactor's shutdown waits for the middleware's drain.
    from twisted.internet.defer import Deferred

    triggers: list[tuple[str, str, Callable[[], Deferred[None]]]] = []
    reactor = types.SimpleNamespace(
        running=True, addSystemEventTrigger=lambda *args: triggers.append(args)
    )
    monkeypatch.setitem(sys.modules, "twisted.internet.reactor", reactor)
    middleware = CleanupMiddleware(app_with_cleanup_seconds(), shutdown_timeout=2)
    log: list[str] = []
    receive, send, _ = client()
    scope = http_scope("/long/0.3")
    scope["log"] = log
    task = asyncio.create_task(middleware(scope, receive, send))
    await asyncio.sleep(0.05)
    assert [(phase, event) for phase, event, _ in triggers] == [("before", "shutdown")]

    fired: list[str] = []
    task.cancel()  # daphne's kill_all_applications
    triggers[0][2]().addCallback(lambda _: fired.append("shutdown goes on"))
    with anyio.fail_after(2):
        while not fired:  # noqa: ASYNC110 - the Deferred fires from a callback of its own
            await asyncio.sleep(0.01)

    assert log == ["long end"]
    assert task.cancelled()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_with_lifespan_a_natively_cancelled_request_does_not_wait_for_others() -> None:
    # With a lifespan, the shutdown drain is what waits (uvicorn, hypercorn, granian).
    middleware = CleanupMiddleware(app_with_cleanup_seconds())
    lifespan_messages = [{"type": "lifespan.startup"}]

    async def receive() -> Message:
        if lifespan_messages:
            return lifespan_messages.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        pass

    lifespan = asyncio.create_task(middleware({"type": "lifespan"}, receive, send))
    await asyncio.sleep(0.01)

    seen = await cancel_two_requests(middleware)
    lifespan.cancel()

    assert seen == ["short end", "first task ended"]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_request_cancelled_by_a_cancel_scope_does_not_wait_for_others() -> None:
    # A request deadline (an anyio scope around the app) is no shutdown: the deadline's own
    # answer must not wait for other requests' cleanups.
    middleware = CleanupMiddleware(app_with_cleanup_seconds())
    log: list[str] = []
    receive, send, _ = client()
    other = http_scope("/long/0.4")
    other["log"] = log
    other_task = asyncio.create_task(middleware(other, receive, send))
    deadline_scope = http_scope("/short/0.1")
    deadline_scope["log"] = log

    with anyio.move_on_after(0.05):
        await middleware(deadline_scope, receive, send)
    log.append("deadline passed")
    await asyncio.wait_for(other_task, 2)

    assert log == ["short end", "deadline passed", "long end"]


async def test_a_cancellation_held_during_the_phase_ends_the_app_call_on_both_backends() -> None:
    # The cancellation is delivered when the phase ends: the middleware's call itself ends
    # with it (on trio it used to return normally, the cancellation lost).
    log: list[str] = []
    started = anyio.Event()
    middleware = CleanupMiddleware(complete_response_app(slow_cleanup(log, started)))
    receive, send, _ = client()

    async def cancel_when_started(scope: anyio.CancelScope) -> None:
        await started.wait()
        scope.cancel()

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            with anyio.CancelScope() as request_scope:
                tg.start_soon(cancel_when_started, request_scope)
                await middleware(http_scope(), receive, send)
                log.append("the call returned normally")

    assert request_scope.cancelled_caught
    assert log == ["cleanup start", "cleanup end"]


@pytest.mark.parametrize("cancel", ["cancel-scope", "native"])
async def test_past_shutdown_timeout_a_phase_no_longer_holds_its_cancellation(
    anyio_backend_name: str, cancel: str
) -> None:
    # SPEC 2.8: the shutdown's bound is absolute, with timeout=None and a sync cleanup that
    # never returns too. uvicorn cancels its request tasks natively once its graceful
    # timeout is over, then sends lifespan.shutdown; hypercorn's trio worker cancels scopes.
    if cancel == "native" and anyio_backend_name != "asyncio":
        pytest.skip("only asyncio has native task cancellation")
    release = threading.Event()
    started = anyio.Event()

    def blocks(notify: Callable[[], None]) -> None:
        notify()
        release.wait(10)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        token = anyio.lowlevel.current_token()
        scope["cleanup"].register(
            blocks, lambda: anyio.from_thread.run_sync(started.set, token=token)
        )
        await send(START)
        await send(BODY)

    middleware = CleanupMiddleware(app, timeout=None, shutdown_timeout=0.2)
    receive, send, _ = client()
    lifespan_messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    shutdown_asked = anyio.Event()

    async def lifespan_receive() -> Message:
        if len(lifespan_messages) == 1:
            await shutdown_asked.wait()
        return lifespan_messages.pop(0)

    async def lifespan_send(message: Message) -> None:
        pass

    async def request() -> None:
        await middleware(http_scope(), receive, send)

    try:
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(middleware, {"type": "lifespan"}, lifespan_receive, lifespan_send)
                if cancel == "native":
                    task = asyncio.create_task(request())
                    await started.wait()
                    task.cancel()  # the server's graceful timeout is over
                else:
                    request_scope = anyio.CancelScope()
                    tg.start_soon(_in_scope, request_scope, request)
                    await started.wait()
                    request_scope.cancel()
                began = anyio.current_time()
                shutdown_asked.set()
                if cancel == "native":
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    assert task.cancelled()
        ended = anyio.current_time()
    finally:
        release.set()

    if cancel != "native":
        assert request_scope.cancelled_caught
    assert 0.15 <= ended - began < 1.0


async def _in_scope(scope: anyio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
    with scope:
        await run()


async def test_a_cancellation_is_held_at_most_shutdown_timeout_without_a_lifespan() -> None:
    # hypercorn cancels its request tasks at the end of its graceful timeout and waits for
    # them before it sends lifespan.shutdown: the hold itself is bounded.
    release = threading.Event()
    started = anyio.Event()

    def blocks(notify: Callable[[], None]) -> None:
        notify()
        release.wait(10)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        token = anyio.lowlevel.current_token()
        scope["cleanup"].register(
            blocks, lambda: anyio.from_thread.run_sync(started.set, token=token)
        )
        await send(START)
        await send(BODY)

    middleware = CleanupMiddleware(app, timeout=None, shutdown_timeout=0.2)
    receive, send, _ = client()
    request_scope = anyio.CancelScope()
    try:
        with anyio.fail_after(3):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    _in_scope, request_scope, partial(middleware, http_scope(), receive, send)
                )
                await started.wait()
                request_scope.cancel()
                began = anyio.current_time()
        ended = anyio.current_time()
    finally:
        release.set()

    assert request_scope.cancelled_caught
    assert 0.15 <= ended - began < 1.0
