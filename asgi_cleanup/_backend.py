"""What differs between asyncio and trio: a task of its own for a cleanup or a detached phase,
the one-shot signals a phase waits on, calls from a worker thread, and ``Waiter``, which holds
back a cancellation of the request's task until its phase ends. Public APIs only: asyncio's
eager start (3.12+), trio's ``spawn_system_task``, anyio's and trio's cancel scopes.
"""

import asyncio
import contextlib
import functools
import math
import sys
import time
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any

import anyio
import anyio.lowlevel

EAGER = sys.version_info >= (3, 12)  # asyncio tasks can start eagerly (public from 3.12)


class _TrioTask:
    """A trio system task (no nursery outlives a request when there is no lifespan), shielded
    so that trio's end does not cut it until ``unshield()``."""

    def __init__(self, coro: Coroutine[Any, Any, Any], context: Context) -> None:
        import trio

        self._coro = coro
        self._scope = trio.CancelScope(shield=True)
        self._callbacks: list[Callable[[Any], object]] = []
        self.finished = trio.Event()
        trio.lowlevel.spawn_system_task(self._run, context=context)

    async def _run(self) -> None:
        # Nothing may leave a system task (trio would crash): what it runs raises nothing, and
        # its scope catches the cancellation at trio's end.
        with self._scope:
            await self._coro
        self.finished.set()
        for callback in self._callbacks:
            callback(self)
        self._callbacks.clear()

    def done(self) -> bool:
        return self.finished.is_set()

    def add_done_callback(self, callback: Callable[[Any], object], /) -> None:
        self._callbacks.append(callback)


CleanupTask = asyncio.Task[Any] | _TrioTask  # done() and add_done_callback() on both


def cancel_scope(on_asyncio: bool) -> Any:
    """A new cancel scope that anyio's shields inside it honour: anyio's own on asyncio, trio's
    on trio (anyio's wraps it there)."""
    if on_asyncio:
        return _asyncio_scope_class()()
    import trio

    return trio.CancelScope()


@functools.cache
def _asyncio_scope_class() -> Any:
    # anyio.CancelScope() looks up the running backend on each call: a tenth of a phase.
    return type(anyio.CancelScope())


def start_task(
    coro: Coroutine[Any, Any, None], context: Context, eager: bool = True
) -> CleanupTask:
    """Run ``coro``, which must not raise, in a task of its own, in ``context`` (which nobody
    else may enter). With ``eager`` on asyncio 3.12+ its first step runs now: one that needs
    no more is done on return."""
    try:
        loop = asyncio.get_running_loop()  # never a stored loop: see python/cpython#155338
    except RuntimeError:
        return _TrioTask(coro, context)
    if eager and EAGER:
        # eager_start is new in 3.12; mypy checks against 3.11.
        return asyncio.Task(coro, loop=loop, context=context, eager_start=True)  # type: ignore[call-arg]
    return loop.create_task(coro, context=context)


def retrieve(task: CleanupTask) -> None:
    """Mark how a finished task ended as seen: asyncio logs an exception nobody retrieved."""
    if isinstance(task, asyncio.Task) and not task.cancelled():
        task.exception()


def unshield(task: CleanupTask) -> None:
    """Let trio's end cancel ``task`` (an asyncio task never was shielded from it)."""
    if isinstance(task, _TrioTask):
        task._scope.shield = False


class _Signal:
    """asyncio: a one-shot event that wakes the task waiting for it directly, one turn of the
    event loop sooner than a future's done-callback would."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        _wake(self._waiter)

    async def wait(self, seconds: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = None if seconds is None else loop.call_later(seconds, _wake, waiter)
        try:
            await waiter  # a cancellation of the waiting task cancels this, not the signal
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _wake(waiter: "asyncio.Future[None] | None") -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def new_signal() -> Any:
    """A one-shot signal for a phase to wait on (``wait_signal``), set with ``set()`` on the
    event loop's thread; ``is_set()`` tells."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import trio

        return trio.Event()
    return _Signal()


async def wait_signal(signal: Any, seconds: float | None) -> None:
    """Wait until ``signal`` is set, at most ``seconds`` (``None``: no limit). A cancellation of
    the waiting task ends the wait and leaves ``signal`` alone."""
    if isinstance(signal, _Signal):
        await signal.wait(seconds)
        return
    import trio

    with trio.move_on_after(math.inf if seconds is None else seconds):
        await signal.wait()


def call_from_thread(func: Callable[[], object]) -> Callable[[], None]:
    """A call that runs ``func()`` soon on the current event loop, from any thread, and does
    nothing once that loop is gone."""
    try:
        schedule: Callable[[Callable[[], object]], Any] = (
            asyncio.get_running_loop().call_soon_threadsafe
        )
    except RuntimeError:
        import trio

        schedule = trio.lowlevel.current_trio_token().run_sync_soon

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            schedule(func)

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

    async def wait(self, signal: Any, deadline: float | None) -> bool:
        """Wait until ``signal`` (see ``new_signal``) is set (``True``) or ``deadline``
        (``time.monotonic()``) has passed (``False``)."""
        while not signal.is_set():
            now = time.monotonic()
            if self.held is not None and (
                self._released or (self._held_until is not None and now >= self._held_until)
            ):
                await self.deliver()
            if deadline is not None and now >= deadline:
                return False
            limits = [t for t in (deadline, self._held_until) if t is not None]
            seconds = min(limits) - now if limits else None
            try:
                if self.held is None:
                    await wait_signal(signal, seconds)
                else:
                    # An anyio scope's cancellation would otherwise come again at every await.
                    with anyio.CancelScope(shield=True) as self._scope:
                        await wait_signal(signal, seconds)
            except BaseException as exc:
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                if self.held is None:
                    self.held = exc
                    if self._hold_limit is not None:
                        self._held_until = time.monotonic() + self._hold_limit
            finally:
                self._scope = None
        return True

    async def deliver(self) -> None:
        """Raise the cancellation held, if any: an anyio or trio scope's afresh."""
        if self.held is not None:
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise self.held

    def release(self) -> None:
        """Hold no cancellation from now on (the shutdown's bound has passed)."""
        self._released = True
        if self._scope is not None and self.held is not None:
            self._scope.cancel()  # wakes wait(), which delivers it
