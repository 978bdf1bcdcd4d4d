"""Where a cleanup phase runs: inline in the request's task, or in a task of its own, and the
count of phases not yet finished that ``drain()`` and the lifespan shutdown wait for."""

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

Phase = Callable[[], Awaitable[None]]


class PhaseScheduler:
    """Runs cleanup phases shielded from cancellation and tracks those still running."""

    __slots__ = ("_active", "_idle_events", "_tasks")

    def __init__(self) -> None:
        self._active = 0
        self._idle_events: list[anyio.Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        """Phases running or pending."""
        return self._active

    async def run_inline(self, phase: Phase) -> None:
        """Run ``phase`` to its end before returning, whatever cancels the calling task.

        A cancellation that arrives meanwhile is delivered once the phase has finished.
        """
        self._active += 1
        if asyncio._get_running_loop() is None:
            # Trio: cancellation only ever comes through cancel scopes, so a shield is enough.
            with anyio.CancelScope(shield=True):
                await self._tracked(phase)
        else:
            # asyncio: the phase holds cancellations of this task (native ones included,
            # which no anyio shield stops) until it has finished.
            await self._tracked(phase)

    def spawn(self, phase: Phase) -> None:
        """Start ``phase`` in a task of its own and return at once."""
        self._active += 1
        loop = asyncio._get_running_loop()
        if loop is not None:
            task = loop.create_task(self._tracked(phase))
            self._tasks.add(task)  # the event loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
            return
        import trio

        trio.lowlevel.spawn_system_task(self._shielded, phase, context=contextvars.copy_context())

    async def drain(self) -> None:
        """Wait until every phase running or pending has finished."""
        while self._active:
            event = anyio.Event()
            self._idle_events.append(event)
            await event.wait()

    async def _tracked(self, phase: Phase) -> None:
        try:
            await phase()
        finally:
            self._active -= 1
            if not self._active and self._idle_events:
                for event in self._idle_events:
                    event.set()
                self._idle_events.clear()

    async def _shielded(self, phase: Phase) -> None:
        # Trio cancels system tasks when the run ends; the phase finishes first.
        with anyio.CancelScope(shield=True):
            await self._tracked(phase)
