"""What differs between asyncio and trio: a task of its own for a cleanup or a detached phase,
setting an event from a worker thread, and ``Waiter``, which holds back a cancellation of the
request's task until its phase ends. Public APIs only: asyncio's eager start (3.12+) and
``Task.cancel()``, trio's ``spawn_system_task`` and cancel scopes, anyio.
"""

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from typing import Any

import anyio
import anyio.lowlevel

_EAGER = sys.version_info >= (3, 12)


class _TrioTask:
    """A trio system task (no nursery outlives a request when there is no lifespan), shielded
    so that trio's end does not cut it until ``unshield()``; ``cancel()`` cancels it."""

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

    def get_coro(self) -> Coroutine[Any, Any, Any]:
        return self._coro

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None:
        self._callbacks.append(callback)


CleanupTask = asyncio.Task[Any] | _TrioTask  # the same few methods on both


def start_task(awaitable: Awaitable[Any], context: Context, eager: bool = True) -> CleanupTask:
    """Await ``awaitable`` in a task of its own, in ``context`` (which nobody else may enter).
    With ``eager`` on asyncio 3.12+ its first step runs now: one that needs no more is done
    on return."""
    coro = _guarded(awaitable)
    try:
        loop = asyncio.get_running_loop()  # never a stored loop: see python/cpython#155338
    except RuntimeError:
        return _TrioTask(coro, context)
    if eager and _EAGER:
        # eager_start is new in 3.12; mypy checks against 3.11.
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro, context=context)


def task_error(task: CleanupTask) -> BaseException | None:
    """What a finished task raised (its own cancellation included), or ``None``."""
    if isinstance(task, _TrioTask):
        return task.error
    try:
        return task.exception() or task.result()
    except asyncio.CancelledError as exc:  # it was cancelled
        return exc


async def _guarded(awaitable: Awaitable[Any]) -> BaseException | None:
    # Returned, not raised: asyncio would raise these out of the event loop.
    try:
        await awaitable
    except (KeyboardInterrupt, SystemExit) as exc:
        return exc
    return None


def unshield(task: CleanupTask) -> None:
    """Let trio's end cancel ``task`` (an asyncio task never was shielded from it)."""
    if isinstance(task, _TrioTask):
        task._scope.shield = False


def setter_from_thread(event: anyio.Event) -> Callable[[], None]:
    """A call that sets ``event`` soon from any thread, and does nothing once its event loop
    is gone."""
    try:
        schedule: Callable[[Callable[[], object]], Any] = (
            asyncio.get_running_loop().call_soon_threadsafe
        )
    except RuntimeError:
        import trio

        schedule = trio.lowlevel.current_trio_token().run_sync_soon

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            schedule(event.set)

    return call


class Waiter:
    """Waits for events on behalf of one phase. A cancellation of the phase's task (an anyio
    cancel scope's, or on asyncio a native ``Task.cancel()``, which no anyio shield stops) is
    caught and kept in ``held`` for the phase to deliver when it ends: for at most
    ``hold_limit`` seconds (``None``: as long as the phase), and not at all once released."""

    def __init__(self, hold_limit: float | None, released: bool = False) -> None:
        self.held: BaseException | None = None
        self._held_until: float | None = None
        self._hold_limit = hold_limit
        self._released = released
        self._scope: anyio.CancelScope | None = None

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        """Wait until ``event`` is set (``True``) or ``deadline`` (``time.monotonic()``)
        has passed (``False``)."""
        cancelled = anyio.get_cancelled_exc_class()
        while not event.is_set():
            now = time.monotonic()
            if self.held is not None and (
                self._released or (self._held_until is not None and now >= self._held_until)
            ):
                await self.deliver()
            if deadline is not None and now >= deadline:
                return False
            limits = [t for t in (deadline, self._held_until) if t is not None]
            with anyio.CancelScope(shield=self.held is not None) as self._scope:
                try:
                    with anyio.move_on_after(min(limits) - now if limits else None):
                        await event.wait()
                except cancelled as exc:
                    if self.held is None:
                        self.held = exc
                        if self._hold_limit is not None:
                            self._held_until = time.monotonic() + self._hold_limit
            self._scope = None
        return True

    async def deliver(self) -> None:
        """Raise the cancellation held, if any: an anyio or trio scope's afresh."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.held is not None:
            raise self.held

    def release(self) -> None:
        """Hold no cancellation from now on (the shutdown's bound has passed)."""
        self._released = True
        if self._scope is not None and self.held is not None:
            self._scope.cancel()  # wakes wait(), which delivers it
