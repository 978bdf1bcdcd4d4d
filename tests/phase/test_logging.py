import functools
import logging
import types
from collections.abc import Mapping

import anyio
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


def rendered_locals(tb: types.TracebackType | None) -> str:
    """What a formatter or error tracker that records traceback locals (Sentry's default)
    would ship: every local of every frame, mappings and sequences item by item."""

    def render(value: object, depth: int = 0) -> str:
        if depth < 4 and isinstance(value, Mapping):
            return " ".join(f"{k!r}={render(v, depth + 1)}" for k, v in value.items())
        if depth < 4 and isinstance(value, list | tuple):
            return " ".join(render(v, depth + 1) for v in value)
        return repr(value)

    parts = []
    while tb is not None:
        parts.extend(render(v) for v in tb.tb_frame.f_locals.values())
        tb = tb.tb_next
    return " ".join(parts)


@pytest.mark.anyio
async def test_no_traceback_local_of_a_logged_failure_holds_headers_or_query_string(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)
    scope = http_scope(
        "/account",
        query_string=f"token={SECRETS[0]}".encode(),
        headers=[
            (b"authorization", f"Bearer {SECRETS[1]}".encode()),
            (b"cookie", f"session={SECRETS[2]}".encode()),
        ],
    )

    async def async_failing() -> None:
        raise RuntimeError("async cleanup broke")

    async def too_slow() -> None:
        await anyio.sleep(1)

    def on_error(cleanup: object, exc: BaseException, outcome: object) -> None:
        raise RuntimeError("on_error broke")

    async def on_complete(reports: object, outcome: object) -> None:
        raise RuntimeError("on_complete broke")

    async def failing_app(scope: Scope, receive: Receive, send: Send) -> None:
        for cleanup in (failing_cleanup, async_failing, too_slow):
            scope["cleanup"].register(cleanup)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(
        failing_app, timeout=0.1, on_error=on_error, on_complete=on_complete
    )
    await call(middleware, scope)
    records = error_records(caplog)
    assert len(records) == 7  # three cleanups, an on_error call for each, on_complete
    for record in records:
        assert record.exc_info is not None
        text = rendered_locals(record.exc_info[2])
        for secret in SECRETS:
            assert secret not in text, record.getMessage()
