"""A run of consecutive async cleanups in one task, where tasks do not start eagerly (Python
3.11, trio): one task and a few turns of the event loop for the run, not for each cleanup.

Each cleanup still runs in its own context (every step of it, in ``context.run``). The phase
cuts the current one at its timeout (``cut``); if it does not stop, the phase abandons the
batch, which ends with that cleanup, and goes on with the rest in a new one.
"""

import asyncio
import time
import types
from collections.abc import Callable, Generator
from contextvars import Context
from typing import Any

from ._backend import new_signal, set_signal
from ._describe import is_async_callable
from .registry import Entry

# (cleanup, when it began, what it raised or None, whether it overran its timeout, and where
# it was when it was cut at its timeout, if it was)
Result = tuple[Callable[..., Any], float, BaseException | None, bool, types.TracebackType | None]


class AsyncBatch:
    """Runs the async cleanups at the end of ``pending`` in the task ``run()`` is given to."""

    def __init__(self, pending: list[Entry], timeout: float | None) -> None:
        self.pending = pending
        self.timeout = timeout
        self.results: list[Result] = []
        self.current: Callable[..., Any] | None = None
        self.began = 0.0
        self.seq = 0  # which cleanup is running: counts up
        self.coro: Any = None
        self.step = new_signal()  # set when the current cleanup ends
        self.abandoned = False
        self._cut = False
        self._where: types.TracebackType | None = None
        self._scope: Any = None  # trio: the current cleanup's cancel scope
        self._task: asyncio.Task[Any] | None = None

    def cut(self, seq: int, where: types.TracebackType | None) -> None:
        """Cancel cleanup ``seq`` if it is still the one running: its timeout has passed;
        ``where`` it was then goes with its result."""
        if seq != self.seq or self._cut:
            return
        self._cut, self._where = True, where
        if self._task is not None:
            self._task.cancel()
        elif self._scope is not None:
            self._scope.cancel()

    async def run(self) -> None:
        try:
            self._task = asyncio.current_task()
        except RuntimeError:  # trio
            import trio

            make_scope: Callable[[], Any] | None = trio.CancelScope
        else:
            make_scope = None
        pending = self.pending
        while pending and not self.abandoned and is_async_callable(pending[-1][0]):
            func, args, kwargs, context = pending.pop()
            self.current, self.began, self._cut, self._where = func, time.monotonic(), False, None
            self.seq += 1
            error: BaseException | None = None
            waited: list[bool] = []
            try:
                awaitable = func(*args, **kwargs)
                self.coro = awaitable if type(awaitable) is types.CoroutineType else None
                if make_scope is None:
                    await _in_context(awaitable, context, waited)
                else:
                    with make_scope() as self._scope:
                        await _in_context(awaitable, context, waited)
            except BaseException as exc:  # all of them: the rest still run
                error = exc
            overran = self._cut
            if self._task is not None and (self._cut or self._task.cancelling()):
                error = await self._settle_cancellation(error)
            if self.abandoned:
                return
            if not overran and self.timeout is not None:
                # One that blocked the event loop past its deadline after it waited overran.
                overran = bool(waited) and time.monotonic() >= self.began + self.timeout
            self.results.append(
                (func, self.began, None if overran else error, overran, self._where)
            )
            step, self.step = self.step, new_signal()
            set_signal(step)
        set_signal(self.step)

    async def _settle_cancellation(self, error: BaseException | None) -> BaseException | None:
        """On asyncio, after a cleanup its task was cancelled during (by the phase at its
        timeout, or by the cleanup itself): let a cancellation not yet delivered come now,
        and take it back, so that the next cleanup does not receive it."""
        task = self._task
        assert task is not None
        own = not self._cut
        if not isinstance(error, asyncio.CancelledError):
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError as exc:
                error = exc if own else error
        while task.cancelling():
            task.uncancel()
        return error


@types.coroutine
def _in_context(awaitable: Any, context: Context, waited: list[bool]) -> Generator[Any, Any, Any]:
    """``await awaitable`` with each of its steps run in ``context``; ``waited`` gets an item
    once it has waited."""
    coro = awaitable.__await__() if type(awaitable) is not types.CoroutineType else awaitable
    send, throw = coro.send, coro.throw
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            yielded = context.run(send, value) if error is None else context.run(throw, error)
        except StopIteration as stop:
            return stop.value
        if not waited:
            waited.append(True)
        try:
            value, error = (yield yielded), None
        except BaseException as exc:  # a cancellation, thrown into the cleanup
            value, error = None, exc
