"""The cleanup phases not yet finished, which ``drain()`` and the lifespan shutdown wait
for; and the tasks of their own that phases run in when the app raised or left its response
unfinished."""

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

import anyio

Phase = Coroutine[Any, Any, None]


class PhaseScheduler:
    """Tracks the cleanup phases running or pending, and starts phases in tasks of their own."""

    __slots__ = ("_active", "_idle_events", "_tasks")

    def __init__(self) -> None:
        self._active = 0
        self._idle_events: list[anyio.Event] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def active(self) -> int:
        """Phases running or pending."""
        return self._active

    def started(self) -> None:
        """A phase is starting in the caller's task; ``finished()`` must follow."""
        self._active += 1

    def finished(self) -> None:
        self._active -= 1
        if not self._active and self._idle_events:
            for event in self._idle_events:
                event.set()
            self._idle_events.clear()

    def spawn(self, phase: Phase) -> None:
        """Run the coroutine ``phase`` in a task of its own; return at once."""
        self._active += 1
        loop = asyncio._get_running_loop()
        if loop is not None:
            task = loop.create_task(self._tracked(phase))
            self._tasks.add(task)  # the event loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
            return
        import trio

        trio.lowlevel.spawn_system_task(self._tracked, phase, context=contextvars.copy_context())

    async def drain(self) -> None:
        """Wait until every phase running or pending has finished."""
        while self._active:
            event = anyio.Event()
            self._idle_events.append(event)
            await event.wait()

    async def _tracked(self, phase: Phase) -> None:
        try:
            await phase
        finally:
            self.finished()
