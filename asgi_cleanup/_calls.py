"""What every cleanup path shares: telling async callables apart, and the log records."""

import contextvars
import functools
import inspect
import logging
import types
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import Any, NamedTuple

from ._describe import describe_callable, describe_request
from ._scheduling import PhaseScheduler
from ._threads import WorkerPool
from ._types import Scope
from .outcome import CleanupReport, Outcome

logger = logging.getLogger("asgi_cleanup")

ErrorHook = Callable[[Callable[..., Any], BaseException, Outcome], Any]
Directive = Callable[[Outcome], Any]

_CO_COROUTINE = inspect.CO_COROUTINE
# Frames a timeout's traceback follows at most: deeper chains are cut there.
_MAX_DEPTH = 100
_FIRST: Any = object()


CompleteHook = Callable[[tuple[CleanupReport, ...], Outcome], Any]


class PhaseConfig(NamedTuple):
    """A middleware's settings for its cleanup phases."""

    timeout: float | None
    pool: WorkerPool
    scheduler: PhaseScheduler
    on_error: ErrorHook | None
    on_complete: CompleteHook | None = None

    def observing(self) -> bool:
        """Whether this phase must time each cleanup: for ``on_complete`` or DEBUG records."""
        return self.on_complete is not None or logger.isEnabledFor(logging.DEBUG)


def log_phase(reports: list[CleanupReport], scope: Scope) -> None:
    """The DEBUG line of one request's phase."""
    logger.debug(
        "Cleanups for %s: %d ran in %.3f ms, %d failed, %d timed out",
        describe_request(scope),
        len(reports),
        sum(report.duration for report in reports) * 1e3,
        sum(report.exception is not None and not report.timed_out for report in reports),
        sum(report.timed_out for report in reports),
    )


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: coroutine functions, objects whose
    ``__call__`` is one, and ``functools.partial`` of either."""
    if type(func) is types.FunctionType and not func.__dict__:
        # The common case, without inspect's unwrapping (a function with attributes may
        # carry inspect.markcoroutinefunction's marker: it takes the long way).
        return bool(func.__code__.co_flags & _CO_COROUTINE)
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


@types.coroutine
def run_in_context(
    coro: "types.CoroutineType[Any, Any, Any]",
    context: contextvars.Context,
    yielded: Any = _FIRST,
    throw: BaseException | None = None,
) -> Generator[Any, Any, Any]:
    """``yield from coro`` with every step of ``coro`` run in ``context``; if its first step
    was already taken and gave ``yielded``, go on from there (throwing ``throw`` in first, if
    given)."""
    run = context.run
    try:
        if yielded is _FIRST:
            yielded = run(coro.send, None)
        elif throw is not None:
            yielded = run(coro.throw, throw)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = run(coro.throw, exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = run(coro.send, value)
            except StopIteration as stop:
                return stop.value


def as_coroutine(awaitable: Awaitable[Any]) -> "types.CoroutineType[Any, Any, Any]":
    """``awaitable`` itself if it is a coroutine, else a coroutine awaiting it."""
    if type(awaitable) is types.CoroutineType:
        return awaitable

    async def wrapper() -> Any:
        return await awaitable

    return wrapper()  # type: ignore[return-value]  # a coroutine function's call is one


def log_failure(func: Callable[..., Any], exc: BaseException, scope: Scope) -> None:
    logger.error(
        "Cleanup %s failed for %s", describe_callable(func), describe_request(scope), exc_info=exc
    )


def timeout_error(timeout: float | None, where: types.TracebackType | None) -> TimeoutError:
    """The ``TimeoutError`` of a cleanup past its timeout, with ``where`` it was then (see
    ``frames_traceback``) as its traceback."""
    return TimeoutError(f"cleanup timed out after {timeout:g}s").with_traceback(where)


def frames_traceback(frames: Iterable[types.FrameType]) -> types.TracebackType | None:
    """A traceback through ``frames`` (outermost first) at the lines they are at now."""
    tb = None
    for frame in reversed(list(frames)):
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno or 0)
    return tb


def suspended_traceback(awaitable: Any) -> types.TracebackType | None:
    """Where a suspended coroutine (or generator) is: its frame and those of the coroutines
    and generators it awaits, down to the innermost (at most ``_MAX_DEPTH``); ``None`` if it
    has no frame (it has not started, or it has finished). Awaitables of other kinds end the
    chain; this never raises, as a timeout must go on to cancel the cleanup whatever it is."""
    frames: list[types.FrameType] = []
    try:
        while len(frames) < _MAX_DEPTH:
            kind = type(awaitable)
            if kind is types.CoroutineType:
                frame, awaitable = awaitable.cr_frame, awaitable.cr_await
            elif kind is types.GeneratorType:
                frame, awaitable = awaitable.gi_frame, awaitable.gi_yieldfrom
            else:
                break
            if type(frame) is not types.FrameType:
                break
            frames.append(frame)
        return frames_traceback(frames)
    except Exception:
        return None


def log_timeout(
    func: Callable[..., Any],
    timeout: float | None,
    scope: Scope,
    exc: TimeoutError,
    waiting: bool = False,
) -> None:
    """The ERROR record of a cleanup past its timeout, with ``exc`` (see ``timeout_error``):
    abandoned, or (``waiting``) given up waiting for a worker thread, to run when one is free."""
    logger.error(
        "Cleanup %s timed out after %gs %s for %s%s",
        describe_callable(func),
        timeout,
        "waiting for a free worker thread" if waiting else "and was abandoned",
        describe_request(scope),
        "; it runs when one is free" if waiting else "",
        exc_info=exc,
    )


def log_hook_failure(role: str, hook: Callable[..., Any], exc: BaseException, scope: Scope) -> None:
    """Log a failed or timed-out hook; ``role`` is its option's name (``on_error``...)."""
    logger.error(
        "%s hook %s failed for %s",
        role,
        describe_callable(hook),
        describe_request(scope),
        exc_info=exc,
    )
