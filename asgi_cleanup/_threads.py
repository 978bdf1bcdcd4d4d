"""The middleware's own worker threads for sync cleanups.

Daemon threads, so a cleanup that never returns cannot keep the process from exiting (anyio's
worker threads are not daemons). At most ``limit`` threads exist, which is what bounds how many
sync cleanups run at once: a cleanup abandoned after its timeout keeps its thread, and so its
place, until it returns.
"""

import asyncio
import os
import queue
import threading
from collections.abc import Callable
from typing import Any


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
        self._pid = os.getpid()

    def submit(self, job: Callable[[], None]) -> None:
        """Run ``job()`` on a worker thread; it must not raise."""
        with self._lock:
            if self._pid != os.getpid():
                # A forked child inherits the counters but not the threads.
                self._jobs = queue.SimpleQueue()
                self._threads = self._idle = self._queued = 0
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


def loop_caller() -> Callable[..., Any]:
    """A thread-safe ``call(func, *args)`` that runs ``func(*args)`` on the current event loop."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop.call_soon_threadsafe
    import trio

    return trio.lowlevel.current_trio_token().run_sync_soon
