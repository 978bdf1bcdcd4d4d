"""Runs one request's cleanups: freeze-time hand-over, dynamic cleanups LIFO, then directives.

The work is done by the backend's path: ``_asyncio_phase`` on asyncio (cheap for cleanups that
do not suspend, immune to native task cancellation), ``_anyio_phase`` elsewhere (trio).
"""

import asyncio

import anyio

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

        The phase is shielded from cancellation: one that arrives meanwhile (a native
        ``Task.cancel()`` on asyncio too) is delivered once it has finished.
        """
        registry._start(outcome)
        loop = asyncio._get_running_loop()
        if loop is None:
            # Trio: cancellation only ever comes through cancel scopes, so a shield is enough.
            with anyio.CancelScope(shield=True):
                anyio_phase = AnyioPhase(outcome, self._timeout, self._pool, self._on_error)
                if entries:
                    await anyio_phase.run(entries)
                if directives:
                    await anyio_phase.run([(d, (outcome,), {}) for d in reversed(directives)])
            return
        workers = self._workers
        if loop is not self._loop or workers is None:
            self._loop, self._workers = loop, workers = loop, WorkerTasks(loop)
        phase = AsyncioPhase(loop, workers, outcome, self._timeout, self._pool, self._on_error)
        try:
            if entries:
                await phase.run(entries)
            if directives:
                await phase.run([(d, (outcome,), {}) for d in reversed(directives)])
        finally:
            phase.close()
        if phase.cancelled is not None:
            raise phase.cancelled
