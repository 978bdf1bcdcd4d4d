"""What ``drain()`` and the lifespan shutdown wait for: the cleanup phases running or pending,
the async cleanups phases left behind, and the sync ones left in worker threads."""

from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any, Protocol

import anyio

from ._backend import CleanupTask, start_task, task_error, unshield
from ._threads import WorkerPool


class Releasable(Protocol):
    def release(self) -> None: ...


class PhaseTracker:
    """The phases and left-behind cleanups of one middleware, on whatever event loop."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.phases: set[Releasable] = set()
        self.left_behind: set[CleanupTask] = set()  # async cleanups past their timeout
        self._detached: set[CleanupTask] = set()  # the event loop keeps only weak references
        self._idle: anyio.Event | None = None
        self.released = False

    def started(self, phase: Releasable) -> None:
        self.phases.add(phase)

    def finished(self, phase: Releasable) -> None:
        self.phases.discard(phase)
        self._check_idle()

    def spawn(self, phase: Releasable, run: Coroutine[Any, Any, None], context: Context) -> None:
        """Run ``phase`` (``run``, which must not raise) in a task of its own."""
        self.started(phase)
        task = start_task(run, context, eager=False)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def leave_behind(self, task: CleanupTask, let_go: Callable[[], None]) -> None:
        """Track a cleanup its phase stopped waiting for until it ends; then ``let_go()``."""
        self.left_behind.add(task)

        def ended(_: object) -> None:
            task_error(task)  # retrieved: what it did past its timeout was reported as that
            self.left_behind.discard(task)
            let_go()
            self._check_idle()

        task.add_done_callback(ended)

    def _check_idle(self) -> None:
        if self._idle is not None and not self.phases and not self.left_behind:
            self._idle.set()
            self._idle = None

    async def drain(self) -> None:
        """Wait until no phase runs or is pending, and no cleanup left behind (async, or sync
        in a worker thread) is still running."""
        while True:
            while self.phases or self.left_behind:
                if self._idle is None:
                    self._idle = anyio.Event()
                await self._idle.wait()
            # Phases left sync cleanups behind before they finished: those come after them.
            await self.pool.wait_left_behind()
            if not self.phases and not self.left_behind:
                return

    def release(self) -> None:
        """The shutdown's bound has passed: nothing holds back a cancellation from now on, so
        whatever still runs ends when the server (or trio's end) cancels it."""
        self.released = True
        for phase in list(self.phases):
            phase.release()
        for task in (*self.left_behind, *self._detached):
            unshield(task)
