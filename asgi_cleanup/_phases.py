"""A middleware's cleanup phases: their settings, the phases running or pending, and the
cleanups they left behind, which ``drain()`` and the lifespan shutdown wait for."""

import contextvars
import logging
from collections.abc import Callable
from typing import Any

import anyio

from ._backend import CleanupTask, retrieve, start_task, unshield
from ._batch import AsyncPlaces
from ._threads import SyncRunContext, WorkerPool
from ._watch import Telemetry
from .outcome import CompleteHook, ErrorHook

logger = logging.getLogger("asgi_cleanup")

_SHUTDOWN_WARNING = (
    "Shutting down with %d cleanup phase(s) still running, %d async cleanup(s) left running"
    " past their timeout and %d sync cleanup(s) still in worker threads after %gs"
)


class Phases:
    def __init__(
        self,
        timeout: float | None,
        shutdown_timeout: float | None,
        thread_limit: int,
        on_error: ErrorHook | None,
        on_complete: CompleteHook | None,
    ) -> None:
        self.timeout, self.shutdown_timeout = timeout, shutdown_timeout
        self.on_error, self.on_complete = on_error, on_complete
        self.pool = WorkerPool(thread_limit)
        self.sync_run_context: SyncRunContext | None = None  # set by the middleware
        self.places: AsyncPlaces | None = None  # async_limit, set by the middleware
        self.telemetry: Telemetry | None = None  # set by the middleware when on
        self.running: set[Any] = set()  # the CleanupPhase objects running or pending
        self.left_behind: set[CleanupTask] = set()
        self._detached: set[CleanupTask] = set()  # asyncio keeps only weak references
        self._idle: anyio.Event | None = None
        self.released = False  # the shutdown's bound has passed

    def spawn(self, phase: Any) -> None:
        """Run ``phase`` (a ``CleanupPhase``) in a task of its own, not eagerly."""
        self.running.add(phase)
        task = start_task(phase.run(detached=True), contextvars.copy_context(), eager=False)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    def finished(self, phase: Any) -> None:
        """``phase`` has ended: ``drain()`` no longer waits for it."""
        self.running.discard(phase)
        self._check_idle()

    def leave_behind(self, task: CleanupTask, let_go: Callable[[], None]) -> None:
        """Track a cleanup its phase stopped waiting for until it ends; then ``let_go()``."""
        self.left_behind.add(task)

        def ended(_: object) -> None:
            retrieve(task)  # what it did past its timeout was reported as that
            self.left_behind.discard(task)
            let_go()
            self._check_idle()

        task.add_done_callback(ended)

    def _check_idle(self) -> None:
        if self._idle is not None and not self.running and not self.left_behind:
            self._idle.set()
            self._idle = None

    async def drain(self) -> None:
        """Wait until no phase runs or is pending and no cleanup left behind still runs."""
        while True:
            while self.running or self.left_behind:
                if self._idle is None:
                    self._idle = anyio.Event()
                await self._idle.wait()
            # Phases left sync cleanups behind before they finished: those come after them.
            await self.pool.wait_left_behind()
            if not self.running and not self.left_behind:
                return

    async def shutdown(self) -> None:
        """``drain()`` within ``shutdown_timeout``; past it, nothing of ours holds the server any
        more (a sync cleanup left in its daemon thread is cut off when the process exits)."""
        with anyio.move_on_after(self.shutdown_timeout):
            await self.drain()
        counts = len(self.running), len(self.left_behind), self.pool.left_behind
        if any(counts):
            self.released = True  # from now on, phases hold back no cancellation
            for phase in list(self.running):
                phase.release()
            for task in (*self.left_behind, *self._detached):
                unshield(task)
            logger.warning(_SHUTDOWN_WARNING, *counts, self.shutdown_timeout)
            if self.telemetry is not None:
                self.telemetry.shutdown_unfinished(counts[0])
