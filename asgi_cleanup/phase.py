"""Runs one request's cleanups: freeze-time hand-over, dynamic cleanups LIFO, then directives.

The work is done by the backend's path: ``_asyncio_phase`` on asyncio (cheap for cleanups that
do not suspend, immune to native task cancellation), ``_anyio_phase`` elsewhere (trio).
"""

import asyncio
from typing import Any

from ._anyio_phase import AnyioPhase
from ._asyncio_phase import AsyncioPhase, WorkerTasks
from ._calls import Directive, ErrorHook
from ._threads import WorkerPool
from .outcome import Outcome
from .registry import CleanupRegistry, Entry

__all__ = ["CleanupRunner", "Directive", "ErrorHook"]


class CleanupRunner:
    """Runs the cleanup phases of one middleware's requests.

    Cleanups run one after another, each once, isolated from the others and bounded by
    ``timeout``. Failures and timeouts are logged at ERROR on the ``asgi_cleanup`` logger,
    reported to ``on_error`` if set, and never raised; ``BaseException``s that are not
    ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) propagate.
    """

    __slots__ = ("_loop", "_on_error", "_pool", "_timeout", "_workers")

    def __init__(
        self, timeout: float | None, pool: WorkerPool, on_error: ErrorHook | None = None
    ) -> None:
        self._timeout = timeout
        self._pool = pool
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: WorkerTasks | None = None

    async def run_phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        """Set the outcome, run the dynamic cleanups (LIFO), then the directive cleanups.

        On asyncio a cancellation of the calling task is held until the phase has finished,
        then raised; elsewhere the caller shields the phase.
        """
        registry._start(outcome)
        loop = asyncio._get_running_loop()
        phase: Any
        if loop is None:
            phase = AnyioPhase(outcome, self._timeout, self._pool, self._on_error)
        else:
            if loop is not self._loop:
                self._loop, self._workers = loop, WorkerTasks(loop)
            assert self._workers is not None
            phase = AsyncioPhase(
                loop, self._workers, outcome, self._timeout, self._pool, self._on_error
            )
        try:
            if entries:
                await phase.run(entries)
            if directives:
                await phase.run([(d, (outcome,), {}) for d in reversed(directives)])
        finally:
            if loop is not None:
                phase.close()
        if loop is not None and phase.cancelled is not None:
            raise phase.cancelled
