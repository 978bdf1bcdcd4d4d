"""``CleanupMiddleware``: the options, the per-request flow (registry, responder, phase), the
lifespan drain and ``drain()``."""

import os
from collections.abc import Mapping
from typing import Any

import anyio

from ._batch import AsyncPlaces
from ._lifespan import hook_twisted_shutdown, serve_lifespan
from ._options import validate_flag, validate_limit, validate_timeout
from ._phases import Phases
from ._responder import Responder
from ._threads import SyncRunContext
from ._types import AnyASGIApp, Receive, Scope, Send
from .outcome import CompleteHook, ErrorHook
from .registry import CleanupRegistry, add_directives
from .settings import load_settings, validate_hook

_UNSET: Any = object()
_DEFAULTS = {"timeout": 5.0, "shutdown_timeout": 30.0, "thread_limit": 8, "telemetry": False}


class CleanupMiddleware:
    """Runs a request's cleanups after its response: ``scope["cleanup"]`` registrations first
    (last registered first), then the directive cleanups of the settings.

    :param app: the ASGI app to wrap.
    :param settings: a TOML settings file (path; a ``pyproject.toml`` is read from its
        ``[tool.asgi-cleanup]`` table) or a mapping of the same structure, naming directive
        cleanups and options. It is read, imported and checked now: any problem raises
        :class:`~asgi_cleanup.SettingsError`.
    :param timeout: seconds each cleanup may take before it is abandoned; ``None``: no limit.
    :param shutdown_timeout: seconds ``lifespan.shutdown`` waits for cleanups still running.
    :param thread_limit: sync cleanups running in worker threads at once, for this middleware.
    :param async_limit: async cleanups running at once, for this middleware; ``None``: no cap.
        One over the cap waits for a place, within its timeout; one that never got a place is
        reported as timed out and runs once a place is free.
    :param on_error: called as ``on_error(cleanup, exception, outcome)`` for each cleanup that
        failed or timed out (then with a ``TimeoutError``), on the event loop; it may be async,
        or a handler reference (``"pkg.mod:func"``). A hook that raises is logged and ignored.
    :param on_complete: called as ``on_complete(reports, outcome)`` once a request's cleanups
        have all run, with a :class:`~asgi_cleanup.CleanupReport` (duration, exception,
        timed out) per cleanup in run order; sync or async, like ``on_error``.
    :param sync_run_context: keyword only: makes a context manager entered in the worker thread
        around each run of a request's consecutive sync cleanups (Django's connection rules:
        ``asgi_cleanup.django.closing_old_connections``). Its failures are logged, never fatal.
    :param queue: ``"celery"`` (``celery_app=``) or ``"arq"`` (``arq_redis=`` or ``arq_redis_url``):
        the job queue of ``register_job()`` and ``job:`` directives (docs/queues.md).
    :param durable_grace: seconds after which a durable job runs anyway if never released.
    :param telemetry: OpenTelemetry spans and metrics of the cleanups (docs/observability.md),
        through ``tracer_provider`` and ``meter_provider`` (keyword only; default: the global
        ones). Needs ``opentelemetry-api``: ``pip install 'asgi-cleanup[otel]'``.

    An option passed as a keyword, even ``None``, wins over the settings; the settings win
    over the defaults. Bad values raise ``TypeError`` or ``ValueError`` here.
    """

    def __init__(
        self,
        app: AnyASGIApp,
        *,
        settings: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        timeout: float | None = _UNSET,
        shutdown_timeout: float | None = _UNSET,
        thread_limit: int = _UNSET,
        async_limit: int | None = _UNSET,
        on_error: ErrorHook | str | None = _UNSET,
        on_complete: CompleteHook | str | None = _UNSET,
        sync_run_context: SyncRunContext | None = None,
        queue: str | None = _UNSET,
        arq_redis_url: str | None = _UNSET,
        durable_grace: float = _UNSET,
        celery_app: Any = None,
        arq_redis: Any = None,
        telemetry: bool = _UNSET,
        tracer_provider: Any = None,
        meter_provider: Any = None,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
        self.app: AnyASGIApp = app
        loaded = None if settings is None else load_settings(settings)
        options: Mapping[str, Any] = {} if loaded is None else loaded.options
        self._directives_for = None if loaded is None else loaded.directives_for

        def option(name: str, value: Any) -> Any:
            return value if value is not _UNSET else options.get(name, _DEFAULTS.get(name))

        self.timeout = validate_timeout("timeout", option("timeout", timeout))
        self.shutdown_timeout = validate_timeout(
            "shutdown_timeout", option("shutdown_timeout", shutdown_timeout)
        )
        self.thread_limit: int = validate_limit(
            "thread_limit", option("thread_limit", thread_limit)
        )
        self.async_limit: int | None = validate_limit(
            "async_limit", option("async_limit", async_limit)
        )
        self.on_error: ErrorHook | None = validate_hook("on_error", option("on_error", on_error))
        complete = validate_hook("on_complete", option("on_complete", on_complete))
        if sync_run_context is not None and not callable(sync_run_context):
            raise TypeError(f"sync_run_context must be callable or None, got {sync_run_context!r}")
        self._phases = Phases(
            self.timeout, self.shutdown_timeout, self.thread_limit, self.on_error, complete
        )
        self.sync_run_context = self._phases.sync_run_context = sync_run_context
        if self.async_limit is not None:
            self._phases.places = AsyncPlaces(self.async_limit)
        self.telemetry: bool = validate_flag("telemetry", option("telemetry", telemetry))
        self._responder = Responder
        if self.telemetry:
            from .otel.tracing import Tracing

            tracing = Tracing(self.timeout, tracer_provider, meter_provider)
            self._phases.telemetry, self._responder = tracing, tracing.responder(Responder)
        elif tracer_provider is not None or meter_provider is not None:
            raise ValueError("tracer_provider and meter_provider need telemetry=True")
        self.queue: Any = None  # the job queue, made once: its registries carry it
        self._registry = CleanupRegistry
        grace = option("durable_grace", durable_grace)
        jobs = option("queue", queue), option("arq_redis_url", arq_redis_url), celery_app, arq_redis
        if loaded is not None or any(value is not None for value in (*jobs, grace)):
            from .queues import setup

            self.queue, self._registry = setup(*jobs, grace, loaded)
        # Until the first request: whether to look for a server shutdown without lifespan.
        self._find_shutdown = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                self._find_shutdown = False
                await serve_lifespan(self.app, scope, receive, send, self._shutdown)
            else:
                await self.app(scope, receive, send)
            return
        outer = scope.get("cleanup")
        if isinstance(outer, CleanupRegistry):
            # Nested: join the outer middleware's registry and phase.
            if self._directives_for is not None:
                add_directives(outer, self._directives_for(scope))
            await self.app(scope, receive, send)
            return
        if self._find_shutdown:
            self._find_shutdown = False
            hook_twisted_shutdown(self._shutdown)

        registry = scope["cleanup"] = self._registry()
        # Matched before the app runs: routers rewrite the scope on the way in (Starlette's
        # Mount moves the prefix to root_path), and these are the outermost settings.
        directives = () if self._directives_for is None else self._directives_for(scope)
        responder = self._responder(send, receive)
        try:
            await self.app(scope, responder.receive, responder.send)
        except BaseException as exc:
            # No local may hold the exception: its traceback holds this frame, a cycle.
            phase = responder.phase(self._phases, scope, registry, directives, exc)
            if phase is None:
                raise
            if _is_cancellation(exc):
                await phase.run()  # to its end; then the cancellation goes on
            else:
                # The server sees the exception at once; the cleanups follow.
                self._phases.spawn(phase)
            raise
        phase = responder.phase(self._phases, scope, registry, directives, None)
        if phase is None:
            return
        if responder.complete() and not (scope_type == "websocket" and responder.disconnected):
            await phase.run()
        else:
            # Returning at once lets the server finish or abort the response as it would
            # without us. So too when the client closed a websocket: granian answers the
            # close only when the app call returns.
            self._phases.spawn(phase)

    @property
    def on_complete(self) -> CompleteHook | None:
        """The ``on_complete`` hook. Assignable, checked as at construction: phases that begin
        afterwards call the new one (the pytest plugin watches an app built before a test so)."""
        return self._phases.on_complete

    @on_complete.setter
    def on_complete(self, hook: CompleteHook | str | None) -> None:
        self._phases.on_complete = validate_hook("on_complete", hook)

    async def drain(self) -> None:
        """Wait until every cleanup phase running or pending has finished, and every cleanup a
        phase left behind has ended: an async one that did not stop when cancelled at its
        timeout, a sync one in its worker thread (abandoned at its timeout, or given up waiting
        for a thread and still to run).

        For tests and embedding code; bound it with ``anyio.fail_after`` if needed.
        ``lifespan.shutdown`` does the same, bounded by ``shutdown_timeout``.
        """
        await self._phases.drain()

    async def _shutdown(self) -> None:
        await self._phases.shutdown()
        if self.queue is not None:  # its enqueues have ended, or are past the shutdown bound
            await self.queue.aclose()


def _is_cancellation(exc: BaseException) -> bool:
    """A cancellation, also when a task group (trio's nurseries are strict) wrapped it."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)
