"""What ``drain()`` and the lifespan shutdown wait for: the cleanup phases running or pending,
the async cleanups phases left behind, and the sync ones left in worker threads."""

from collections.abc import Callable
from contextvars import Context
from typing import Any, Protocol

import anyio

from ._backend import CleanupTask, spawn, task_error, unshield
from ._threads import WorkerPool


class Releasable(Protocol):
    def release(self) -> None: ...


class PhaseTracker:
    """The phases and left-behind cleanups of one middleware, on whatever event loop."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._phases: set[Releasable] = set()
        self._left_behind: set[CleanupTask] = set()
        self._detached: set[CleanupTask] = set()  # the event loop keeps only weak references
        self._idle: anyio.Event | None = None
        self.released = False

    @property
    def phases(self) -> int:
        """Phases running or pending."""
        return len(self._phases)

    @property
    def left_behind(self) -> int:
        """Async cleanups left running past their timeout."""
        return len(self._left_behind)

    def started(self, phase: Releasable) -> None:
        self._phases.add(phase)

    def finished(self, phase: Releasable) -> None:
        self._phases.discard(phase)
        self._check_idle()

    def spawn(self, phase: Releasable, run: Callable[[], Any], context: Context) -> None:
        """Run ``phase`` (its ``run()``, which must not raise) in a task of its own."""
        self.started(phase)
        task = spawn(run, context)
        if not task.done():
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)

    def leave_behind(self, task: CleanupTask, let_go: Callable[[], None]) -> None:
        """Track a cleanup its phase stopped waiting for until it ends; then ``let_go()``."""
        self._left_behind.add(task)

        def ended(_: object) -> None:
            task_error(task)  # retrieved: what it did past its timeout was reported as that
            self._left_behind.discard(task)
            let_go()
            self._check_idle()

        task.add_done_callback(ended)

    def _check_idle(self) -> None:
        if self._idle is not None and not self._phases and not self._left_behind:
            self._idle.set()
            self._idle = None

    async def drain(self) -> None:
        """Wait until no phase runs or is pending, and no cleanup left behind (async, or sync
        in a worker thread) is still running."""
        while True:
            while self._phases or self._left_behind:
                if self._idle is None:
                    self._idle = anyio.Event()
                await self._idle.wait()
            # Phases left sync cleanups behind before they finished: those come after them.
            await self._pool.wait_left_behind()
            if not self._phases and not self._left_behind:
                return

    def release(self) -> None:
        """The shutdown's bound has passed: nothing holds back a cancellation from now on, so
        whatever still runs ends when the server (or trio's end) cancels it."""
        self.released = True
        for phase in list(self._phases):
            phase.release()
        for task in (*self._left_behind, *self._detached):
            unshield(task)
