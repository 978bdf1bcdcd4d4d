"""OpenTelemetry spans and metrics of cleanups, through ``opentelemetry-api`` alone: one span
per cleanup, current while it runs (set in the cleanup's own context), and five instruments.
Imported only when a middleware has ``telemetry=True``; see docs/observability.md."""

import functools
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode
except ImportError as exc:  # pragma: no cover - the test runs it in a venv without the package
    raise ImportError(
        "telemetry=True needs the OpenTelemetry API: pip install 'asgi-cleanup[otel]'"
    ) from exc

from .. import __version__
from .._describe import describe_callable
from .._log import TimedOut
from ..phase import is_directive
from ..registry import Entry

NAME = "asgi_cleanup.cleanup.name"
SOURCE = "asgi_cleanup.cleanup.source"
TIMED_OUT = "asgi_cleanup.cleanup.timed_out"
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]

logger = logging.getLogger("asgi_cleanup")
F = TypeVar("F", bound=Callable[..., Any])


def _guarded(method: F) -> F:
    """Telemetry never fails a cleanup or a phase: what the SDK, a span processor or a metric
    reader raises in ``method`` is logged (see ``Tracing.failed``) and the phase goes on."""

    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception:
            (self if isinstance(self, Tracing) else self._tracing).failed(method.__name__)
            return None

    return guarded  # type: ignore[return-value]


class Tracing:
    """A middleware's tracer and instruments, made once; ``phase()`` watches one phase."""

    def __init__(self, timeout: float | None, tracer_provider: Any, meter_provider: Any) -> None:
        # Without a provider, the global ones: proxies until an SDK sets them, so a middleware
        # built before the SDK is configured still reports.
        self.timeout = timeout
        self.tracer = trace.get_tracer("asgi_cleanup", __version__, tracer_provider)
        meter = metrics.get_meter("asgi_cleanup", __version__, meter_provider=meter_provider)
        histogram = partial(
            meter.create_histogram, unit="s", explicit_bucket_boundaries_advisory=BUCKETS
        )
        self.duration = histogram(
            "asgi_cleanup.cleanup.duration",
            description="How long each cleanup ran, until its deadline for one that timed out.",
        )
        self.delay = histogram(
            "asgi_cleanup.phase.delay",
            description="From the end of the app call to the start of its phase's first cleanup.",
        )
        self.active = meter.create_up_down_counter(
            "asgi_cleanup.phase.active", "{phase}", "Cleanup phases running or pending."
        )
        self.left_behind = meter.create_counter(
            "asgi_cleanup.cleanup.left_behind",
            "{cleanup}",
            "Cleanups left running past their timeout and its grace.",
        )
        self.unfinished = meter.create_counter(
            "asgi_cleanup.shutdown.unfinished",
            "{phase}",
            "Cleanup phases still running or pending when shutdown_timeout ended.",
        )
        self._warned = -60.0

    def failed(self, where: str) -> None:
        """Log the exception being handled, raised by telemetry in ``where``: at ERROR, with its
        traceback, at most once a minute (a broken exporter would fail every request)."""
        now = time.monotonic()
        if now - self._warned >= 60:
            self._warned = now
            message = "Telemetry failed in %s; cleanups go on without it (at most one a minute)"
            logger.error(message, where, exc_info=True)

    def phase(self) -> "Watch":
        return Watch(self)

    @_guarded
    def shutdown_unfinished(self, phases: int) -> None:
        self.unfinished.add(phases)

    def responder(self, base: Any) -> Any:
        """``base`` (the middleware's per-request responder), noting the OpenTelemetry context
        current when the app is called and when it sends its first message: the phase's
        directive cleanups are made in the later of the two, so their spans are its children."""

        class Responder(base):  # type: ignore[misc]
            __slots__ = ("otel_context",)

            def __init__(self, send: Any, receive: Any) -> None:
                super().__init__(send, receive)
                self.otel_context = otel_context.get_current()

            async def send(self, message: Any) -> None:
                if self.first is None and message["type"] != "http.response.debug":
                    self.otel_context = otel_context.get_current()
                await super().send(message)

            def phase(self, *args: Any) -> Any:
                token = otel_context.attach(self.otel_context)
                try:
                    return super().phase(*args)
                finally:
                    otel_context.detach(token)

        return Responder


