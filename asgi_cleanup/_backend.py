"""What differs between asyncio and trio: a task of its own for a cleanup or a detached phase,
the cancel scope a run of cleanups is cut through, the one-shot signals a phase waits on, and
calls from a worker thread. Public APIs only: asyncio's eager start (3.12+), trio's
``spawn_system_task``, anyio's and trio's cancel scopes.
"""

import asyncio
import contextlib
import functools
import sys
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any

import anyio

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


def own_task() -> "asyncio.Task[Any] | None":
    """The asyncio task running this; ``None`` on trio, where no task can cancel itself."""
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


async def settle_cancellation(
    task: "asyncio.Task[Any]", error: BaseException | None, own: bool
) -> BaseException | None:
    """After a cleanup that cancelled its own task (``own``), or was cut while it did: let a
    cancellation not yet delivered come now, and take it back, so that the next cleanup does
    not receive it."""
    if not isinstance(error, asyncio.CancelledError):
        try:
            await asyncio.sleep(0)
        except asyncio.CancelledError as exc:
            error = exc if own else error
    while task.cancelling():
        task.uncancel()
    return error


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
    if seconds is None:
        await signal.wait()
        return
    import trio

    with trio.move_on_after(seconds):
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
