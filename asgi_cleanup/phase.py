"""Runs one request's cleanups: freeze-time hand-over, dynamic cleanups LIFO, then directives.

The work is done by the backend's path: ``_asyncio_phase`` on asyncio (cheap for cleanups that
do not suspend, immune to native task cancellation), ``_anyio_phase`` elsewhere (trio), whose
first steps ``_trio_steps`` takes.
"""

import asyncio
import contextvars
import logging
import sys
import weakref
from asyncio import _get_running_loop
from collections.abc import Callable
from logging import DEBUG
from typing import Any

from ._anyio_phase import AnyioPhase
from ._asyncio_phase import NOT_STARTED, AsyncioPhase, WorkerTasks, run_first_steps
from ._calls import CompleteHook, Directive, ErrorHook, PhaseConfig
from ._scheduling import PhaseScheduler
from ._threads import WorkerPool
from .registry import CleanupRegistry, Entry

__all__ = ["CleanupRunner", "CompleteHook", "Directive", "ErrorHook"]

_logger = logging.getLogger("asgi_cleanup")
# PhaseConfig.observing(), in parts bound once for the per-request path: isEnabledFor() is
# asked only when the answer it caches (cleared, not replaced, when levels change) is not
# already False.
_debug_enabled = _logger.isEnabledFor
_level_cache = getattr(_logger, "_cache", None)
_cached_enabled: Callable[[int], bool | None] = (
    _level_cache.get if isinstance(_level_cache, dict) else lambda _: None
)
# _trio_steps.run_first_steps, once a phase has run with no asyncio loop and trio imported.
_trio_first_steps: Callable[[list[Entry]], Any] | None = None


def _load_trio_first_steps() -> Callable[[list[Entry]], Any] | None:
    """``_trio_steps.run_first_steps``, imported now if trio is (it needs trio)."""
    global _trio_first_steps
    if "trio" in sys.modules:
        from ._trio_steps import run_first_steps as _trio_first_steps
    return _trio_first_steps


class CleanupRunner:
    """Runs the cleanup phases of one middleware's requests.

    Cleanups run one after another, each once, isolated from the others and bounded by
    ``timeout``. Failures and timeouts are logged at ERROR on the ``asgi_cleanup`` logger,
    reported to ``on_error`` if set, and never raised; ``BaseException``s that are not
    ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) propagate.
    """

    __slots__ = ("__weakref__", "_config", "_dismiss_workers", "_loop", "_on_complete", "_workers")

    def __init__(
        self,
        timeout: float | None,
        pool: WorkerPool,
        scheduler: PhaseScheduler,
        on_error: ErrorHook | None = None,
        on_complete: CompleteHook | None = None,
    ) -> None:
        self._config = PhaseConfig(timeout, pool, scheduler, on_error, on_complete)
        self._on_complete = on_complete
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: WorkerTasks | None = None
        self._dismiss_workers: weakref.finalize[[], CleanupRunner] | None = None

    def run_first_steps(self, entries: list[Entry]) -> Any:
        """Run, at once, the dynamic cleanups that need no more than that: async cleanups
        (LIFO) that finish in their first step, when no hook or DEBUG record needs their
        timings; on asyncio, and on trio (with no cancel scope: see ``_trio_steps``).

        Returns ``None`` if every entry ran, else what to pass to ``run_phase`` as
        ``carried`` for the rest of the phase.
        """
        if self._on_complete is not None or (
            _cached_enabled(DEBUG) is not False and _debug_enabled(DEBUG)
        ):
            return NOT_STARTED
        loop = _get_running_loop()
        if loop is None:  # trio
            first_steps = _trio_first_steps or _load_trio_first_steps()
            return NOT_STARTED if first_steps is None else first_steps(entries)
        workers = self._workers
        if loop is not self._loop or workers is None:
            workers = self._new_workers(loop)
        return run_first_steps(loop, workers, entries)

    def _new_workers(self, loop: asyncio.AbstractEventLoop) -> WorkerTasks:
        """The worker tasks for ``loop``, which becomes this runner's; those of the loop
        before are dismissed, as these will be when the runner is collected."""
        if self._dismiss_workers is not None:
            self._dismiss_workers()  # calls it once, and drops its reference
        workers = WorkerTasks(loop)
        self._dismiss_workers = finalizer = weakref.finalize(self, workers.dismiss)
        finalizer.atexit = False  # at exit the loop is gone or never runs again
        self._loop, self._workers = loop, workers
        return workers

    async def run_phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        carried: Any = NOT_STARTED,
    ) -> None:
        """Run the dynamic cleanups (LIFO), then the directive cleanups, with the outcome
        ``registry._start()`` was given; ``carried`` is what ``run_first_steps`` left.

        The phase is shielded from cancellation: one that arrives meanwhile (a native
        ``Task.cancel()`` on asyncio too) is delivered once it has finished.
        """
        try:
            await self._run_phase(registry, entries, directives, carried)
        finally:
            registry._end_phase()

    async def _run_phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        carried: Any,
    ) -> None:
        loop = asyncio._get_running_loop()
        if loop is None:
            # Trio: cancellation only ever comes through cancel scopes, which the phase's
            # shielded scopes keep out (from a carried step's scopes too: see _trio_steps).
            outcome = registry.outcome
            assert outcome is not None
            phase = AnyioPhase(outcome, self._config, registry)
            later: list[Entry] | None = None
            if directives:
                # Directive cleanups run in the context as it was when the app finished.
                context = contextvars.copy_context()
                later = [(d, (outcome,), {}, context.copy()) for d in reversed(directives)]
            await phase.run_here(entries, later, None if carried is NOT_STARTED else carried)
            await phase.complete()
            return
        workers = self._workers
        if loop is not self._loop or workers is None:
            workers = self._new_workers(loop)
        await AsyncioPhase(loop, workers, registry, self._config).run_phase(
            entries, directives, carried
        )
