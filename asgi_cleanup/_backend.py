"""The only code that differs between asyncio and trio: a cleanup's own task, a detached
phase's task, the one-shot signals a phase waits on, and waking the event loop from a thread.

Everything else is written against anyio. Only public APIs: asyncio's eager task start
(Python 3.12+) and ``Task.cancel()``; trio's ``spawn_system_task`` and cancel scopes.
"""

import asyncio
import contextlib
import math
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import Context
from functools import partial
from typing import Any, Protocol

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
        self.finished = trio.Event()
        self.error: BaseException | None = None
        trio.lowlevel.spawn_system_task(self._run, context=context)

    async def _run(self) -> None:
        try:
            with self._scope:
                self.error = await self._coro
        except BaseException as exc:  # never out of a system task: trio would crash
            self.error = exc
        self.finished.set()
        for callback in self._callbacks:
            callback(self)
        self._callbacks.clear()

    def done(self) -> bool:
        return self.finished.is_set()

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


def new_signal() -> Any:
    """A one-shot signal for the phase to wait on: an asyncio future, or a trio event."""
    try:
        return asyncio.get_running_loop().create_future()
    except RuntimeError:
        import trio

        return trio.Event()


def task_signal(task: CleanupTask) -> Any:
    """The signal set when ``task`` has finished: an asyncio task is one itself."""
    return task.finished if isinstance(task, _TrioTask) else task


def set_signal(signal: Any) -> None:
    if isinstance(signal, asyncio.Future):
        if not signal.done():
            signal.set_result(None)
    else:
        signal.set()


def is_set(signal: Any) -> bool:
    return signal.done() if isinstance(signal, asyncio.Future) else bool(signal.is_set())


async def wait_signal(signal: Any, seconds: float | None) -> None:
    """Wait until ``signal`` is set, at most ``seconds`` (``None``: no limit). A cancellation of the
    waiting task ends the wait and leaves ``signal`` alone (awaiting an asyncio future or task
    directly would cancel it)."""
    if not isinstance(signal, asyncio.Future):
        import trio

        with trio.move_on_after(math.inf if seconds is None else seconds):
            await signal.wait()
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    wake = partial(_wake, waiter)
    signal.add_done_callback(wake)
    timer = None if seconds is None else loop.call_later(seconds, wake)
    try:
        await waiter
    finally:
        signal.remove_done_callback(wake)
        if timer is not None:
            timer.cancel()


def _wake(waiter: "asyncio.Future[None]", _: object = None) -> None:
    if not waiter.done():
        waiter.set_result(None)


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
