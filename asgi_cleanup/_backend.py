"""The only code that differs between asyncio and trio: a cleanup's own task, a detached
phase's task, waking the event loop from a thread, and a wait that holds cancellation.

Everything else is written against anyio. Only public APIs: asyncio's eager task start
(Python 3.12+), ``Task.cancel()``, ``asyncio.timeout``; trio's ``spawn_system_task``.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from typing import Any, Protocol

import anyio

_EAGER = sys.version_info >= (3, 12)


class CleanupTask(Protocol):
    """What the phase needs of a task: ``asyncio.Task`` has it, and so has ``_TrioTask``."""

    def done(self) -> bool: ...
    def cancel(self) -> Any: ...
    def get_coro(self) -> Any: ...
    def add_done_callback(self, callback: Callable[[Any], object], /) -> None: ...


def start_task(coro: Coroutine[Any, Any, Any], context: Context) -> CleanupTask:
    """Run ``coro`` in a task of its own, in ``context`` (which nobody else may enter). On
    asyncio 3.12+ its first step runs now: one that needs no more is done on return."""
    try:
        loop = asyncio.get_running_loop()  # never a stored loop: see python/cpython#155338
    except RuntimeError:
        return _TrioTask(coro, context)
    if _EAGER:
        # eager_start is new in 3.12; mypy checks against 3.11.
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro, context=context)


def task_error(task: CleanupTask) -> BaseException | None:
    """What a finished task of ``guarded()`` raised (its own cancellation included) or
    returned, or ``None``."""
    if type(task) is _TrioTask:
        return task.error
    assert isinstance(task, asyncio.Task)
    if task.cancelled():
        try:
            task.result()
        except asyncio.CancelledError as exc:
            return exc
    return task.exception() or task.result()


async def guarded(awaitable: Awaitable[Any]) -> BaseException | None:
    """Await ``awaitable``; return a ``KeyboardInterrupt`` or ``SystemExit`` it raises, which
    asyncio would otherwise raise out of the event loop, so the other cleanups still run."""
    try:
        await awaitable
    except (KeyboardInterrupt, SystemExit) as exc:
        return exc
    return None


class _TrioTask:
    """A trio system task running one coroutine: no nursery outlives a request when there is
    no lifespan. Shielded, so trio's end does not cut it; ``cancel()`` cancels it."""

    def __init__(self, coro: Coroutine[Any, Any, Any], context: Context) -> None:
        import trio

        self._coro = coro
        self._scope = trio.CancelScope(shield=True)
        self._callbacks: list[Callable[[Any], object]] = []
        self._finished = False
        self.error: BaseException | None = None
        trio.lowlevel.spawn_system_task(self._run, context=context)

    async def _run(self) -> None:
        try:
            with self._scope:
                self.error = await self._coro
        except BaseException as exc:  # never out of a system task: trio would crash
            self.error = exc
        self._finished = True
        for callback in self._callbacks:
            callback(self)
        self._callbacks.clear()

    def done(self) -> bool:
        return self._finished

    def cancel(self) -> None:
        self._scope.cancel()

    def unshield(self) -> None:
        self._scope.shield = False

    def get_coro(self) -> Coroutine[Any, Any, Any]:
        return self._coro

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None:
        self._callbacks.append(callback)


def spawn(run: Callable[[], Coroutine[Any, Any, None]], context: Context) -> CleanupTask:
    """Start ``run()`` in a task of its own, not eagerly: for a phase that must not hold up
    the request. ``run`` must not raise. The caller keeps the task referenced until done."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _TrioTask(run(), context)
    return loop.create_task(run(), context=context)


def unshield(task: CleanupTask) -> None:
    """Let trio's end cancel ``task`` (an asyncio task never was shielded from it)."""
    if isinstance(task, _TrioTask):
        task.unshield()


def loop_caller() -> Callable[[Callable[[], object]], None]:
    """A thread-safe ``call(func)`` that runs ``func()`` soon on the current event loop, and
    does nothing once that loop is gone."""
    try:
        loop = asyncio.get_running_loop()
        schedule: Callable[[Callable[[], object]], Any] = loop.call_soon_threadsafe
    except RuntimeError:
        import trio

        schedule = trio.lowlevel.current_trio_token().run_sync_soon

    def call(func: Callable[[], object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            schedule(func)

    return call


class Waiter:
    """Waits for events on behalf of one phase, holding back the cancellation of its task:
    an anyio cancel scope's, and on asyncio a native ``Task.cancel()`` too (a server's), which
    no anyio shield stops. ``held`` is the first cancellation caught, for the phase to raise
    when it ends. After ``release()``, a cancellation is no longer held: ``wait`` raises it."""

    def __init__(self) -> None:
        self.held: BaseException | None = None
        self.released = False
        self._shield: anyio.CancelScope | None = None
        self._task = asyncio.current_task() if _on_asyncio() else None

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        """Wait until ``event`` is set (``True``) or ``deadline`` (``time.monotonic()``)
        has passed (``False``)."""
        with anyio.CancelScope(shield=not self.released) as self._shield:
            if self._task is None:
                left = None if deadline is None else deadline - time.monotonic()
                with anyio.move_on_after(left):
                    await event.wait()
                return event.is_set()
            while not event.is_set():
                if self.released and self.held is not None:
                    raise self.held
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(left):
                        await event.wait()
                except TimeoutError:
                    break
                except asyncio.CancelledError as exc:
                    if self.released:
                        raise
                    self.held = self.held or exc
        return event.is_set()

    def release(self) -> None:
        """Stop holding cancellation: a held or pending one reaches the phase now."""
        self.released = True
        if self._shield is not None:
            self._shield.shield = False
        if self.held is not None and self._task is not None:
            self._task.cancel()  # wakes wait(), which raises the held cancellation


def _on_asyncio() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
