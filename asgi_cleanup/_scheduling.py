"""The cleanup phases not yet finished, and the async cleanups phases left behind, which
``drain()`` and the lifespan shutdown wait for; and the tasks of their own that phases run in
when the app raised or left its response unfinished."""

import asyncio
import contextvars
import itertools
from asyncio import CancelledError
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import anyio

Phase = Coroutine[Any, Any, None]


class PhaseScheduler:
    """Tracks the cleanup phases running or pending, and starts phases in tasks of their own.

    An async cleanup that a phase left behind (see ``leave_behind``) is tracked as one more
    phase until it ends.
    """

    __slots__ = ("_idle_events", "_left_behind", "_numbers", "_running", "_tasks", "_watchers")

    def __init__(self) -> None:
        self._numbers = itertools.count()
        self._running: set[int] = set()
        self._idle_events: list[anyio.Event] = []
        # (phases still awaited, future set when none is left) of each outlast() call.
        self._watchers: list[tuple[set[int], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._left_behind: set[int] = set()

    @property
    def active(self) -> int:
        """Phases running or pending, and async cleanups left behind."""
        return len(self._running)

    @property
    def left_behind(self) -> int:
        """Async cleanups left behind that have not ended (counted in ``active`` too)."""
        return len(self._left_behind)

    def leave_behind(self) -> Callable[[], None]:
        """Track an async cleanup its phase stopped waiting for (it did not stop when
        cancelled at its timeout) as a phase, so that ``drain()`` and ``outlast()`` wait for
        it; call what this returns, on the event loop, once it has ended."""
        number = self.started()
        self._left_behind.add(number)
        # outlast() callers waiting for phases wait for what those phases left behind too.
        for awaited, done in self._watchers:
            if not done.done():
                awaited.add(number)
        return partial(self._left_ended, number)

    def _left_ended(self, number: int) -> None:
        self._left_behind.discard(number)
        self.finished(number)

    def started(self) -> int:
        """A phase is starting in the caller's task; ``finished()`` must follow, with the
        number returned."""
        number = next(self._numbers)
        self._running.add(number)
        return number

    def finished(self, number: int) -> None:
        self._running.discard(number)
        for awaited, done in self._watchers:
            awaited.discard(number)
            if not awaited and not done.done():
                done.set_result(None)
        if not self._running and self._idle_events:
            for event in self._idle_events:
                event.set()
            self._idle_events.clear()

    def spawn(self, phase: Phase) -> None:
        """Run the coroutine ``phase`` in a task of its own; return at once."""
        number = self.started()
        loop = asyncio._get_running_loop()
        if loop is not None:
            task = loop.create_task(self._tracked(phase, number))
            self._tasks.add(task)  # the event loop keeps only weak references to tasks
            task.add_done_callback(self._tasks.discard)
            return
        import trio

        trio.lowlevel.spawn_system_task(
            self._tracked, phase, number, context=contextvars.copy_context()
        )

    async def drain(self) -> None:
        """Wait until every phase running or pending has finished."""
        while self._running:
            event = anyio.Event()
            self._idle_events.append(event)
            await event.wait()

    async def outlast(self, bound: float | None) -> None:
        """On asyncio, wait until every phase running now has finished, and every async
        cleanup left behind meanwhile has ended, at most ``bound`` seconds, whatever
        cancellation the caller's task receives meanwhile (the caller holds one already, and
        delivers it afterwards)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        watcher = (set(self._running), done)
        if not watcher[0]:
            return
        self._watchers.append(watcher)
        try:
            await outlast_future(done, bound)
        finally:
            self._watchers.remove(watcher)

    async def _tracked(self, phase: Phase, number: int) -> None:
        try:
            await phase
        finally:
            self.finished(number)


async def outlast_future(done: asyncio.Future[None], bound: float | None) -> None:
    """On asyncio, wait until ``done`` is set, at most ``bound`` seconds, whatever cancellation
    the caller's task receives meanwhile (the caller holds one already, and delivers it)."""
    timer = None if bound is None else asyncio.get_running_loop().call_later(bound, set_once, done)
    try:
        while not done.done():
            try:
                await asyncio.shield(done)
            except CancelledError:
                continue
    finally:
        if timer is not None:
            timer.cancel()


def set_once(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)
