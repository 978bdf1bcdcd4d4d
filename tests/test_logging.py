import functools
import logging

import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

SECRETS = ("query-secret-4711", "header-secret-4712", "cookie-secret-4713")


def failing_cleanup() -> None:
    raise RuntimeError("cleanup broke")


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["cleanup"].register(failing_cleanup)
    for message in respond():
        await send(message)


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asgi_cleanup" and r.levelno == logging.ERROR]


@pytest.mark.anyio
async def test_failure_log_names_the_cleanup_method_and_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await call(CleanupMiddleware(app), http_scope("/orders/7", method="POST"))
    [record] = error_records(caplog)
    message = record.getMessage()
    assert "test_logging.failing_cleanup" in message
    assert "POST /orders/7" in message
    assert record.exc_info is not None


@pytest.mark.anyio
async def test_control_characters_in_the_logged_path_are_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = "/evil\r\nERROR forged line\x1b[31m\x00\x85"
    await call(CleanupMiddleware(app), http_scope(path))
    [record] = error_records(caplog)
    message = record.getMessage()
    assert "\r" not in message
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\x00" not in message
    assert "\x85" not in message
    assert "/evil\\x0d\\x0aERROR forged line\\x1b[31m\\x00\\x85" in message


@pytest.mark.anyio
async def test_log_records_carry_no_query_string_header_or_cookie(
    caplog: pytest.LogCaptureFixture,
) -> None:
    scope = http_scope(
        "/account",
        query_string=f"token={SECRETS[0]}".encode(),
        headers=[
            (b"host", b"example.com"),
            (b"authorization", f"Bearer {SECRETS[1]}".encode()),
            (b"cookie", f"session={SECRETS[2]}".encode()),
        ],
    )

    async def late_registering_app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(failing_cleanup)
        registry.register(lambda: registry.register(print))  # a late registration warns
        for message in respond():
            await send(message)

    with caplog.at_level(logging.DEBUG, logger="asgi_cleanup"):
        await call(CleanupMiddleware(late_registering_app, timeout=1), scope)
    assert len(caplog.records) >= 2
    formatter = logging.Formatter("%(message)s %(pathname)s")
    for record in caplog.records:
        text = formatter.format(record) + repr(record.__dict__)
        for secret in SECRETS:
            assert secret not in text


@pytest.mark.anyio
async def test_partial_cleanup_is_named_after_its_function(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def partial_app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(functools.partial(failing_cleanup))
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(partial_app))
    [record] = error_records(caplog)
    assert "functools.partial(test_logging.failing_cleanup)" in record.getMessage()


@pytest.mark.anyio
async def test_websocket_failures_are_logged_with_the_websocket_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def ws_app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(failing_cleanup)
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})

    scope = {"type": "websocket", "path": "/live", "headers": [], "query_string": b""}
    messages = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, str]:
        return messages.pop(0)

    async def send(message: object) -> None:
        pass

    await CleanupMiddleware(ws_app)(scope, receive, send)
    [record] = error_records(caplog)
    assert "WEBSOCKET /live" in record.getMessage()
