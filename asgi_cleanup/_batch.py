"""A run of consecutive async cleanups, in one task of the phase's: started eagerly where asyncio
can (3.12+), so that cleanups that end in their first step cost no scheduling at all; on 3.11
and trio, one task and a few turns of the event loop for the whole run, not for each cleanup.

Each cleanup runs in its own context (every step of it, in ``context.run``) and under a cancel
scope of the run's. The phase cuts the current cleanup at its timeout by cancelling that scope,
so one that shields itself (``anyio.CancelScope(shield=True)``) is not stopped, on asyncio as on
trio. If it does not stop, the phase abandons the run, which ends with that cleanup, and goes on
with the rest in a new one.
"""

import logging
import math
import time
import types
from collections import deque
from collections.abc import Generator
from contextvars import Context
from typing import Any

from ._backend import cancel_scope, new_signal, own_task, settle_cancellation, wait_signal
from ._describe import is_async_callable
from ._log import TimedOut
from ._watch import PhaseWatch
from .registry import Entry

# (cleanup's entry, when it began, and what it raised, a TimedOut if it overran, or None)
logger = logging.getLogger("asgi_cleanup")
_WAITED = (
    "An async cleanup waited %.1fs for a place among async_limit=%d running at once: the "
    "cap holds cleanups back (at most one such warning a minute)"
)

Result = tuple[Entry, float, BaseException | TimedOut | None]


class AsyncPlaces:
    """``async_limit``: places for async cleanups running at once across a middleware's
    requests, given in the order they were asked for. A WARNING says when one waited more
    than a second, at most once a minute."""

    def __init__(self, limit: int) -> None:
        self.limit = self.free = limit
        self._waiting: deque[Any] = deque()  # signals of those waiting, first come first
        self._warned = -math.inf

    def take(self) -> bool:
        """Take a place if one is free and nobody waits for it first."""
        if self.free and not self._waiting:
            self.free -= 1
            return True
        return False

    async def wait(self) -> None:
        """Wait until a place is given to this caller."""
        began, signal = time.monotonic(), new_signal()
        self._waiting.append(signal)
        try:
            await wait_signal(signal, None)
        except BaseException:
            if signal.is_set():
                self.give_back()  # given, but not taken up: the next one has it
            else:
                self._waiting.remove(signal)
            raise
        now = time.monotonic()
        if now - began > 1 and now - self._warned > 60:
            self._warned = now
            logger.warning(_WAITED, now - began, self.limit)

    def give_back(self) -> None:
        """A cleanup has ended: its place goes to the first waiting, if any."""
        if self._waiting:
            self._waiting.popleft().set()
        else:
            self.free += 1


