"""OpenTelemetry SDK providers that keep what they get in memory, and a tiny ASGI harness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from asgi_cleanup import CleanupMiddleware

Message = dict[str, Any]
App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@dataclass
class Otel:
    """A tracer provider and a meter provider of the SDK, each with an in-memory sink."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def middleware(self, app: App, **options: Any) -> CleanupMiddleware:
        return CleanupMiddleware(
            app,
            telemetry=True,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            **options,
        )

    def spans(self, scope: str | None = "asgi_cleanup") -> list[ReadableSpan]:
        """Finished spans, those of the instrumentation ``scope`` only unless ``None``."""
        spans = self.exporter.get_finished_spans()
        return [s for s in spans if scope is None or s.instrumentation_scope.name == scope]

    def points(self, name: str) -> list[Any]:
        """The data points of metric ``name`` (cumulative), [] if it has none."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend(metric.data.data_points)
        return found

    def metric(self, name: str) -> Any:
        """Metric ``name`` itself (unit, kind), or ``None``."""
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        return metric
        return None


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/items",
    "raw_path": b"/items",
    "root_path": "",
    "query_string": b"secret=1",
    "headers": [(b"host", b"example.com")],
    "client": ("127.0.0.1", 5000),
    "server": ("127.0.0.1", 8000),
}


async def call(app: Any, path: str = "/items") -> list[Message]:
    """One request to ``app``; the messages it sent."""
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({**SCOPE, "path": path, "raw_path": path.encode()}, receive, send)
    return sent


async def respond(send: Any, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
