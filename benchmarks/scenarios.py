"""The apps compared in-process: a Starlette hello world, bare and under each contender.

Every scenario answers the same request with the same response; what differs is what runs
after it (nothing, one or ten async or sync no-op calls) and what arranges that.
"""

import asyncio
import contextlib
import contextvars
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask, BackgroundTasks
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._backend import cancel_scope
from asgi_cleanup._types import ASGIApp, Message, Receive, Scope, Send


async def async_noop() -> None:
    pass


def sync_noop() -> None:
    pass


def directive_noop(outcome: Any) -> None:
    pass


async def async_directive_noop(outcome: Any) -> None:
    pass


def starlette_app(endpoint: Callable[[Request], Any]) -> Starlette:
    return Starlette(routes=[Route("/", endpoint)])


async def hello(request: Request) -> Response:
    return PlainTextResponse("Hello, world!")


def registering(func: Callable[[], Any], count: int) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        register = request.scope["cleanup"].register
        for _ in range(count):
            register(func)
        return PlainTextResponse("Hello, world!")

    return endpoint


def background(func: Callable[[], Any], count: int) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        if count == 1:
            task: BackgroundTask = BackgroundTask(func)
        else:
            task = BackgroundTasks()
            for _ in range(count):
                task.add_task(func)
        return PlainTextResponse("Hello, world!", background=task)

    return endpoint


class StatusWatchingMiddleware:
    """The floor for any middleware that must see the response: it wraps ``send``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = None

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched_send)


class _Registrations(list[tuple[Any, ...]]):
    def register(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.append((func, args, kwargs, contextvars.copy_context()))
        return func


class FloorMiddleware:
    """The least the contract's own mechanics cost for async cleanups, with none of this
    package's machinery: a list at ``scope["cleanup"]``; after the app call, the request's
    cleanups in a task of their own (SPEC 2.10: a timeout can abandon them there), started
    eagerly on 3.12+, each in its registration context, and with ``scoped`` under the cancel
    scope a timeout would cancel (SPEC 2.6: so that a cleanup's own shield holds on asyncio as
    on trio). No timeout, no logging, no sync cleanups: a measuring stick for the speed bars,
    for cleanups that end in their first step, as the benchmark's do."""

    def __init__(self, app: ASGIApp, scoped: bool) -> None:
        self.app = app
        self.scoped = scoped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entries = scope["cleanup"] = _Registrations()
        await self.app(scope, receive, send)
        if entries:
            await _in_own_task(self._run(entries))

    async def _run(self, entries: _Registrations) -> None:
        on_asyncio = _on_asyncio()
        with cancel_scope(on_asyncio) if self.scoped else contextlib.nullcontext():
            while entries:
                func, args, kwargs, context = entries.pop()
                coro = func(*args, **kwargs)
                with contextlib.suppress(StopIteration):
                    context.run(coro.send, None)
                    raise RuntimeError("the floor measures cleanups that end in one step")


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def _in_own_task(coro: Coroutine[Any, Any, None]) -> None:
    if not _on_asyncio():
        import trio

        done = trio.Event()

        async def run() -> None:
            await coro
            done.set()

        trio.lowlevel.spawn_system_task(run)
        await done.wait()
        return
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):
        task = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg]
    else:
        task = loop.create_task(coro)
    if not task.done():
        await task


