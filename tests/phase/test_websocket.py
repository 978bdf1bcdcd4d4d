"""Websockets: a registry per connection, cleanups after the close, and the close in the Outcome.

Through Starlette's ``TestClient`` on the backend of the ``anyio_backend`` fixture (asyncio and
trio). Its websocket session runs the app in a portal and, on leaving the ``with`` block, waits
for the app call (cleanups included) to end.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocketDisconnect

from asgi_cleanup import CleanupMiddleware, CleanupRegistry, Outcome

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def test_websocket_scope_gets_a_fresh_registry(anyio_backend: str) -> None:
    registries: list[Any] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registries.append(scope.get("cleanup"))
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    client = TestClient(CleanupMiddleware(app), backend=anyio_backend)
    for _ in range(2):
        with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect):
            ws.receive_text()

    first, second = registries
    assert isinstance(first, CleanupRegistry)
    assert isinstance(second, CleanupRegistry)
    assert first is not second


def test_websocket_cleanups_run_after_app_closes(anyio_backend: str) -> None:
    log: list[str] = []
    outcomes: list[Outcome | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def cleanup() -> None:
            log.append("cleanup")
            outcomes.append(registry.outcome)

        registry.register(cleanup)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "hello"})
        await send({"type": "websocket.close", "code": 1000})
        log.append("closed")

    client = TestClient(CleanupMiddleware(app), backend=anyio_backend)
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "hello"
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_text()
        assert info.value.code == 1000

    assert log == ["closed", "cleanup"]
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.response_complete is True
    assert outcome.client_disconnected is False
    assert outcome.status is None
    assert outcome.exception is None
    assert outcome.scope["type"] == "websocket"


def test_websocket_cleanups_run_after_client_closes(anyio_backend: str) -> None:
    log: list[str] = []
    outcomes: list[Outcome | None] = []
    cleaned_up = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def cleanup() -> None:
            log.append("cleanup")
            outcomes.append(registry.outcome)
            cleaned_up.set()

        registry.register(cleanup)
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                log.append(f"client closed {message['code']}")
                return
            await send({"type": "websocket.send", "text": message["text"]})

    client = TestClient(CleanupMiddleware(app), backend=anyio_backend)
    with client.websocket_connect("/ws") as ws:
        ws.send_text("ping")
        assert ws.receive_text() == "ping"
        ws.close(1001)
        # Leaving the block would also cancel the app; wait for it to see the close first.
        assert cleaned_up.wait(2)

    assert log == ["client closed 1001", "cleanup"]
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.response_complete is True
    assert outcome.client_disconnected is True
    assert outcome.status is None
    assert outcome.exception is None


def test_websocket_denial_response_records_its_status(anyio_backend: str) -> None:
    outcomes: list[Outcome | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]

        async def cleanup() -> None:
            outcomes.append(registry.outcome)

        registry.register(cleanup)
        assert "websocket.http.response" in scope["extensions"]
        assert (await receive())["type"] == "websocket.connect"
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 403,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"denied"})

    client = TestClient(CleanupMiddleware(app), backend=anyio_backend)
    with pytest.raises(WebSocketDenialResponse) as info, client.websocket_connect("/ws"):
        raise AssertionError("the connection was denied")

    assert info.value.status_code == 403
    assert info.value.content == b"denied"
    (outcome,) = outcomes
    assert outcome is not None
    assert outcome.status == 403
    assert outcome.response_complete is True
    assert outcome.client_disconnected is False
    assert outcome.exception is None
