"""``CleanupRegistry`` at ``scope["cleanup"]``. The functions after the class are the phase's
and the framework helpers' side of it: only this module touches its state."""

import logging
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from contextvars import Context, copy_context
from functools import partial
from types import FunctionType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, overload

from ._describe import check_cleanup, describe_callable
from .outcome import Outcome

if TYPE_CHECKING:
    from .queues import Durable, Job  # Durable: the coroutine register_job(durable=True) returns

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

# (func, args, kwargs, context): as register() received them, and a copy of the context then.
Entry = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Context]
Directive = Callable[[Outcome], Any]

logger = logging.getLogger("asgi_cleanup")

# Guards every registry's state against the freeze and worker threads; held only for a list
# operation, never while user code runs. acquire() and release() on the per-request path: a
# with statement costs three times as much.
_lock = threading.Lock()
_acquire, _release = _lock.acquire, _lock.release


class CleanupRegistry:
    """The cleanups of one request, found at ``scope["cleanup"]``.

    ``register`` and ``unregister`` may be called from the event loop or from worker threads
    (Django sync views, ``run_in_threadpool``). Once the cleanup phase starts the registry is
    frozen: later registrations are ignored with a WARNING on the ``asgi_cleanup`` logger.
    """

    # Class-level defaults, not an __init__: most requests never touch their registry.
    _entries: list[Entry] | None = None
    _frozen = False
    _make_outcome: Callable[[], Outcome] | None = None
    _outcome: Outcome | None = None
    _ended_with: BaseException | None = None  # the exception that ended the app call
    _holders = 0  # the phase, and the cleanups it left behind, that may read the outcome
    _directives: list[Directive] | None = None  # added by nested middlewares
    _queue: Any = None  # the middleware's job queue (asgi_cleanup.queues), if it has one

    def register(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Callable[P, R]:
        """Add a cleanup, called as ``func(*args, **kwargs)`` after the response.

        Returns ``func``, so ``@registry.register`` works as a decorator. Async callables are
        awaited on the event loop; sync ones run in a worker thread. Cleanups run in reverse
        order of registration, each in a copy of the context (``contextvars``) current now, so
        request ids and tracing spans set by the app are visible in it. Once cleanups have
        started, nothing is added: a WARNING names ``func``.

        :raises TypeError: if ``func`` is not callable, or is a generator or async generator
            function (calling it would run nothing).
        """
        check_cleanup(func)
        entry = (func, args, kwargs, copy_context())
        _acquire()
        try:
            if not self._frozen:
                if self._entries is None:
                    self._entries = [entry]
                else:
                    self._entries.append(entry)
                return func
        finally:
            _release()
        name = describe_callable(func)
        message = "Cleanup %s registered after cleanups started; it will not run"
        logger.warning(message, name, extra={"cleanup_name": name})
        return func

    @overload
    def register_job(self, job: Any, /, *a: Any, durable: Literal[True], **k: Any) -> "Durable": ...
    @overload
    def register_job(self, job: Any, /, *a: Any, **k: Any) -> "Job": ...
    def register_job(
        self, job: Any, /, *args: Any, with_outcome: bool = False, durable: bool = False, **kw: Any
    ) -> Any:
        """Enqueue ``job(*args, **kwargs)`` (a Celery task, an arq function's name) on the
        middleware's ``queue`` as a cleanup; ``with_outcome``: add ``cleanup_outcome=`` (a
        summary). Returns the cleanup; with ``durable=True`` an awaitable that first records
        the job in the broker. :raises RuntimeError: without a queue (docs/queues.md)."""
        if self._queue is None:
            raise RuntimeError("register_job() needs CleanupMiddleware(queue=...): see the docs")
        return self._queue.register(self, job, args, kw, with_outcome, durable)

    def enter_context(self, cm: AbstractContextManager[T]) -> T:
        """Enter the context manager ``cm`` now and return its value; exit it in the cleanup
        phase, in its place among the other dynamic cleanups (last in, first out).

        Its ``__exit__`` receives the exception the app call ended with (or three ``None``),
        as ``contextlib.ExitStack`` would pass it, so a transaction can commit after a
        success and roll back after an error. Like any sync cleanup, ``__exit__`` runs in a
        worker thread, within the timeout, but never waits for one behind other requests'
        cleanups: with ``thread_limit`` of 2 or more one thread is kept for such exits.
        Suppressing the exception changes nothing for the server.

        :raises TypeError: if ``cm`` is not a context manager (before entering anything).
        :raises RuntimeError: if cleanups have started (``frozen``), before entering ``cm``:
            its exit could no longer run.
        """
        enter, exit_ = self._methods(
            cm, "enter_context", "a context manager", "__enter__", "__exit__"
        )
        exit_cleanup = _exit_of(self, cm, exit_)
        _name_exit(exit_cleanup, cm, "__exit__")  # before entering: nothing may fail after it
        value: T = enter(cm)
        self.register(exit_cleanup)
        return value

    async def enter_async_context(self, cm: AbstractAsyncContextManager[T]) -> T:
        """Enter the async context manager ``cm`` now and return its value; exit it in the
        cleanup phase like :meth:`enter_context`, with ``__aexit__`` awaited on the event loop.

        :raises TypeError: if ``cm`` is not an async context manager.
        :raises RuntimeError: if cleanups have started, before entering ``cm``.
        """
        enter, exit_ = self._methods(
            cm, "enter_async_context", "an async context manager", "__aenter__", "__aexit__"
        )

        async def exit_cleanup() -> None:
            await exit_(cm, *_exc_info(self))

        _name_exit(exit_cleanup, cm, "__aexit__")
        value: T = await enter(cm)
        self.register(exit_cleanup)
        return value

    def _methods(
        self, cm: object, caller: str, kind: str, enter: str, exit_: str
    ) -> tuple[Any, Any]:
        cls = type(cm)
        try:
            methods = getattr(cls, enter), getattr(cls, exit_)
        except AttributeError:
            raise TypeError(f"{cls.__qualname__!r} object is not {kind}") from None
        if self._frozen:
            raise RuntimeError(
                f"{caller}() called after cleanups started: {cls.__qualname__!r} object "
                "not entered, as its exit could no longer run"
            )
        return methods

    def unregister(self, func: Callable[..., Any]) -> None:
        """Remove every pending registration of ``func`` (compared with ``==``).

        No error if it is not registered; no effect once the registry is frozen.
        """
        with _lock:
            if self._frozen or not self._entries:
                return
            entries = list(self._entries)
        # Compared outside the lock: a user's __eq__ may do anything, register() included.
        doomed = {id(entry) for entry in entries if entry[0] == func}
        if doomed:
            with _lock:
                if not self._frozen and self._entries:
                    self._entries[:] = [e for e in self._entries if id(e) not in doomed]

    @property
    def frozen(self) -> bool:
        """``False`` until cleanups start, ``True`` from then on."""
        return self._frozen

    @property
    def outcome(self) -> Outcome | None:
        """How the request ended, for the cleanups: ``None`` until they start; then the
        request's :class:`~asgi_cleanup.Outcome` for as long as any of its cleanups runs (one
        left behind past its timeout included); ``None`` again once the last has ended."""
        outcome = self._outcome
        if outcome is None and self._make_outcome is not None:
            outcome = self._outcome = self._make_outcome()
        return outcome

    def __len__(self) -> int:
        """The number of dynamic cleanups registered and not yet run."""
        return 0 if self._entries is None else len(self._entries)

    def __repr__(self) -> str:
        return f"<CleanupRegistry {'frozen' if self._frozen else 'open'}, {len(self)} pending>"


def freeze(registry: CleanupRegistry) -> tuple[list[Entry] | None, list[Directive] | None]:
    """Close ``registry``; hand over its entries, which the phase pops as they run (so
    ``len(registry)`` counts those not yet run), and the directives nested middlewares added.
    A ``register()`` racing this lands before it, and runs, or after it, and is warned about."""
    _acquire()
    try:
        registry._frozen = True
        return registry._entries, registry._directives
    finally:
        _release()


def add_directives(registry: CleanupRegistry, directives: tuple[Directive, ...]) -> None:
    if not directives:
        return
    with _lock:
        if registry._directives is None:
            registry._directives = []
        registry._directives.extend(directives)


def begin_phase(
    registry: CleanupRegistry, make_outcome: Callable[[], Outcome], ended_with: BaseException | None
) -> None:
    """Cleanups start: ``outcome`` reads ``make_outcome()`` (built on first use), and context
    exits receive ``ended_with``, until ``let_go`` has been called for the phase and for each
    ``hold_outcome``."""
    registry._make_outcome = make_outcome
    registry._ended_with = ended_with
    registry._holders = 1


def hold_outcome(registry: CleanupRegistry) -> Callable[[], None]:
    """Keep the outcome for a cleanup left behind; what this returns lets go, from any thread."""
    with _lock:
        registry._holders += 1
    return partial(let_go, registry)


def let_go(registry: CleanupRegistry) -> None:
    """One holder is done; after the last, the outcome is dropped. It holds the scope, which
    holds the registry: a cycle only the garbage collector would free, as would the exception's
    traceback through the request's frames."""
    _acquire()
    try:
        registry._holders -= 1
        if not registry._holders:
            registry._make_outcome = registry._outcome = registry._ended_with = None
    finally:
        _release()


def _exit_of(registry: CleanupRegistry, cm: object, exit_: Any) -> Callable[[], None]:
    """The cleanup that exits ``cm``: a release, which ``is_release`` tells from the rest."""

    def exit_cleanup() -> None:
        exit_(cm, *_exc_info(registry))

    return exit_cleanup


_RELEASE_CODE = _exit_of(CleanupRegistry(), None, None).__code__


def is_release(func: object) -> bool:
    """Whether ``func`` is a context manager's exit that ``enter_context`` registered."""
    return type(func) is FunctionType and func.__code__ is _RELEASE_CODE


def _exc_info(registry: CleanupRegistry) -> tuple[Any, Any, Any]:
    exc = registry._ended_with
    return (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)


def _name_exit(exit_cleanup: Callable[[], Any], cm: object, method: str) -> None:
    """Name ``exit_cleanup`` in logs and reports as ``cm``'s ``method``."""
    cls = type(cm)
    exit_cleanup.__module__ = cls.__module__
    exit_cleanup.__qualname__ = f"{cls.__qualname__}.{method}"


def registry_in(scope: Mapping[str, Any], install: str) -> CleanupRegistry:
    """``scope["cleanup"]``, or a ``RuntimeError`` ending with ``install``: how to put
    ``CleanupMiddleware`` around the app in the caller's framework."""
    registry = scope.get("cleanup")
    if isinstance(registry, CleanupRegistry):
        return registry
    found = "has no 'cleanup' key" if registry is None else f"holds {type(registry).__name__}"
    raise RuntimeError(
        f"No cleanup registry for this request: its scope {found}, so CleanupMiddleware is not "
        f"around the app that serves it. {install}"
    )
