"""Telemetry never fails a cleanup or a phase: a span processor or an instrument that raises is
logged, at most once a minute, and every cleanup still runs and is reported."""

import logging
from typing import Any

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from otel_support import call, respond

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio


class BrokenProcessor(SpanProcessor):
    """Raises when a span starts, or when it ends."""

    def __init__(self, on: str) -> None:
        self.on = on

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if self.on == "start":
            raise RuntimeError("the processor broke on start")

    def on_end(self, span: ReadableSpan) -> None:
        if self.on == "end":
            raise RuntimeError("the processor broke on end")


class BrokenInstrument:
    """A counter or histogram whose every measurement raises."""

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the instrument broke")

    record = add


class BrokenMeterProvider:
    """A meter provider (duck-typed, as the API takes it) whose instruments all raise."""

    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        if name.startswith("create_"):
            return lambda *args, **kwargs: BrokenInstrument()
        raise AttributeError(name)


def middleware(app: Any, on: str, **options: Any) -> CleanupMiddleware:
    """Telemetry whose span processor raises ``on`` "start" or "end", or (``on`` "metrics")
    whose instruments all raise."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BrokenProcessor(on))
    meter_provider: Any = MeterProvider(metric_readers=[InMemoryMetricReader()])
    if on == "metrics":
        meter_provider = BrokenMeterProvider()
    return CleanupMiddleware(
        app,
        telemetry=True,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        **options,
    )


@pytest.mark.parametrize("on", ["start", "end", "metrics"])
async def test_telemetry_that_raises_stops_no_cleanup_and_is_logged_once_a_minute(
    on: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")

    def second() -> None:
        ran.append("second")

    async def third() -> None:
        ran.append("third")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for cleanup in (first, second, third):
            scope["cleanup"].register(cleanup)
        await respond(send)

    reports: list[Any] = []
    mw = middleware(app, on, on_complete=lambda found, outcome: reports.append(found))
    with caplog.at_level(logging.INFO, logger="asgi_cleanup"):
        for _ in range(3):
            sent = await call(mw)
            assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
        await mw.drain()
    assert ran == ["third", "second", "first"] * 3
    assert [[r.cleanup for r in found] for found in reports] == [[third, second, first]] * 3
    assert all(r.exception is None for found in reports for r in found)
    failures = [r for r in caplog.records if r.name == "asgi_cleanup" and r.levelno >= 30]
    assert len(failures) == 1
    [record] = failures
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("Telemetry failed in ")
    assert record.exc_info is not None
    broke = "the instrument broke" if on == "metrics" else f"the processor broke on {on}"
    assert str(record.exc_info[1]) == broke


async def test_a_failing_cleanup_is_still_logged_when_its_span_could_not_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing() -> None:
        raise ValueError("the cleanup's own failure")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scope["cleanup"].register(failing)
        await respond(send)

    with caplog.at_level(logging.INFO, logger="asgi_cleanup"):
        await call(middleware(app, "start"))
    messages = [r.getMessage() for r in caplog.records if r.name == "asgi_cleanup"]
    assert [m.split(";")[0] for m in messages if m.startswith("Telemetry")] == [
        "Telemetry failed in start"
    ]
    [failure] = [r for r in caplog.records if r.exc_info and r.exc_info[0] is ValueError]
    assert "failing" in failure.getMessage()
