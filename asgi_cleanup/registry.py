import logging
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from contextvars import Context, copy_context
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from ._describe import describe_callable
from ._types import Message, Receive, Scope, Send
from .outcome import Outcome

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# (func, args, kwargs, context): as register() received them, and a copy of the context
# that was current then, which the cleanup runs in.
Entry = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Context]

logger = logging.getLogger("asgi_cleanup")

# Guards register/unregister against the freeze; held only for a list operation, so one lock
# shared by every registry costs less than a lock allocated per request.
_lock = threading.Lock()
_acquire = _lock.acquire
_release = _lock.release


async def _send_after_return(message: Message) -> None:
    raise RuntimeError(f"ASGI send() called after the app call returned: {message['type']!r}")


async def _receive_after_return() -> Message:
    raise RuntimeError("ASGI receive() called after the app call returned")


async def _send_without_request(message: Message) -> None:
    raise RuntimeError("this CleanupRegistry was not made by CleanupMiddleware for a request")


async def _receive_without_request() -> Message:
    raise RuntimeError("this CleanupRegistry was not made by CleanupMiddleware for a request")


_START_TYPES = frozenset({"http.response.start", "websocket.http.response.start"})


class CleanupRegistry:
    """The cleanups of one request, found at ``scope["cleanup"]``.

    ``register`` and ``unregister`` may be called from the event loop or from worker threads
    (Django sync views, ``run_in_threadpool``). Once the cleanup phase starts the registry is
    frozen: later registrations are ignored with a WARNING on the ``asgi_cleanup`` logger.
    """

    # Class-level defaults instead of an __init__: a registry is made for every request, and
    # most requests never touch it.
    _entries: list[Entry] | None = None
    _outcome: Outcome | None = None
    # Set when cleanups start: the scope, the app's exception and the call's duration. The
    # Outcome, which adds what the messages told, is built on first use.
    _outcome_fields: tuple[Scope, Exception | None, float] | None = None
    _ended_with: BaseException | None = None
    # Directive cleanups added by CleanupMiddleware instances nested inside the outer one.
    _nested_directives: list[Callable[[Outcome], Any]] | None = None
    # How the response went, which the middleware learns by passing the app's messages on
    # through _watched_send and _watched_receive: the registry does that job too, as one
    # object per request costs less than a registry plus closures over the same state.
    # The server's send and receive while the app call runs; then _send_after_return and
    # _receive_after_return, as the server's objects hold the scope, which holds this
    # registry: a reference cycle that only the garbage collector would free (so every
    # request's objects would wait for it). An app that goes on using them after its call
    # returned gets a clear error. That change is also what freezes the registry: one store
    # and one cheap read, where a flag of its own would cost more on every request.
    _send: Send = staticmethod(_send_without_request)
    _receive: Receive = staticmethod(_receive_without_request)
    # The first and the last message handed to the server's send. The first is the response
    # start (http requires it, after the debug information of the http.response.debug
    # extension if any; websocket: a denial's start, else the accept or the close).
    # The status and whether the response is complete are worked out from them only when
    # asked: on every message that would cost more than storing them.
    _first_message: Message | None = None
    _last_message: Message | None = None
    # Sync cleanups the phase left running or queued in worker threads, which may still read
    # the outcome; and whether the phase is over. The last of them lets go (see _end_phase).
    _left_behind = 0
    _phase_over = False
    # The client closed the websocket (its "websocket.disconnect" ends the exchange).
    _closed_by_client = False
    _disconnected = False

    def register(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Callable[P, R]:
        """Add a cleanup, called as ``func(*args, **kwargs)`` after the response.

        Returns ``func``, so ``@registry.register`` works as a decorator. Async callables are
        awaited on the event loop; sync ones run in a worker thread. Cleanups run in reverse
        order of registration, each in a copy of the context (``contextvars``) that is
        current now, so request ids and tracing spans set by the app are visible in it.

        :raises TypeError: if ``func`` is not callable.
        """
        if not callable(func):
            raise TypeError(f"cleanup must be callable, got {func!r} ({type(func).__name__})")
        entry = (func, args, kwargs, copy_context())
        _acquire()  # a with statement costs five times as much
        try:
            if self._send is not _send_after_return:  # not frozen
                entries = self._entries
                if entries is None:
                    self._entries = [entry]
                else:
                    entries.append(entry)
                return func
        finally:
            _release()
        logger.warning(
            "Cleanup %s registered after cleanups started; it will not run",
            describe_callable(func),
        )
        return func

    def enter_context(self, cm: AbstractContextManager[T]) -> T:
        """Enter the context manager ``cm`` now and return its value; exit it in the cleanup
        phase, in its place among the other dynamic cleanups (last in, first out).

        Its ``__exit__`` receives the exception the app call ended with (or three ``None``),
        as ``contextlib.ExitStack`` would pass it, so a transaction can commit after a
        success and roll back after an error. Like any sync cleanup, ``__exit__`` runs in a
        worker thread, within the timeout. Suppressing the exception changes nothing for the
        server.

        :raises TypeError: if ``cm`` is not a context manager (before entering anything).
        :raises RuntimeError: if cleanups have started (``frozen``), before entering ``cm``:
            its exit could no longer run.
        """
        cls = type(cm)
        try:
            enter = cls.__enter__
            exit_ = cls.__exit__
        except AttributeError:
            raise TypeError(f"{cls.__qualname__!r} object is not a context manager") from None
        self._check_open("enter_context", cm)
        value = enter(cm)
        self.register(_ContextExit(self, cm, exit_))
        return value

    async def enter_async_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter the async context manager ``cm`` now and return its value; exit it in the
        cleanup phase like :meth:`enter_context`, with ``__aexit__`` awaited on the event loop.

        :raises TypeError: if ``cm`` is not an async context manager.
        :raises RuntimeError: if cleanups have started, before entering ``cm``.
        """
        cls = type(cm)
        try:
            enter = cls.__aenter__
            exit_ = cls.__aexit__
        except AttributeError:
            raise TypeError(
                f"{cls.__qualname__!r} object is not an async context manager"
            ) from None
        self._check_open("enter_async_context", cm)
        value = await enter(cm)
        self.register(_AsyncContextExit(self, cm, exit_))
        return value

    def _check_open(self, method: str, cm: object) -> None:
        if self._send is _send_after_return:
            raise RuntimeError(
                f"{method}() called after cleanups started: {type(cm).__qualname__!r} object "
                "not entered, as its exit could no longer run"
            )

    def unregister(self, func: Callable[..., Any]) -> None:
        """Remove every pending registration of ``func`` (compared with ``==``).

        No error if it is not registered; no effect once the registry is frozen.
        """
        with _lock:
            if self._send is not _send_after_return and self._entries:
                self._entries[:] = [entry for entry in self._entries if entry[0] != func]

    @property
    def frozen(self) -> bool:
        """``False`` until cleanups start, ``True`` from then on."""
        return self._send is _send_after_return

    @property
    def outcome(self) -> Outcome | None:
        """How the request ended, for the cleanups: ``None`` until they start, and again
        once they have all finished."""
        outcome = self._outcome
        if outcome is None:
            fields = self._outcome_fields
            if fields is not None:
                scope, exception, duration = fields
                status, complete, disconnected = self._response()
                outcome = self._outcome = Outcome(
                    scope, status, exception, complete, disconnected, duration
                )
        return outcome

    def __len__(self) -> int:
        """The number of dynamic cleanups registered and not yet run."""
        entries = self._entries
        return 0 if entries is None else len(entries)

    def __repr__(self) -> str:
        state = "frozen" if self.frozen else "open"
        return f"<CleanupRegistry {state}, {len(self)} pending>"

    def _freeze(self) -> list[Entry] | None:
        """Close the registry and hand over its entries; the caller pops them as they run.

        Lets go of the server's send and receive too (see ``_send``).
        """
        self._send = _send_after_return
        self._receive = _receive_after_return
        if _lock.locked():
            # A register() may be past its check of frozen: let it finish first. One that
            # takes the lock from now on sees the registry frozen.
            with _lock:
                return self._entries
        return self._entries

    def _start(
        self,
        scope: Scope,
        exception: Exception | None,
        duration: float,
        ended_with: BaseException | None = None,
    ) -> None:
        """Cleanups start: ``outcome`` becomes the ``Outcome`` of the request's scope, the
        app's exception and the call's duration, with what the messages told (once the app
        call is over they no longer change). Context exits receive ``ended_with``, the
        exception (a cancellation too) that ended the app call."""
        self._outcome_fields = (scope, exception, duration)
        self._ended_with = ended_with

    def _finish(self) -> None:
        """The phase is over: let go of the outcome, which holds the scope (which holds this
        registry), and of the exception the app call ended with, whose traceback holds the
        request's frames. Either makes a reference cycle that only the garbage collector
        frees, and some servers (granian) make it one the collector cannot see. ``outcome``
        reads ``None`` again from now on.
        """
        self._ended_with = None
        self._outcome_fields = None
        self._outcome = None

    def _end_phase(self) -> None:
        """The phase is over: ``_finish()`` now, or once the last sync cleanup it left in a
        worker thread has ended (it may still read the outcome or the exception)."""
        if self._left_behind:  # only the phase adds to it: 0 stays 0
            with _lock:
                self._phase_over = True
                if self._left_behind:
                    return
        self._finish()

    def _leave_behind(self) -> Callable[[], None]:
        """The phase leaves a sync cleanup in a worker thread: keep the outcome for it; its
        thread calls what this returns once it has ended."""
        with _lock:
            self._left_behind += 1
        return self._left_ended

    def _left_ended(self) -> None:
        with _lock:
            self._left_behind -= 1
            if self._left_behind or not self._phase_over:
                return
        self._finish()

    async def _watched_send(self, message: Message) -> None:
        if self._first_message is None and message["type"] != "http.response.debug":
            self._first_message = message
        # Handed over before the await: a disconnect the server reports while still in
        # send() (hypercorn ends the stream there) then comes after the last message, and a
        # cancellation that interrupts send() does not undo what went out.
        previous = self._last_message
        self._last_message = message
        send = self._send
        try:
            await send(message)
        except Exception:
            # The message did not go out: a client that went away, unless the response was
            # already complete (then the app sent past its end).
            self._last_message = previous
            if send is not _send_after_return and not self._is_complete():
                self._disconnected = True
            raise

    async def _watched_receive(self) -> Message:
        receive = self._receive
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            if not self._is_complete():
                self._disconnected = True
        elif kind == "websocket.disconnect" and not self._is_complete():
            self._disconnected = self._closed_by_client = True
        return message

    def _is_complete(self) -> bool:
        """Whether the response's last message went out (websocket: the close, either way)."""
        message = self._last_message
        if message is not None:
            kind = message["type"]
            if kind == "http.response.body":  # the common case first
                if message.get("more_body"):
                    return False
                start = self._first_message
                return start is None or not start.get("trailers")
            if (
                kind == "websocket.close"
                or kind == "http.response.pathsend"
                or (kind == "http.response.trailers" and not message.get("more_trailers"))
                or (kind == "websocket.http.response.body" and not message.get("more_body"))
                or (kind == "http.response.zerocopysend" and not message.get("more_body"))
            ):
                return True
        return self._closed_by_client

    def _response(self) -> tuple[int | None, bool, bool]:
        """The response as the app left it: status, complete, client disconnected."""
        start = self._first_message
        status = None
        if start is not None and start["type"] in _START_TYPES:
            status = start["status"]
        return status, self._is_complete(), self._disconnected

    def _add_directives(self, directives: tuple[Callable[[Outcome], Any], ...]) -> None:
        """Add a nested middleware's directive cleanups to this request's phase."""
        with _lock:
            if self._nested_directives is None:
                self._nested_directives = list(directives)
            else:
                self._nested_directives.extend(directives)
            if self._entries is None:
                # The middleware skips the phase when _entries is None and it has no
                # directives of its own; an empty list makes it look further.
                self._entries = []


class _ContextExit:
    """A sync context manager's exit, as a cleanup."""

    __slots__ = ("_cm", "_exit", "_registry")

    def __init__(self, registry: CleanupRegistry, cm: Any, exit_: Callable[..., Any]) -> None:
        self._registry = registry
        self._cm = cm
        self._exit = exit_

    @property
    def cleanup_name(self) -> str:
        cls = type(self._cm)
        return f"{cls.__module__}.{cls.__qualname__}.__exit__"

    def __call__(self) -> None:
        self._exit(self._cm, *_exc_info(self._registry._ended_with))


class _AsyncContextExit(_ContextExit):
    """An async context manager's exit, as a cleanup."""

    __slots__ = ()

    @property
    def cleanup_name(self) -> str:
        cls = type(self._cm)
        return f"{cls.__module__}.{cls.__qualname__}.__aexit__"

    async def __call__(self) -> None:  # type: ignore[override]
        await self._exit(self._cm, *_exc_info(self._registry._ended_with))


def _exc_info(
    exc: BaseException | None,
) -> tuple[type[BaseException] | None, BaseException | None, TracebackType | None]:
    if exc is None:
        return None, None, None
    return type(exc), exc, exc.__traceback__
