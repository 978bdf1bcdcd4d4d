"""Sync cleanups in the middleware's own daemon threads (anyio's are not daemons, and would
keep the process from exiting): the pool, and a run of consecutive sync cleanups in one thread.
One abandoned at its timeout keeps its thread, and its place in ``limit``, until it returns.

With a ``limit`` of two or more, one of its threads is a lane for releases (context managers'
exits, ``enter_context``): other cleanups have the rest, so a release never waits for a
thread behind them, only behind other releases."""

import contextlib
import inspect
import os
import queue
import sys
import threading
import time
import types
from asyncio import CancelledError
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._backend import call_from_thread, new_signal
from ._describe import is_async_callable
from ._log import AROUND_FAILED, DROPPED, FAILED, FATAL, frames_traceback, log_error
from ._watch import PhaseWatch
from .registry import Entry, is_release

Result = tuple[Entry, float, BaseException | None]  # cleanup's entry, seconds, error
# The middleware's sync_run_context: makes what each run of sync cleanups runs within.
SyncRunContext = Callable[[], contextlib.AbstractContextManager[object]]


class WorkerPool:
    """Runs jobs on at most ``limit`` daemon threads, queueing jobs while all are busy, and
    counts the jobs their phase stopped waiting for until they end, for ``drain()``."""

    def __init__(self, limit: int) -> None:
        self._limit = max(limit - 1, 1)  # threads for any job; the lane, if any, is the last
        self._laned = limit > 1
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # _free: idle threads less jobs queued for a busy one (one of the two is always 0).
        self._threads = self._free = self._left_behind = 0
        self._lane: queue.SimpleQueue[Callable[[], None]] | None = None  # started when needed
        self._wakeups: list[Callable[[], None]] = []  # called once none is left behind
        self._pid = os.getpid()

    def submit(self, job: Callable[[], None], to_lane: Callable[[], None] | None = None) -> None:
        """Run ``job()`` on a worker thread; it must not raise. A release passes ``to_lane``:
        when no other thread is free, the job goes to the lane, after calling ``to_lane()``."""
        with self._lock:
            if self._pid != os.getpid():  # a forked child inherits counters, not threads
                self._reset()
            jobs = self._jobs
            if self._free <= 0 and self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name="asgi-cleanup worker", daemon=True).start()
            elif self._free <= 0 and to_lane is not None and self._laned:
                to_lane()
                if self._lane is None:
                    self._lane = queue.SimpleQueue()
                    lane = threading.Thread(target=_serve, args=(self._lane,), daemon=True)
                    lane.name = "asgi-cleanup release lane"
                    lane.start()
                jobs = self._lane
            else:
                self._free -= 1
        jobs.put(job)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            jobs.get()()
            with self._lock:
                self._free += 1

    @property
    def left_behind(self) -> int:
        """Jobs queued or running that their phase stopped waiting for."""
        with self._lock:
            return self._left_behind if self._pid == os.getpid() else 0

    def leave_behind(self) -> Callable[[], None]:
        """Count one more job left behind; it calls what this returns once it has ended."""
        with self._lock:
            self._left_behind += 1
        return self._left_ended

    def _left_ended(self) -> None:
        with self._lock:
            self._left_behind -= 1
            if self._left_behind:
                return
            wakeups, self._wakeups = self._wakeups, []
        for wake in wakeups:
            wake()

    async def wait_left_behind(self) -> None:
        """Wait, without blocking the loop, until no job left behind is queued or running."""
        while True:
            done = anyio.Event()
            wake = call_from_thread(done.set)
            with self._lock:
                if self._pid != os.getpid() or not self._left_behind:
                    return
                self._wakeups.append(wake)
            try:
                await done.wait()
            finally:
                with self._lock, contextlib.suppress(ValueError):  # already called
                    self._wakeups.remove(wake)