class _Run:
    """One cleanup's span, from the time its timeout counts from."""

    __slots__ = ("began", "context", "ended", "name", "source", "span")

    def __init__(self, entry: Entry, began: float) -> None:
        self.context = entry[3]  # kept, so that its id names no other context meanwhile
        self.began = began
        self.name = describe_callable(entry[0])
        self.source = "directive" if is_directive(entry) else "registered"
        self.span: Any = None
        self.ended = False


class Watch:
    """One phase's cleanups, each known by its context (every cleanup has one of its own; an
    awaitable a sync cleanup returned is awaited in its context, and goes on with its span)."""

    def __init__(self, tracing: Tracing) -> None:
        self._tracing = tracing
        self._app_ended = time.monotonic()
        self._first = True
        self._runs: dict[int, _Run] = {}  # setdefault: one thread makes each
        self._lock = threading.Lock()
        self._count(1)

    @_guarded
    def _count(self, phases: int) -> None:
        self._tracing.active.add(phases)

    @_guarded
    def start(self, entry: Entry, began: float) -> None:
        run = _Run(entry, began)
        if self._runs.setdefault(id(entry[3]), run) is not run:
            return  # going on with an awaitable, or given up before it started
        if self._first:
            self._first = False
            self._tracing.delay.record(time.monotonic() - self._app_ended)
        # In its own context, which nothing else has entered: current for all it does.
        entry[3].run(self._begin, run, True)

    def _begin(self, run: _Run, make_current: bool) -> None:
        parent = otel_context.get_current()
        run.span = self._tracing.tracer.start_span(
            run.name,
            parent,
            SpanKind.INTERNAL,
            {NAME: run.name, SOURCE: run.source},
            start_time=_epoch_ns(run.began),
            record_exception=False,
            set_status_on_exception=False,
        )
        if make_current:
            otel_context.attach(trace.set_span_in_context(run.span, parent))

    @_guarded
    def end(self, entry: Entry, result: Any, seconds: float | None = None) -> None:
        run = self._runs.get(id(entry[3]))
        if run is None or not self._close(run):
            return
        if type(result) is TimedOut:
            self._end(run, result, None)
        else:
            ended = time.monotonic() if seconds is None else run.began + seconds
            self._end(run, result, ended)

    @_guarded
    def given_up(self, entry: Entry, began: float) -> None:
        run = _Run(entry, began)
        if self._runs.setdefault(id(entry[3]), run) is run:
            # It never started (no place, no thread): its span covers its wait. Its context
            # is read in a copy: a worker thread may be about to enter it.
            entry[3].copy().run(self._begin, run, False)
        else:
            run = self._runs[id(entry[3])]
        if self._close(run):
            self._tracing.left_behind.add(1, {NAME: run.name, SOURCE: run.source})
            self._end(run, TimedOut(None), None)

    def _close(self, run: _Run) -> bool:
        """Mark ``run`` ended; whether it was not already (a worker thread may race us)."""
        with self._lock:
            if run.ended:
                return False
            run.ended = True
            return True

    def _end(self, run: _Run, result: Any, ended: float | None) -> None:
        """End ``run``'s span at ``ended`` (``None``: its deadline, for a timeout)."""
        span, attributes = run.span, {NAME: run.name, SOURCE: run.source}
        timed_out = type(result) is TimedOut
        if timed_out:
            timeout = self._tracing.timeout
            ended = run.began + (0.0 if timeout is None else timeout)
            attributes["error.type"] = "timeout"
        elif result is not None:
            attributes["error.type"] = type(result).__qualname__
        assert ended is not None
        self._tracing.duration.record(max(ended - run.began, 0.0), attributes)
        if span is None:  # starting it failed, and was logged
            return
        if timed_out:
            span.set_status(Status(StatusCode.ERROR, "timed out"))
        elif result is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(result).__qualname__}: {result}"))
            span.record_exception(result)
        span.set_attribute(TIMED_OUT, timed_out)
        if "error.type" in attributes:
            span.set_attribute("error.type", attributes["error.type"])
        span.end(_epoch_ns(ended))

    def current(self, entry: Entry, call: Any) -> None:
        run = self._runs.get(id(entry[3]))
        if run is None or run.span is None:
            call()
            return
        token = otel_context.attach(trace.set_span_in_context(run.span))
        try:
            call()
        finally:
            otel_context.detach(token)

    def finished(self) -> None:
        self._count(-1)


def _epoch_ns(monotonic: float) -> int:
    """``time.time_ns()`` at the moment ``time.monotonic()`` read ``monotonic``."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)
