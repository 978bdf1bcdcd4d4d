"""The phase's log records, and where a cleanup was when it timed out. Records name the cleanup
and the request's method and path (``describe_request`` text, so that no frame handling a user's
exception holds the scope), never headers, cookies or query string."""

import logging
import types
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ._describe import RequestText, describe_callable
from .outcome import CleanupReport

logger = logging.getLogger("asgi_cleanup")

_MAX_DEPTH = 100  # frames a timeout's traceback follows at most

FAILED = "Cleanup %s failed%s for %s"
FATAL = "Cleanup %s raised %s %s for %s; it cannot be re-raised"
TIMED_OUT = "Cleanup %s timed out after %gs and was abandoned for %s"
WAITED_OUT = "Cleanup %s timed out after %gs waiting for %s for %s; it runs when one is free"
AROUND_FAILED = "sync_run_context %s failed %s a run of sync cleanups for %s"
DROPPED = "Cleanup %s returned an awaitable after it was abandoned for %s; it is not awaited"


# Messages about a cleanup: their records carry its name as a field.
_OF_A_CLEANUP = frozenset({FAILED, FATAL, TIMED_OUT, WAITED_OUT, DROPPED})


def log_error(
    message: str, func: Callable[..., Any], exc: BaseException | None, *args: Any, **fields: Any
) -> None:
    """An ERROR record; its facts also as record attributes (``extra``) for structured
    formatters: ``cleanup_name``, ``http_method`` and ``http_path`` (from a ``RequestText``
    among ``args``, escaped as in the message), and ``fields``."""
    name = describe_callable(func)
    if message in _OF_A_CLEANUP:
        fields["cleanup_name"] = name
    logger.error(message, name, *args, exc_info=exc, extra=request_fields(args, fields))


def request_fields(args: Iterable[Any], fields: dict[str, Any]) -> dict[str, Any]:
    """``fields``, and the method and path of the ``RequestText`` among ``args``, if any."""
    for arg in args:
        if type(arg) is RequestText:
            fields["http_method"], fields["http_path"] = arg.method, arg.path
    return fields


def log_phase(reports: list[CleanupReport], request: str) -> None:
    duration = sum(report.duration for report in reports)
    logger.debug(
        "Cleanups for %s: %d ran in %.3f ms, %d failed, %d timed out",
        request,
        len(reports),
        duration * 1e3,
        sum(report.exception is not None and not report.timed_out for report in reports),
        sum(report.timed_out for report in reports),
        extra=request_fields((request,), {"duration": duration}),
    )


class TimedOut(NamedTuple):
    """What a cleanup past its timeout gives, for the phase to report."""

    where: types.TracebackType | None  # where it was then, if known
    waiting_for: str = ""  # what it was still waiting for: a worker thread, or a place


def timeout_error(what: str, timeout: float | None, where: Any) -> TimeoutError:
    return TimeoutError(f"{what} timed out after {timeout:g}s").with_traceback(where)


def frames_traceback(frames: Iterable[types.FrameType]) -> types.TracebackType | None:
    """A traceback through ``frames`` (outermost first) at the lines they are at now."""
    tb = None
    for frame in reversed(list(frames)):
        tb = types.TracebackType(tb, frame, frame.f_lasti, frame.f_lineno or 0)
    return tb


def suspended_traceback(awaitable: Any) -> types.TracebackType | None:
    """Where a suspended coroutine is: its frame and those of the coroutines and generators it
    awaits (at most ``_MAX_DEPTH``); ``None`` if it has no frame. Never raises: the timeout
    must go on to cancel the cleanup whatever it is."""
    frames: list[types.FrameType] = []
    try:
        while len(frames) < _MAX_DEPTH:
            if type(awaitable) is types.CoroutineType:
                frame, awaitable = awaitable.cr_frame, awaitable.cr_await
            elif type(awaitable) is types.GeneratorType:
                frame, awaitable = awaitable.gi_frame, awaitable.gi_yieldfrom
            else:
                break
            if type(frame) is not types.FrameType:
                break
            frames.append(frame)
        return frames_traceback(frames)
    except Exception:
        return None
