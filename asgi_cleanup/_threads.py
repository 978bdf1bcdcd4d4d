"""The middleware's own worker threads for sync cleanups.

Daemon threads, so a cleanup that never returns cannot keep the process from exiting (anyio's
worker threads are not daemons). At most ``limit`` threads exist, which is what bounds how many
sync cleanups run at once: a cleanup abandoned after its timeout keeps its thread, and so its
place, until it returns.

Jobs whose phase stopped waiting for them (abandoned, or given up before a thread was free)
are counted until they end, so that ``drain()`` and the lifespan shutdown can wait for them
too; the jobs a phase waits for to the end are not, and cost nothing more.
"""

import contextlib
import os
import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio

from ._backend import loop_caller


class WorkerPool:
    """Runs jobs on at most ``limit`` daemon threads, queueing jobs while all are busy."""

    def __init__(self, limit: int, name: str = "asgi-cleanup worker") -> None:
        self._limit = limit
        self._name = name
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._threads = 0
        self._idle = 0
        self._queued = 0  # jobs waiting for a thread, when every thread is busy
        self._left_behind = 0  # jobs queued or running that no phase waits for any more
        self._wakeups: list[Callable[[], Any]] = []  # called once none is left behind
        self._pid = os.getpid()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on a worker thread; it must not raise."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits the counters but not the threads.
                self._jobs = queue.SimpleQueue()
                self._threads = self._idle = self._queued = self._left_behind = 0
                self._wakeups = []
                self._pid = os.getpid()
            if self._idle:
                self._idle -= 1
            elif self._threads < self._limit:
                self._threads += 1
                threading.Thread(target=self._work, name=self._name, daemon=True).start()
            else:
                self._queued += 1
            jobs = self._jobs
        jobs.put(job)

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            jobs.get()()
            with self._lock:
                if self._queued:
                    self._queued -= 1
                else:
                    self._idle += 1

    @property
    def left_behind(self) -> int:
        """Jobs queued or running that their phase stopped waiting for."""
        with self._lock:
            return self._left_behind if self._pid == os.getpid() else 0

    def leave_behind(self) -> Callable[[], None]:
        """Count one more job left behind by its phase; the job calls what this returns, from
        its thread, once it has ended (or has been cut short by ``BaseException``)."""
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
            with contextlib.suppress(Exception):  # that event loop is gone: nobody waits
                wake()

    async def wait_left_behind(self) -> None:
        """Wait, without blocking the event loop, until no job left behind is queued or
        running; the thread ending the last one wakes the loop with its thread-safe call."""
        while True:
            done = anyio.Event()
            wake = partial(loop_caller(), done.set)
            if not self._wake_when_none_left(wake):
                return
            try:
                await done.wait()
            finally:
                self._forget_wakeup(wake)

    def _wake_when_none_left(self, wake: Callable[[], Any]) -> bool:
        """Have the thread ending the last job left behind call ``wake()``; ``False`` (and no
        call) if none is left now."""
        with self._lock:
            if not self._left_behind or self._pid != os.getpid():
                return False
            self._wakeups.append(wake)
            return True

    def _forget_wakeup(self, wake: Callable[[], Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):  # already called
            self._wakeups.remove(wake)