class SyncJob:
    """Runs the sync cleanups at the end of ``pending``, then of ``then``, in one worker thread.

    The thread pops each entry just before running it, so each runs once, and collects failures
    (successes too with ``record_successes``) for the event loop to report. A cleanup returning
    an awaitable ends the job: the loop awaits it. Once abandoned (``abandon()``), the thread
    starts nothing more and logs what the running cleanup does later; if no thread had started
    the job, the cleanup given up is ``late``: the thread runs it alone when it gets there.
    """

    def __init__(
        self,
        pending: list[Entry],
        then: list[Entry] | None,
        request: str,
        record_successes: bool,
        watch: PhaseWatch | None = None,  # told as each cleanup starts
    ) -> None:
        self.watch = watch
        self.pending = pending
        self.then = then
        self.current: Entry | None = None  # the cleanup running now (or last run)
        self.started_at = time.monotonic()
        self.lock = threading.Lock()
        self.abandoned = self.finished = False
        self.late: Entry | None = None
        self.awaitable: Awaitable[Any] | None = None
        self.fatal: BaseException | None = None
        self.results: list[Result] = []
        self.ended = new_signal()  # set from the thread once the job has ended
        self._notify = [call_from_thread(self.ended.set)]
        self._request = request
        self._record_successes = record_successes or watch is not None
        self._ends = is_async_callable  # whether the job ends before this cleanup

    def keep_to_releases(self) -> None:
        """On the lane: end the job before any cleanup that is not a release."""
        self._ends = _not_release

    def deadline(self, timeout: float | None) -> float | None:
        """When the running cleanup overruns ``timeout``; ``None`` once the job has ended."""
        return None if timeout is None or self.finished else self.started_at + timeout

    def abandon(
        self, timeout: float, pool: WorkerPool, hold: Callable[[], Callable[[], None]]
    ) -> tuple[Entry, types.TracebackType | None] | None:
        """If the running cleanup has overrun ``timeout``, give the job up and return that
        cleanup and where its thread is (``None`` for a late one); ``None`` if it has not, or
        the job has ended. An abandoned job counts as left behind in ``pool``, and ``hold()``
        keeps the request's outcome, until it ends."""
        with self.lock:
            if self.finished or time.monotonic() < self.started_at + timeout:
                return None
            self.abandoned = True
            # Under the lock: run() (which sets finished under it) calls these in its place.
            self._notify = [pool.leave_behind(), hold()]
            if self.current is None:
                source = self.pending or self.then
                assert source, "a job waiting for a thread has cleanups to run"
                self.late = source.pop()
                return self.late, None
            entry = self.current
        return entry, self._where()

    def _where(self) -> types.TracebackType | None:
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

    def run(self, around: SyncRunContext | None = None) -> None:
        fatal = None
        try:
            self._run() if around is None else self._run_within(around)
        except BaseException as exc:  # raised on the event loop, not lost in this thread
            fatal = exc
        with self.lock:
            self.fatal, self.finished, abandoned = fatal, True, self.abandoned
        if fatal is not None and abandoned and self.current is not None:
            why = "after it was abandoned"
            log_error(FATAL, self.current[0], fatal, type(fatal).__name__, why, self._request)
            del fatal
        for notify in self._notify:
            with contextlib.suppress(Exception):  # the event loop is gone: nobody waits
                notify()

    def _run_within(self, around: SyncRunContext) -> None:
        """``_run()`` inside ``around()``, whose failures are logged: the cleanups run anyway."""
        try:
            (manager := around()).__enter__()
        except Exception as exc:
            log_error(AROUND_FAILED, around, exc, "entering", self._request)
            return self._run()
        try:
            self._run()
        finally:
            try:
                manager.__exit__(None, None, None)
            except Exception as exc:
                log_error(AROUND_FAILED, around, exc, "leaving", self._request)

    def _run(self) -> None:
        done: Result | None = None  # what the last cleanup gave, recorded under the next lock
        while True:
            with self.lock:
                began = time.monotonic()
                if not self.abandoned:
                    if done is not None:
                        self.results.append(done)
                    source = self.pending or self.then
                    if not source or self._ends(source[-1][0]):
                        return
                    self.current, self.started_at = source.pop(), began
                elif self.late is not None and self.current is None:
                    # Given up before a thread was free: it runs alone, nobody waiting for it.
                    self.current = self.late
                else:
                    break
                func, args, kwargs, context = entry = self.current
            if self.watch is not None:
                self.watch.start(entry, began)
            try:
                # Unpacking an empty kwargs still builds a dict: most cleanups have none.
                result = context.run(func, *args, **kwargs) if kwargs else context.run(func, *args)
            except (Exception, CancelledError) as exc:  # its own CancelledError: a failure
                done = (entry, time.monotonic() - began, exc)
                continue
            if result is not None and inspect.isawaitable(result):
                with self.lock:
                    if not self.abandoned:
                        self.awaitable = result  # the event loop awaits it and reports it
                        return
                self._drop(func, result)
                return
            done = (entry, time.monotonic() - began, None) if self._record_successes else None
        if done is not None and done[2] is not None:
            log_error(FAILED, done[0][0], done[2], " after it was abandoned", self._request)

    def _drop(self, func: Callable[..., Any], awaitable: Any) -> None:
        """An awaitable returned after the phase stopped waiting: nobody can await it."""
        log_error(DROPPED, func, None, self._request)
        close = getattr(awaitable, "close", None)
        if callable(close):  # a coroutine: closed, so not warned about as never awaited
            close()


_RUN_CODE = SyncJob._run.__code__


def _serve(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
    while True:
        jobs.get()()


def _not_release(func: Callable[..., Any]) -> bool:
    return not is_release(func)