class AsyncBatch:
    """Runs the async cleanups at the end of ``pending`` in the task ``run()`` is given to;
    the first began at ``began``, if given (its timeout counts from there), each once it has a
    place of ``places``, if given; ``watch`` (telemetry), if given, is told as each starts and
    ends. The phase reads ``seq``, ``current`` (the entry), ``began``, ``waiting`` (for a
    place) and ``coro`` (once it has waited) of the one running."""

    __slots__ = (
        "_cut",
        "_first_began",
        "_places",
        "_scope",
        "_step",
        "_where",
        "abandoned",
        "began",
        "coro",
        "current",
        "pending",
        "results",
        "seq",
        "timeout",
        "waiting",
        "watch",
    )

    def __init__(
        self,
        pending: list[Entry],
        timeout: float | None,
        began: float | None,
        places: AsyncPlaces | None,
        watch: PhaseWatch | None = None,
    ) -> None:
        self.pending = pending
        self.timeout = timeout
        self.watch = watch
        self.results: list[Result] = []
        self.seq = 0  # which cleanup is running: counts up
        self.current: Entry | None = None
        self.began = 0.0
        self.coro: Any = None
        self.abandoned = self.waiting = False
        self._first_began = began
        self._places = places
        self._step: Any = None  # set when the current cleanup ends; made when asked for
        self._cut = False
        self._where: types.TracebackType | None = None
        self._scope: Any = None  # the run's cancel scope: anyio's on asyncio, trio's on trio

    def step(self) -> Any:
        """The signal (see ``new_signal``) set when the current cleanup has ended, or the
        first has begun."""
        if self._step is None:
            self._step = new_signal()
        return self._step

    def cut(self, seq: int, where: types.TracebackType | None) -> None:
        """Cancel cleanup ``seq`` if it is still the one running: its timeout has passed;
        ``where`` it was then goes with its result."""
        if seq == self.seq and not self._cut and self._scope is not None:
            self._cut, self._where = True, where
            self._scope.cancel()

    async def run(self) -> None:
        task = own_task()
        pending, began, places, watch = self.pending, self._first_began, self._places, self.watch
        error: BaseException | None = None
        while pending and not self.abandoned and is_async_callable(pending[-1][0]):
            self._cut, self._where = False, None
            # A scope for the run, and a fresh one after each cut: one for each cleanup
            # would cost more than the rest of the phase on asyncio.
            with cancel_scope(task is not None) as self._scope:
                while pending and is_async_callable(pending[-1][0]):
                    entry = self.current = pending.pop()
                    func, args, kwargs, context = entry
                    self.began = time.monotonic() if began is None else began
                    began, waited = None, False
                    self.seq += 1
                    if self.seq == 1 and self._step is not None:
                        self._wake()  # the phase waits for the first to begin, to time it
                    if places is not None and not places.take():
                        self.waiting = True  # past its timeout, the phase leaves it waiting
                        await places.wait()
                        self.waiting = False
                    if watch is not None:
                        watch.start(entry, self.began)
                    try:
                        awaitable = func(*args, **kwargs)
                        coro = awaitable
                        if type(coro) is not types.CoroutineType:
                            coro = awaitable.__await__()
                        yielded = context.run(coro.send, None)
                    except StopIteration:  # ended in its first step
                        error = None
                    except BaseException as exc:  # all of them: the rest still run
                        error = exc
                    else:
                        self.coro, waited = awaitable if coro is awaitable else None, True
                        try:
                            await _go_on(coro, context, yielded)
                        except BaseException as exc:
                            error = exc
                        else:
                            error = None
                    if places is not None:
                        places.give_back()
                    if self._cut or (task is not None and task.cancelling()):
                        break  # ended below, outside the cancelled scope
                    self._ended(error, waited)
                else:
                    continue
            if task is not None and task.cancelling():
                error = await settle_cancellation(task, error, own=not self._cut)
            if self.abandoned:
                return
            self._ended(error, True)
        if self._step is not None:
            self._wake()

    def _ended(self, error: BaseException | None, waited: bool) -> None:
        """The current cleanup ended with ``error``; ``waited``: it did not end in one step."""
        entry, began, timeout = self.current, self.began, self.timeout
        assert entry is not None
        overran = self._cut
        if waited and not overran and timeout is not None:
            # One that blocked the event loop past its deadline after it waited overran.
            overran = time.monotonic() >= began + timeout
        result = TimedOut(self._where) if overran else error
        self.results.append((entry, began, result))
        if self.watch is not None:
            self.watch.end(entry, result)
        if self._step is not None:
            self._wake()

    def _wake(self) -> None:
        step, self._step = self._step, None
        step.set()


@types.coroutine
def _go_on(coro: Any, context: Context, yielded: Any) -> Generator[Any, Any, Any]:
    """Go on with ``coro``, which has yielded ``yielded``, each step of it run in ``context``."""
    send, throw = coro.send, coro.throw
    while True:
        try:
            value = yield yielded
        except BaseException as exc:  # a cancellation, thrown into the cleanup
            step, value = throw, exc
        else:
            step = send
        try:
            yielded = context.run(step, value)
        except StopIteration as stop:
            return stop.value
