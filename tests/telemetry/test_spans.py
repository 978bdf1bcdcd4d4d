"""One span per cleanup, with its parent, attributes, error status and timeout, current while it
runs and while its failure is logged; on asyncio and trio, with the real OpenTelemetry SDK."""

import logging
from typing import Any

import anyio
import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode
from otel_support import Otel, call, respond

import asgi_cleanup

pytestmark = pytest.mark.anyio


def current_span_id() -> int:
    return trace.get_current_span().get_span_context().span_id


async def test_each_cleanup_gets_one_internal_span_child_of_the_span_it_was_registered_in() -> None:
    otel, seen = Otel(), []

    async def async_cleanup() -> None:
        seen.append(current_span_id())

    def sync_cleanup() -> None:
        seen.append(current_span_id())

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with otel.tracer.start_as_current_span("endpoint"):
            scope["cleanup"].register(async_cleanup)
            scope["cleanup"].register(sync_cleanup)
        await respond(send)

    await call(otel.middleware(app))
    [endpoint] = otel.spans("tests")
    spans = otel.spans()
    here = f"{__name__}.{sync_cleanup.__qualname__.rsplit('.', 2)[0]}.<locals>"
    assert [s.name for s in spans] == [f"{here}.sync_cleanup", f"{here}.async_cleanup"]
    for span in spans:
        assert span.kind is SpanKind.INTERNAL
        assert span.parent is not None
        assert span.parent.span_id == endpoint.context.span_id
        assert span.context.trace_id == endpoint.context.trace_id
        assert span.instrumentation_scope.name == "asgi_cleanup"
        assert span.instrumentation_scope.version == asgi_cleanup.__version__
        assert span.status.status_code is StatusCode.UNSET
        assert dict(span.attributes or {}) == {
            "asgi_cleanup.cleanup.name": span.name,
            "asgi_cleanup.cleanup.source": "registered",
            "asgi_cleanup.cleanup.timed_out": False,
        }
    # Current while each ran: the sync one in its worker thread too.
    assert seen == [spans[0].context.span_id, spans[1].context.span_id]


def directive(outcome: Any) -> None:
    pass


@pytest.mark.parametrize("sends", [True, False], ids=["sent", "sent-nothing"])
async def test_a_directive_cleanups_parent_is_the_span_of_the_first_send_else_of_the_app_call(
    sends: bool,
) -> None:
    otel = Otel()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        with otel.tracer.start_as_current_span("server"):
            if sends:
                with otel.tracer.start_as_current_span("http send"):
                    await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"ok"})
        scope["cleanup"].register(directive)  # after the spans: a root span

    middleware = otel.middleware(app, settings={"handlers": [directive]})
    with otel.tracer.start_as_current_span("around the app call") as around:
        await call(middleware)
    await middleware.drain()  # unsent: the phase runs in a task of its own
    by_name = {s.name: s for s in otel.spans("tests")}
    registered, configured = otel.spans()
    assert registered.attributes["asgi_cleanup.cleanup.source"] == "registered"
    assert configured.attributes["asgi_cleanup.cleanup.source"] == "directive"
    parent = by_name["http send"].context if sends else around.get_span_context()
    assert configured.parent is not None
    assert configured.parent.span_id == parent.span_id
    assert registered.parent is not None
    assert registered.parent.span_id == around.get_span_context().span_id


class CleanupError(Exception):
    pass


async def test_a_failed_cleanups_span_has_error_status_and_exception_and_holds_its_log_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    otel, logged = Otel(), []

    class SpanOfRecord(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(current_span_id())

    async def failing() -> None:
        raise CleanupError("no")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["cleanup"].register(failing)
        await respond(send)

    handler = SpanOfRecord(logging.ERROR)
    logging.getLogger("asgi_cleanup").addHandler(handler)
    try:
        await call(otel.middleware(app))
    finally:
        logging.getLogger("asgi_cleanup").removeHandler(handler)
    [span] = otel.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["error.type"] == "CleanupError"
    assert span.attributes["asgi_cleanup.cleanup.timed_out"] is False
    [event] = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"].endswith("CleanupError")
    assert logged == [span.context.span_id]


async def test_a_timed_out_cleanups_span_ends_at_its_deadline_with_a_timeout_error() -> None:
    otel, timeout = Otel(), 0.2

    async def slow() -> None:
        await anyio.sleep(5)

    def slow_in_a_thread() -> None:
        import time

        time.sleep(0.5)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["cleanup"].register(slow_in_a_thread)
        scope["cleanup"].register(slow)
        await respond(send)

    middleware = otel.middleware(app, timeout=timeout)
    await call(middleware)
    await middleware.drain()
    spans = otel.spans()
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes["error.type"] == "timeout"
        assert span.attributes["asgi_cleanup.cleanup.timed_out"] is True
        assert span.end_time is not None
        assert span.start_time is not None
        assert (span.end_time - span.start_time) / 1e9 == pytest.approx(timeout, abs=0.01)


async def test_a_sync_cleanup_returning_an_awaitable_has_one_span_current_until_it_is_awaited() -> (
    None
):
    otel, seen = Otel(), []

    async def later() -> None:
        seen.append(current_span_id())

    def returns_awaitable() -> Any:
        seen.append(current_span_id())
        return later()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["cleanup"].register(returns_awaitable)
        await respond(send)

    await call(otel.middleware(app))
    [span] = otel.spans()
    assert seen == [span.context.span_id] * 2
