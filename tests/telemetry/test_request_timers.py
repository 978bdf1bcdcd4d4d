"""Request timers that stop at the response: each instrumentation's server span and request
duration, with CleanupMiddleware outside it (the recommended placement) and inside it, around a
request whose cleanup takes 0.3 s. The table in docs/observability.md says what these show."""

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as ContribMiddleware
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.trace import SpanKind
from otel_support import Otel, call
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio

CLEANUP_SECONDS = 0.3


async def slow_cleanup() -> None:
    await anyio.sleep(CLEANUP_SECONDS)


async def endpoint(request: Request) -> PlainTextResponse:
    request.scope["cleanup"].register(slow_cleanup)
    return PlainTextResponse("ok")


def starlette_app(*middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/items", endpoint)], middleware=list(middleware))


def fastapi_app(otel: Otel, native: bool) -> FastAPI:
    providers = {"tracer_provider": otel.tracer_provider, "meter_provider": otel.meter_provider}
    app = FastAPI(telemetry=providers if native else {"tracing": False, "metrics": False})
    app.add_api_route("/items", endpoint)
    return app


def cleanups(app: Any, otel: Otel) -> CleanupMiddleware:
    return otel.middleware(app)


def providers(otel: Otel) -> dict[str, Any]:
    return {"tracer_provider": otel.tracer_provider, "meter_provider": otel.meter_provider}


def contrib_asgi(otel: Otel, outside: bool) -> Any:
    if outside:
        return cleanups(ContribMiddleware(starlette_app(), **providers(otel)), otel)
    return ContribMiddleware(cleanups(starlette_app(), otel), **providers(otel))


def contrib_fastapi(otel: Otel, outside: bool) -> Any:
    app = fastapi_app(otel, native=False)
    FastAPIInstrumentor.instrument_app(app, **providers(otel))
    if outside:
        return cleanups(app, otel)
    app.add_middleware(CleanupMiddleware, telemetry=True, **providers(otel))
    return app


def fastapi_native(otel: Otel, outside: bool) -> Any:
    app = fastapi_app(otel, native=True)
    if outside:
        return cleanups(app, otel)
    app.add_middleware(CleanupMiddleware, telemetry=True, **providers(otel))
    return app


def starlette_experimental(otel: Otel, outside: bool) -> Any:
    middleware = Middleware(StarletteMiddleware, **providers(otel))
    if outside:
        return cleanups(starlette_app(middleware), otel)
    return StarletteMiddleware(cleanups(starlette_app(), otel), **providers(otel))


INSTRUMENTATIONS: dict[str, Callable[[Otel, bool], Any]] = {
    "opentelemetry-instrumentation-asgi": contrib_asgi,
    "opentelemetry-instrumentation-fastapi": contrib_fastapi,
    "FastAPI(telemetry=...)": fastapi_native,
    "starlette.middleware.opentelemetry": starlette_experimental,
}


def request_durations(otel: Otel) -> list[float]:
    """Seconds of each request-duration point the instrumentation recorded (any unit)."""
    data = otel.reader.get_metrics_data()
    found = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name in ("http.server.request.duration", "http.server.duration"):
                    scale = 1e-3 if metric.unit == "ms" else 1.0
                    found.extend(p.sum * scale for p in metric.data.data_points)
    return found


# (instrumentation, cleanups outside it): whether its server span, and its request duration
# (None: it records none), include the cleanup. docs/observability.md's table says the same.
INCLUDES: dict[tuple[str, bool], tuple[bool, bool | None]] = {
    ("opentelemetry-instrumentation-asgi", True): (False, False),
    ("opentelemetry-instrumentation-asgi", False): (False, True),
    ("opentelemetry-instrumentation-fastapi", True): (False, False),
    ("opentelemetry-instrumentation-fastapi", False): (False, True),
    ("FastAPI(telemetry=...)", True): (False, False),
    ("FastAPI(telemetry=...)", False): (False, False),
    ("starlette.middleware.opentelemetry", True): (False, None),
    ("starlette.middleware.opentelemetry", False): (True, None),
}


@pytest.mark.parametrize("name", list(INSTRUMENTATIONS))
@pytest.mark.parametrize("outside", [True, False], ids=["cleanups-outside", "cleanups-inside"])
async def test_which_request_timers_include_a_cleanup_in_each_placement(
    name: str, outside: bool
) -> None:
    otel = Otel()
    app = INSTRUMENTATIONS[name](otel, outside)
    started = anyio.current_time()
    sent = await call(app)
    assert anyio.current_time() - started >= CLEANUP_SECONDS  # in-process: cleanups included
    assert sent[0]["status"] == 200
    [server] = [s for s in otel.spans(None) if s.kind is SpanKind.SERVER]
    assert server.end_time is not None
    assert server.start_time is not None
    [cleanup] = otel.spans()
    assert cleanup.context.trace_id == server.context.trace_id  # the request's trace
    span_includes, duration_includes = INCLUDES[name, outside]
    assert ((server.end_time - server.start_time) / 1e9 >= CLEANUP_SECONDS) is span_includes
    durations = request_durations(otel)
    if duration_includes is None:
        assert durations == []
    else:
        assert len(durations) == 1
        assert (durations[0] >= CLEANUP_SECONDS) is duration_includes


async def test_fastapi_telemetry_steps_aside_for_the_contrib_instrumentation() -> None:
    otel = Otel()
    app = fastapi_app(otel, native=True)
    FastAPIInstrumentor.instrument_app(app, **providers(otel))
    await call(cleanups(app, otel))
    assert len([s for s in otel.spans(None) if s.kind is SpanKind.SERVER]) == 1