class AfterResponseMiddleware(BaseHTTPMiddleware):
    """What users hand-write today: a BaseHTTPMiddleware calling a function afterwards."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.background = BackgroundTask(async_noop)
        return response


def directive_settings(server_wide: bool) -> dict[str, Any]:
    """5 hosts and 20 locations, none matching the benchmark's request (host ``localhost``,
    path ``/``); with ``server_wide``, one async directive cleanup that runs for every request.
    """
    settings: dict[str, Any] = {
        "host": [
            {"name": f"tenant{i}.example.com", "handlers": ["benchmarks.scenarios:directive_noop"]}
            for i in range(5)
        ],
        "location": [
            {"path": f"/area{i}", "handlers": ["benchmarks.scenarios:directive_noop"]}
            for i in range(20)
        ],
    }
    if server_wide:
        settings["handlers"] = ["benchmarks.scenarios:async_directive_noop"]
    return settings


class _Discard:
    """A span exporter that drops what it gets: the SDK's cost without an exporter's."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def telemetry_scenarios() -> dict[str, ASGIApp]:
    """``telemetry=True`` through the OpenTelemetry SDK (spans to a discarding exporter, metrics
    aggregated in memory); none without the SDK (the bench extra installs it)."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    except ImportError:
        return {}
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_Discard()))  # type: ignore[arg-type]
    providers = {
        "telemetry": True,
        "tracer_provider": tracer_provider,
        "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
    }
    return {
        f"telemetry on: {count} async cleanup{'s' * (count > 1)}": CleanupMiddleware(
            starlette_app(registering(async_noop, count)), **providers
        )
        for count in (1, 10)
    }


def floor_scenarios() -> dict[str, ASGIApp]:
    """``FloorMiddleware``: its own task alone, then with the cancel scope; 1 and 10 cleanups."""
    return {
        f"floor, {what}: {count} async": FloorMiddleware(
            starlette_app(registering(async_noop, count)), scoped
        )
        for what, scoped in (("own task", False), ("own task and cancel scope", True))
        for count in (1, 10)
    }


def scenarios() -> dict[str, ASGIApp]:
    """Name -> app; the names are what the report refers to."""
    return {
        "bare": starlette_app(hello),
        "send-watching middleware": StatusWatchingMiddleware(starlette_app(hello)),
        "nothing registered": CleanupMiddleware(starlette_app(hello)),
        "directive lookup, no match (20 locations, 5 hosts)": CleanupMiddleware(
            starlette_app(hello), settings=directive_settings(server_wide=False)
        ),
        "1 async directive cleanup (20 locations, 5 hosts)": CleanupMiddleware(
            starlette_app(hello), settings=directive_settings(server_wide=True)
        ),
        "BackgroundTask, 1 async": starlette_app(background(async_noop, 1)),
        "1 async cleanup": CleanupMiddleware(starlette_app(registering(async_noop, 1))),
        "BackgroundTasks, 10 async": starlette_app(background(async_noop, 10)),
        "10 async cleanups": CleanupMiddleware(starlette_app(registering(async_noop, 10))),
        "BackgroundTask, 1 sync": starlette_app(background(sync_noop, 1)),
        "1 sync cleanup": CleanupMiddleware(starlette_app(registering(sync_noop, 1))),
        "10 sync cleanups": CleanupMiddleware(starlette_app(registering(sync_noop, 10))),
        "BaseHTTPMiddleware, 1 async": AfterResponseMiddleware(starlette_app(hello)),
        **floor_scenarios(),
        **telemetry_scenarios(),
    }


# (scenario, anchor, bar): the scenario's median time is at most `bar` times the anchor's.
TARGETS: list[tuple[str, str, float]] = [
    ("nothing registered", "send-watching middleware", 1.08),
    ("directive lookup, no match (20 locations, 5 hosts)", "nothing registered", 1.02),
    ("1 async cleanup", "BackgroundTask, 1 async", 1.20),
    ("10 async cleanups", "BackgroundTasks, 10 async", 1.10),
    ("1 sync cleanup", "BackgroundTask, 1 sync", 1.05),
    ("10 sync cleanups", "1 sync cleanup", 1.20),
]

# (floor, anchor, the bar of the same case): what the contract's own mechanics cost beside the
# anchor, before any of this package's code; a floor above the bar says no code can meet it.
FLOORS: list[tuple[str, str, float]] = [
    ("floor, own task: 1 async", "BackgroundTask, 1 async", 1.20),
    ("floor, own task and cancel scope: 1 async", "BackgroundTask, 1 async", 1.20),
    ("floor, own task: 10 async", "BackgroundTasks, 10 async", 1.10),
    ("floor, own task and cancel scope: 10 async", "BackgroundTasks, 10 async", 1.10),
]
