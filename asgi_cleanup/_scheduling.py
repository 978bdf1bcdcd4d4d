"""Where a cleanup phase runs: inline in the request's task, or in a task of its own, and the
count of phases not yet finished that ``drain()`` and the lifespan shutdown wait for."""

import asyncio
import contextlib
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
        loop = asyncio._get_running_loop()
        if loop is None:
            # Trio: cancellation only ever comes through cancel scopes, so a shield is enough.
            with anyio.CancelScope(shield=True):
                await self._tracked(phase)
            return
        # asyncio: a server may cancel this task natively (Task.cancel()), which no anyio
        # shield stops. The phase runs in a task of its own (which no cancel scope of the
        # request reaches) that we wait for, swallowing cancellations until it is done.
        task = loop.create_task(self._capturing_exit(phase))
        cancelled: asyncio.CancelledError | None = None
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            cancelled = exc
            # anyio re-cancels a task in a cancelled scope on every loop turn: shield it.
            with anyio.CancelScope(shield=True):
                while not task.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(task)
        exit_exception = task.result()
        if exit_exception is not None:
            raise exit_exception
        if cancelled is not None:
            raise cancelled

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

    async def _capturing_exit(self, phase: Phase) -> BaseException | None:
        # asyncio lets a KeyboardInterrupt or SystemExit out of a task escape the event
        # loop; hand it to the request task instead, where it surfaces as without us.
        try:
            await self._tracked(phase)
        except (KeyboardInterrupt, SystemExit) as exc:
            return exc
        return None
