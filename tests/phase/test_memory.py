import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from raw import call, http_scope

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup._types import Message, Receive, Scope, Send

ALIVE: list["weakref.ref[AppError]"] = []


class AppError(Exception):
    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        ALIVE.append(weakref.ref(self))


@pytest.fixture
def no_garbage_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.anyio
@pytest.mark.usefixtures("no_garbage_collector")
async def test_app_error_is_freed_without_the_garbage_collector_once_its_phase_is_over() -> None:
    # The exception's traceback holds the request's frames and scope, and so the registry:
    # were the registry still to hold the exception, only a collector could free them (and
    # granian puts objects of its own in that cycle, which no collector sees).
    ALIVE.clear()
    registries: list[CleanupRegistry] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registries.append(scope["cleanup"])
        scope["cleanup"].register(lambda: None)
        raise AppError("boom")  # no local keeps it: that cycle would be the app's own

    middleware = CleanupMiddleware(app)
    with contextlib.suppress(AppError):
        await call(middleware)
    await middleware.drain()
    assert registries[0].outcome is None  # let go of, once the phase was over
    assert ALIVE[0]() is None


class ServerConnection:
    """As a server's per-request object: its ``send`` and ``receive`` are bound methods of an
    object that holds the scope (uvicorn's ``RequestResponseCycle``, hypercorn's stream)."""

    def __init__(self, path: str) -> None:
        self.scope: Scope = http_scope(path)
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}


async def async_cleanup(outcome_of: CleanupRegistry) -> None:
    assert outcome_of.outcome is not None


def sync_cleanup(outcome_of: CleanupRegistry) -> None:
    assert outcome_of.outcome is not None


async def registering_app(scope: Scope, receive: Receive, send: Send) -> None:
    cleanups = {
        "/async": [async_cleanup],
        "/sync": [sync_cleanup],
        "/both": [async_cleanup, sync_cleanup],
    }
    for cleanup in cleanups.get(scope["path"], []):
        scope["cleanup"].register(cleanup, scope["cleanup"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/nothing", "/async", "/sync", "/both"])
async def test_a_served_request_leaves_no_reference_cycle(path: str) -> None:
    # Were the registry to keep the server's send (which holds the scope, which holds the
    # registry) or the outcome (which holds the scope), every request's objects would wait
    # for the garbage collector: behind uvicorn that cost a quarter of the throughput.
    middleware = CleanupMiddleware(registering_app)
    connection = ServerConnection(path)
    await middleware(connection.scope, connection.receive, connection.send)  # warm-up
    gc.collect()
    gc.disable()
    try:
        for _ in range(20):
            connection = ServerConnection(path)
            await middleware(connection.scope, connection.receive, connection.send)
            assert len(connection.sent) == 2
        del connection
        assert gc.collect() == 0
    finally:
        gc.enable()


@pytest.mark.anyio
async def test_send_and_receive_kept_past_the_app_call_raise_a_clear_error() -> None:
    kept: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kept.extend((send, receive))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    connection = ServerConnection("/")
    await CleanupMiddleware(app)(connection.scope, connection.receive, connection.send)

    send, receive = kept
    with pytest.raises(RuntimeError, match="send\\(\\) called after the app call returned"):
        await send({"type": "http.response.body", "body": b"late"})
    with pytest.raises(RuntimeError, match="receive\\(\\) called after the app call returned"):
        await receive()
    assert len(connection.sent) == 2
