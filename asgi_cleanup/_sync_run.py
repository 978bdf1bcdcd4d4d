"""A run of consecutive sync cleanups, executed in one worker thread."""

import contextlib
import inspect
import logging
import sys
import threading
import time
import types
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from ._describe import describe_callable, is_async_callable
from ._log import frames_traceback
from ._threads import WorkerPool
from .registry import Entry

logger = logging.getLogger("asgi_cleanup")


class SyncJob:
    """Runs the sync cleanups at the end of a pending list in one worker thread.

    The thread pops each entry just before running it, so every entry is run once, by the
    thread or later by the event loop. Results are collected for the event loop to report.
    The event loop may abandon the job when the running cleanup overruns its timeout; the
    thread then starts nothing more, and logs a later failure of that cleanup itself. When
    no thread was free within the timeout, the event loop gives up waiting for the next
    cleanup (``late``): the thread, once it gets to the job, runs that one alone, in its own
    context, and logs its failure likewise. A cleanup returning an awaitable ends the job:
    the event loop awaits it (one run late cannot have it awaited: it is closed, and logged).
    An abandoned job is counted in the worker pool until it ends, for ``drain()`` to wait for.
    """

    def __init__(
        self,
        pending: list[Entry],
        then: list[Entry] | None,
        request: str,
        record_successes: bool = True,
    ) -> None:
        """Run from the end of ``pending``, and when it is empty from the end of ``then``:
        consecutive sync cleanups share one hop across the dynamic and directive lists.
        Failures are always collected, cleanups that succeed only with ``record_successes``."""
        self.pending = pending
        self.then = then
        self.current: Entry | None = None  # the cleanup running now (or last run)
        self.started_at = time.monotonic()
        self.lock = threading.Lock()
        self.abandoned = False
        self.late: Entry | None = None  # given up before a thread was free: runs when one is
        self.finished = False
        self.awaitable: Awaitable[Any] | None = None
        self.fatal: BaseException | None = None
        self.notify: Callable[[], Any] = _noop
        # (cleanup, seconds, exception or None) of each cleanup the thread saw to its end.
        self._results: list[tuple[Callable[..., Any], float, BaseException | None]] = []
        self._request = request
        self.record_successes = record_successes

    def _source(self) -> list[Entry] | None:
        if self.pending:
            return self.pending
        return self.then or None

    def take_results(self) -> list[tuple[Callable[..., Any], float, BaseException | None]]:
        with self.lock:
            results, self._results = self._results, []
            return results

    def overdue(
        self, timeout: float, pool: WorkerPool, hold: Callable[[], Callable[[], None]]
    ) -> tuple[float, Entry | None] | None:
        """Seconds left before the running cleanup overruns ``timeout``; or, when it has, abandon
        the job and return ``(0, entry)``: the cleanup given up (``None`` if the job finished).
        If no thread had started the job, that cleanup becomes ``late``: the thread runs it.
        An abandoned job is counted as left behind in ``pool`` until it ends, and ``hold()``
        keeps the request's outcome for it until then (it returns what lets go of it)."""
        with self.lock:
            if self.finished:
                return None
            left = self.started_at + timeout - time.monotonic()
            if left > 0:
                return left, None
            self.abandoned = True
            # Nobody waits for the job's end now but drain() and the lifespan shutdown: under
            # the lock, so that run() (which sets finished under it) calls this in its place.
            self.notify = partial(_both, pool.leave_behind(), hold())
            if self.current is not None:
                return 0, self.current
            source = self._source()
            assert source is not None, "a job waiting for a thread has cleanups to run"
            self.late = source.pop()
            return 0, self.late

    def where(self) -> types.TracebackType | None:
        """Where the thread running this job is now, from ``_run`` inwards; ``None`` for a
        cleanup given up before a thread ran it (``late``), or if no thread runs the job."""
        if self.late is not None:
            return None
        # Found by looking, not recorded by the thread: only a timeout pays for it.
        for innermost in sys._current_frames().values():
            frames: list[types.FrameType] = []
            frame: types.FrameType | None = innermost
            while frame is not None:
                frames.append(frame)
                if frame.f_code is _RUN_CODE and frame.f_locals.get("self") is self:
                    return frames_traceback(reversed(frames))
                frame = frame.f_back
        return None

    def run(self) -> None:
        fatal = None
        try:
            self._run()
        except BaseException as exc:  # re-raised on the event loop, not lost in this thread
            fatal = exc
        with self.lock:
            self.fatal = fatal
            self.finished = True
            abandoned = self.abandoned
        if fatal is not None and abandoned:
            # Nobody is left to raise it: the phase went on without this job.
            logger.error(
                "Cleanup %s raised %s after it was abandoned for %s; it cannot be re-raised",
                describe_callable(self.current[0]) if self.current is not None else "?",
                type(fatal).__name__,
                self._request,
                exc_info=fatal,
            )
            del fatal
        with contextlib.suppress(Exception):  # the event loop is gone: nobody waits any more
            self.notify()

    def _run(self) -> None:
        lock = self.lock
        # What the cleanup just run gave, recorded with the next pop under one lock.
        done: tuple[Callable[..., Any], float, BaseException | None] | None = None
        late = False
        while True:
            with lock:
                if done is not None:
                    if self.abandoned:
                        break
                    self._results.append(done)
                    done = None
                if self.abandoned:
                    if self.current is not None or self.late is None:
                        return
                    self.current = self.late
                    late = True
                else:
                    source = self._source()
                    if source is None or is_async_callable(source[-1][0]):
                        return
                    self.current = source.pop()
                    self.started_at = time.monotonic()
                func, args, kwargs, context = self.current
                began = time.monotonic()
            try:
                # Unpacking an empty kwargs still builds a dict: most cleanups have none.
                result = context.run(func, *args, **kwargs) if kwargs else context.run(func, *args)
            except (Exception, CancelledError) as exc:  # its own CancelledError: a failure
                done = (func, time.monotonic() - began, exc)
                if late:
                    break
                continue
            if result is not None and inspect.isawaitable(result):
                if late:
                    self._drop(func, result)
                    return
                self.awaitable = result  # the event loop awaits it, and reports the cleanup
                return
            if late:
                return
            if self.record_successes:
                done = (func, time.monotonic() - began, None)
        if done[2] is not None:
            logger.error(
                "Cleanup %s failed after it was abandoned for %s",
                describe_callable(done[0]),
                self._request,
                exc_info=done[2],
            )

    def _drop(self, func: Callable[..., Any], awaitable: Awaitable[Any]) -> None:
        logger.error(
            "Cleanup %s returned an awaitable after it was abandoned for %s; it is not awaited",
            describe_callable(func),
            self._request,
        )
        close = getattr(awaitable, "close", None)
        if callable(close):  # a coroutine: not awaited, and not warned about as never awaited
            close()


_RUN_CODE = SyncJob._run.__code__


def _both(first: Callable[[], None], second: Callable[[], None]) -> None:
    try:
        first()
    finally:
        second()


def _noop() -> None:
    pass
