"""The log records of the cleanup phase, and where a cleanup was when it timed out.

Records name the cleanup and the request's method and path, never its headers, cookies or
query string; their callers pass the request as ``describe_request(scope)`` text, so that no
frame that handles a user's exception holds the scope.
"""

import logging
import types
from collections.abc import Callable, Iterable
from typing import Any

from ._describe import describe_callable
from .outcome import CleanupReport

logger = logging.getLogger("asgi_cleanup")

# Frames a timeout's traceback follows at most: deeper chains are cut there.
_MAX_DEPTH = 100


def log_failure(func: Callable[..., Any], exc: BaseException, request: str) -> None:
    logger.error("Cleanup %s failed for %s", describe_callable(func), request, exc_info=exc)


def log_timeout(
    func: Callable[..., Any], timeout: float | None, request: str, exc: TimeoutError, waiting: bool
) -> None:
    """The ERROR record of a cleanup past its timeout, with ``exc`` (see ``timeout_error``):
    abandoned, or (``waiting``) given up waiting for a worker thread, to run when one is free."""
    logger.error(
        "Cleanup %s timed out after %gs %s for %s%s",
        describe_callable(func),
        timeout,
        "waiting for a free worker thread" if waiting else "and was abandoned",
        request,
        "; it runs when one is free" if waiting else "",
        exc_info=exc,
    )


def log_hook_failure(role: str, hook: Callable[..., Any], exc: BaseException, request: str) -> None:
    """Log a failed or timed-out hook; ``role`` is its option's name (``on_error``...)."""
    logger.error("%s hook %s failed for %s", role, describe_callable(hook), request, exc_info=exc)


def log_fatal(func: Callable[..., Any], exc: BaseException, request: str, why: str) -> None:
    """A ``BaseException`` (``KeyboardInterrupt``...) that cannot be raised to anyone."""
    logger.error(
        "Cleanup %s raised %s %s for %s; it cannot be re-raised",
        describe_callable(func),
        type(exc).__name__,
        why,
        request,
        exc_info=exc,
    )


def log_phase(reports: list[CleanupReport], request: str) -> None:
    """The DEBUG line of one request's phase."""
    logger.debug(
        "Cleanups for %s: %d ran in %.3f ms, %d failed, %d timed out",
        request,
        len(reports),
        sum(report.duration for report in reports) * 1e3,
        sum(report.exception is not None and not report.timed_out for report in reports),
        sum(report.timed_out for report in reports),
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
