import asyncio
import logging
import math
import os
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

import anyio

from ._asyncio_phase import NOT_STARTED
from ._handlers import handler_key
from ._lifespan import serve_lifespan
from ._options import validate_thread_limit, validate_timeout
from ._scheduling import PhaseScheduler
from ._threads import WorkerPool
from ._types import AnyASGIApp, Receive, Scope, Send
from .phase import CleanupRunner, CompleteHook, Directive, ErrorHook
from .registry import CleanupRegistry, Entry, _lock, _receive_after_return, _send_after_return
from .settings import load_settings, validate_hook

logger = logging.getLogger("asgi_cleanup")


_UNSET: Any = object()
_DEFAULT_TIMEOUT = 5.0
_DEFAULT_SHUTDOWN_TIMEOUT = 30.0
_DEFAULT_THREAD_LIMIT = 8
# Bound once: on the per-request path, looking a method up costs more than calling it.
_lock_held = _lock.locked


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
    :param on_error: called as ``on_error(cleanup, exception, outcome)`` for each cleanup that
        failed or timed out (then with a ``TimeoutError``), on the event loop; it may be async,
        or a handler reference (``"pkg.mod:func"``). A hook that raises is logged and ignored.
    :param on_complete: called as ``on_complete(reports, outcome)`` once a request's cleanups
        have all run, with a :class:`~asgi_cleanup.CleanupReport` (duration, exception,
        timed out) per cleanup in run order; sync or async, like ``on_error``.

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
        on_error: ErrorHook | str | None = _UNSET,
        on_complete: CompleteHook | str | None = _UNSET,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
        self.app: AnyASGIApp = app
        options: Mapping[str, Any] = {}
        self._directives_for: Callable[[Scope], tuple[Directive, ...]] | None = None
        if settings is not None:
            loaded = load_settings(settings)
            options = loaded.options
            self._directives_for = loaded.directives_for

        def option(name: str, value: Any, default: Any) -> Any:
            # An explicit keyword, even None, wins over the settings; those over the default.
            return value if value is not _UNSET else options.get(name, default)

        self.timeout = validate_timeout("timeout", option("timeout", timeout, _DEFAULT_TIMEOUT))
        self.shutdown_timeout = validate_timeout(
            "shutdown_timeout",
            option("shutdown_timeout", shutdown_timeout, _DEFAULT_SHUTDOWN_TIMEOUT),
        )
        self.thread_limit = validate_thread_limit(
            option("thread_limit", thread_limit, _DEFAULT_THREAD_LIMIT)
        )
        self.on_error: ErrorHook | None = validate_hook(
            "on_error", option("on_error", on_error, None)
        )
        self.on_complete: CompleteHook | None = validate_hook(
            "on_complete", option("on_complete", on_complete, None)
        )
        self._pool = WorkerPool(self.thread_limit)
        self._scheduler = PhaseScheduler()
        self._runner = CleanupRunner(
            self.timeout, self._pool, self._scheduler, self.on_error, self.on_complete
        )
        # Whether a server has sent a lifespan scope: daphne never does.
        self._lifespan_seen = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                self._lifespan_seen = True
                await serve_lifespan(self.app, scope, receive, send, self._drain_for_shutdown)
            else:
                await self.app(scope, receive, send)
            return

        if "cleanup" in scope and isinstance(scope["cleanup"], CleanupRegistry):
            outer = scope["cleanup"]
            # Nested: join the outer middleware's registry and phase.
            if self._directives_for is not None:
                directives = self._directives_for(scope)
                if directives:
                    outer._add_directives(directives)
            await self.app(scope, receive, send)
            return

        registry = scope["cleanup"] = CleanupRegistry()
        registry._send = send
        registry._receive = receive
        # Read on every request: as instance values they cost less than as class defaults.
        registry._entries = None
        registry._first_message = registry._last_message = None
        # Matched before the app runs: routers rewrite the scope on the way in (Starlette's
        # Mount moves the prefix to root_path), and these are the outermost settings.
        directives_for = self._directives_for
        directives = () if directives_for is None else directives_for(scope)
        app = self.app
        started = perf_counter()
        try:
            await app(scope, registry._watched_receive, registry._watched_send)
        except BaseException as exc:
            duration = perf_counter() - started
            entries = registry._freeze()
            if registry._nested_directives is not None:
                directives = _merge_directives(directives, registry._nested_directives)
            if not entries and not directives:
                if _is_cancellation(exc) and self._cancelled_natively_without_lifespan():
                    await self._outlast_phases()
                raise
            # No local may keep the exception: with its traceback holding this frame, it
            # would make a reference cycle.
            registry._start(scope, exc if isinstance(exc, Exception) else None, duration, exc)
            if _is_cancellation(exc):
                # The phase runs to its end, then the cancellation is delivered.
                await self._run_inline(registry, entries, directives, cancelled=True)
            else:
                self._scheduler.spawn(self._runner.run_phase(registry, entries, directives))
            raise

        # registry._freeze(), inline on the path every request takes.
        registry._send = _send_after_return  # see CleanupRegistry._send: frozen now
        registry._receive = _receive_after_return
        entries = registry._entries
        if _lock_held():
            entries = registry._freeze()
        if entries is None and not directives:
            return
        if registry._nested_directives is not None:
            directives = _merge_directives(directives, registry._nested_directives)
        if not entries and not directives:
            return
        registry._outcome_fields = (scope, None, perf_counter() - started)  # _start(), inline
        if registry._is_complete() and not (scope_type == "websocket" and registry._disconnected):
            carried = self._runner.run_first_steps(entries) if entries else NOT_STARTED
            if carried is None:  # every dynamic cleanup has run
                if not directives:
                    # registry._finish(), inline: the app call ended without an exception.
                    registry._outcome_fields = registry._outcome = None
                    return
                carried = NOT_STARTED
            await self._run_inline(registry, entries, directives, carried)
        else:
            # Returning at once lets the server finish or abort the response as it would
            # without us; the cleanups must not hold that up. So too when the client closed a
            # websocket: granian answers the close only when the app call returns.
            self._scheduler.spawn(self._runner.run_phase(registry, entries, directives))

    async def _run_inline(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        carried: Any = NOT_STARTED,
        *,
        cancelled: bool = False,
    ) -> None:
        """Run the phase in the request's task; ``run_phase`` holds back a cancellation of
        the task until the phase has finished. ``cancelled``: the app call ended with the
        task's cancellation, which the caller delivers afterwards."""
        scheduler = self._scheduler
        number = scheduler.started()
        try:
            await self._runner.run_phase(registry, entries, directives, carried)
        except asyncio.CancelledError:
            scheduler.finished(number)
            if self._cancelled_natively_without_lifespan():
                await self._outlast_phases()
            raise
        except BaseException:
            scheduler.finished(number)
            raise
        scheduler.finished(number)
        if cancelled and self._cancelled_natively_without_lifespan():
            await self._outlast_phases()

    def _cancelled_natively_without_lifespan(self) -> bool:
        """Whether the request's task, just cancelled, was cancelled natively (not by an anyio
        scope) with no lifespan seen: daphne shutting down, which cancels every request's task
        and waits only until the first of them ends."""
        return not self._lifespan_seen and anyio.current_effective_deadline() != -math.inf

    async def _outlast_phases(self) -> None:
        """For daphne's shutdown: wait, within ``shutdown_timeout`` and whatever cancellation
        comes meanwhile, for the phases running now (and the async cleanups they leave
        behind), then for the sync cleanups phases left in worker threads."""
        bound = self.shutdown_timeout
        started = perf_counter()
        await self._scheduler.outlast(bound)
        if bound is not None:
            bound = max(0.0, bound - (perf_counter() - started))
        await self._pool.outlast_left_behind(bound)

    async def drain(self) -> None:
        """Wait until every cleanup phase running or pending has finished, every async
        cleanup a phase left behind (it did not stop when cancelled at its timeout) has
        ended, and every sync cleanup a phase left behind in a worker thread (abandoned at its
        timeout, or given up waiting for a thread and still to run) has returned.

        For tests and embedding code; bound it with ``anyio.fail_after`` or
        ``anyio.move_on_after`` if needed. ``lifespan.shutdown`` does the same, bounded by
        ``shutdown_timeout``.
        """
        scheduler = self._scheduler
        while True:
            await scheduler.drain()
            # A phase left its sync cleanups behind before it finished: they come after it.
            await self._pool.wait_left_behind()
            if not scheduler.active:
                return

    async def _drain_for_shutdown(self) -> None:
        """``drain()`` within ``shutdown_timeout``; then shutdown goes on, with a WARNING if
        anything was still running (a sync cleanup left in its daemon thread is cut off when
        the process exits; an async one is cancelled again when the server stops its loop)."""
        with anyio.move_on_after(self.shutdown_timeout):
            await self.drain()
        scheduler = self._scheduler
        abandoned = scheduler.left_behind
        phases = scheduler.active - abandoned
        threads = self._pool.left_behind
        if phases or abandoned or threads:
            logger.warning(
                "Shutting down with %d cleanup phase(s) still running, %d async cleanup(s) left"
                " running past their timeout and %d sync cleanup(s) still in worker threads"
                " after %gs",
                phases,
                abandoned,
                threads,
                self.shutdown_timeout,
            )


def _merge_directives(own: tuple[Directive, ...], nested: list[Directive]) -> tuple[Directive, ...]:
    """The outer middleware's directives, then those nested middlewares added, each once."""
    seen = set(map(handler_key, own))
    extra = []
    for directive in nested:
        key = handler_key(directive)
        if key not in seen:
            seen.add(key)
            extra.append(directive)
    return (*own, *extra)


def _is_cancellation(exc: BaseException) -> bool:
    """A cancellation, also when a task group (trio's nurseries are strict) wrapped it."""
    cancelled = anyio.get_cancelled_exc_class()
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(cancelled)[1] is None
    return isinstance(exc, cancelled)
