"""Lifespan pass-through (SPEC 2.8)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Message, Receive, Scope, Send

pytestmark = pytest.mark.anyio


def lifespan_scope() -> Scope:
    return {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}


def lifespan_server() -> tuple[Any, Any, list[Message]]:
    incoming: list[Message] = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[Message] = []

    async def receive() -> Message:
        if not incoming:
            await anyio.sleep_forever()
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    return receive, send, sent


async def test_app_whose_startup_raises_after_receiving_it_is_not_reported_as_started() -> None:
    # The app speaks lifespan: it took lifespan.startup, then its startup code failed. That is
    # not "rejecting the protocol" (Django raises before receiving anything): passed through
    # untouched, the server sees the exception (uvicorn --lifespan on exits on it). The
    # middleware instead tells the server lifespan.startup.complete and swallows the error.
    error = ConnectionError("database unreachable")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        raise error

    receive, send, sent = lifespan_server()
    with anyio.fail_after(2):
        with pytest.raises(ConnectionError) as info:
            await CleanupMiddleware(app)(lifespan_scope(), receive, send)
    assert info.value is error
    assert sent == []


async def test_shutdown_waits_for_spawned_and_inline_phases_before_the_app_hears_it() -> None:
    log: list[str] = []
    inline_started = anyio.Event()

    async def slow(name: str) -> None:
        if name == "inline":
            inline_started.set()
        await anyio.sleep(0.15)
        log.append(name)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            assert message["type"] == "lifespan.shutdown"
            log.append("app heard shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return
        scope["cleanup"].register(slow, scope["path"].strip("/"))
        if scope["path"] == "/spawned":
            raise RuntimeError("app failed")
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            with pytest.raises(RuntimeError):
                await call(middleware, http_scope("/spawned"))
            tg.start_soon(call, middleware, http_scope("/inline"))
            await inline_started.wait()
            receive, send, _ = lifespan_server()
            await middleware(lifespan_scope(), receive, send)
    assert sorted(log[:2]) == ["inline", "spawned"]
    assert log[2] == "app heard shutdown"
