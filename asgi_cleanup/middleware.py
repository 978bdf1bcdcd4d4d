import asyncio
import contextlib
import contextvars
import logging
import os
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any

import anyio

from ._options import validate_thread_limit, validate_timeout
from ._threads import WorkerPool
from ._types import ASGIApp, Message, Receive, Scope, Send
from .outcome import Outcome
from .phase import CleanupRunner, ErrorHook
from .registry import CleanupRegistry, Entry
from .settings import load_settings, validate_on_error

logger = logging.getLogger("asgi_cleanup")

Directive = Callable[[Outcome], Any]

_UNSET: Any = object()
_DEFAULT_TIMEOUT = 5.0
_DEFAULT_SHUTDOWN_TIMEOUT = 30.0
_DEFAULT_THREAD_LIMIT = 8


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

    An option passed as a keyword, even ``None``, wins over the settings; the settings win
    over the defaults. Bad values raise ``TypeError`` or ``ValueError`` here.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        timeout: float | None = _UNSET,
        shutdown_timeout: float | None = _UNSET,
        thread_limit: int = _UNSET,
        on_error: ErrorHook | str | None = _UNSET,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application (a callable), got {app!r}")
        self.app = app
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
        self.on_error: ErrorHook | None = validate_on_error(option("on_error", on_error, None))
        self._pool = WorkerPool(self.thread_limit)
        self._active = 0
        self._idle_events: list[anyio.Event] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return

        outer = scope.get("cleanup")
        if isinstance(outer, CleanupRegistry):
            # Nested: join the outer middleware's registry and phase.
            if self._directives_for is not None:
                directives = self._directives_for(scope)
                if directives:
                    outer._add_directives(directives)
            await self.app(scope, receive, send)
            return

        registry = CleanupRegistry()
        scope["cleanup"] = registry
        status: int | None = None
        complete = False
        disconnected = False
        trailers = False

        async def watched_send(message: Message) -> None:
            nonlocal status, complete, disconnected, trailers
            kind = message["type"]
            if kind == "http.response.start" or kind == "websocket.http.response.start":
                status = message["status"]
                trailers = message.get("trailers", False)
            try:
                await send(message)
            except Exception:
                if not complete:
                    disconnected = True
                raise
            if kind == "http.response.body" or kind == "websocket.http.response.body":
                if not trailers and not message.get("more_body", False):
                    complete = True
            elif (
                kind == "websocket.close"
                or kind == "http.response.pathsend"
                or (kind == "http.response.trailers" and not message.get("more_trailers", False))
                or (kind == "http.response.zerocopysend" and not message.get("more_body", False))
            ):
                complete = True

        async def watched_receive() -> Message:
            nonlocal complete, disconnected
            message = await receive()
            kind = message["type"]
            if kind == "http.disconnect":
                if not complete:
                    disconnected = True
            elif kind == "websocket.disconnect" and not complete:
                disconnected = complete = True
            return message

        started = perf_counter()
        try:
            await self.app(scope, watched_receive, watched_send)
        except BaseException as exc:
            duration = perf_counter() - started
            entries = registry._freeze()
            directives = self._directives(scope, registry)
            if not entries and not directives:
                raise
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                outcome = Outcome(scope, status, None, complete, disconnected, duration)
                # The phase runs to its end, then the cancellation is delivered.
                await self._run_inline(registry, entries, directives, outcome)
            else:
                error = exc if isinstance(exc, Exception) else None
                outcome = Outcome(scope, status, error, complete, disconnected, duration)
                self._spawn(registry, entries, directives, outcome)
            raise

        entries = registry._freeze()
        directives = self._directives(scope, registry)
        if not entries and not directives:
            return
        outcome = Outcome(scope, status, None, complete, disconnected, perf_counter() - started)
        if complete:
            await self._run_inline(registry, entries, directives, outcome)
        else:
            # Returning at once lets the server finish or abort the response as it would
            # without us; the cleanups must not hold that up.
            self._spawn(registry, entries, directives, outcome)

    def _directives(self, scope: Scope, registry: CleanupRegistry) -> tuple[Directive, ...]:
        own = () if self._directives_for is None else self._directives_for(scope)
        nested = registry._nested_directives
        if nested is None:
            return own
        seen = set(map(id, own))
        extra = []
        for directive in nested:
            if id(directive) not in seen:
                seen.add(id(directive))
                extra.append(directive)
        return (*own, *extra)

    async def _phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        try:
            registry._start(outcome)
            runner = CleanupRunner(outcome, self.timeout, self._pool, self.on_error)
            if entries:
                await runner.run(entries)
            if directives:
                await runner.run([(d, (outcome,), {}) for d in reversed(directives)])
        finally:
            self._active -= 1
            if not self._active and self._idle_events:
                for event in self._idle_events:
                    event.set()
                self._idle_events.clear()

    async def _shielded_phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        # Trio cancels system tasks when the run ends; the phase finishes first.
        with anyio.CancelScope(shield=True):
            await self._phase(registry, entries, directives, outcome)

    async def _run_inline(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        self._active += 1
        loop = asyncio._get_running_loop()
        if loop is None:
            # Trio: cancellation only ever comes through cancel scopes, so a shield is enough.
            with anyio.CancelScope(shield=True):
                await self._phase(registry, entries, directives, outcome)
            return
        # asyncio: a server may cancel this task natively (Task.cancel()), which no anyio
        # shield stops. The phase runs in a task of its own (which no cancel scope of ours
        # reaches) that we wait for, swallowing cancellations of ours until it is done; then
        # the first one is delivered.
        task = loop.create_task(self._phase_capturing_exit(registry, entries, directives, outcome))
        cancelled: asyncio.CancelledError | None = None
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
            # anyio re-cancels a task in a cancelled scope on every loop turn: shield it.
            with anyio.CancelScope(shield=True):
                while not task.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(task)
        exit_exception = task.result()
        if exit_exception is not None:
            raise exit_exception
        if cancelled is not None:
            raise cancelled

    async def _phase_capturing_exit(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> BaseException | None:
        # asyncio lets a KeyboardInterrupt or SystemExit out of a task escape the event
        # loop; hand it to the request task instead, where it surfaces without us.
        try:
            await self._phase(registry, entries, directives, outcome)
        except (KeyboardInterrupt, SystemExit) as exc:
            return exc
        return None

    def _spawn(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        self._active += 1
        loop = asyncio._get_running_loop()
        if loop is not None:
            task = loop.create_task(self._phase(registry, entries, directives, outcome))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        import trio

        trio.lowlevel.spawn_system_task(
            self._shielded_phase,
            registry,
            entries,
            directives,
            outcome,
            context=contextvars.copy_context(),
        )

    async def drain(self) -> None:
        """Wait until every cleanup phase running or pending has finished.

        For tests and embedding code; bound it with ``anyio.fail_after`` or
        ``anyio.move_on_after`` if needed. ``lifespan.shutdown`` does the same, bounded by
        ``shutdown_timeout``.
        """
        while self._active:
            event = anyio.Event()
            self._idle_events.append(event)
            await event.wait()

    async def _drain_for_shutdown(self) -> None:
        with anyio.move_on_after(self.shutdown_timeout):
            await self.drain()
        if self._active:
            logger.warning(
                "Shutting down with %d cleanup phase(s) still running after %gs",
                self._active,
                self.shutdown_timeout,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        received: set[str] = set()
        answered = False

        async def lifespan_receive() -> Message:
            message = await receive()
            received.add(message["type"])
            if message["type"] == "lifespan.shutdown":
                await self._drain_for_shutdown()
            return message

        async def lifespan_send(message: Message) -> None:
            nonlocal answered
            answered = True
            await send(message)

        try:
            await self.app(scope, lifespan_receive, lifespan_send)
        except Exception as exc:
            if answered:
                raise
            logger.debug("The app rejected the lifespan protocol (%r); answering it", exc)
        else:
            if answered:
                return
        # The app does not speak lifespan (Django raises on it): answer for it, so the
        # shutdown drain still happens.
        if "lifespan.startup" not in received:
            await receive()
        await send({"type": "lifespan.startup.complete"})
        if "lifespan.shutdown" not in received:
            await receive()
            await self._drain_for_shutdown()
        await send({"type": "lifespan.shutdown.complete"})
