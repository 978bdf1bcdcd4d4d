"""A request's cleanup phase.

Dynamic cleanups run last registered first, then directive cleanups, each once. Async ones run
in tasks of the phase's, which no other request shares, so that one can be abandoned at its
timeout: on asyncio 3.12+ a task each, started eagerly (one that ends in its first step costs
no scheduling); on 3.11 and trio, where nothing starts eagerly, one task for each run of
consecutive async cleanups (``_batch``). Consecutive sync ones share one hop to a worker thread.
"""

import contextvars
import inspect
import logging
import time
import types
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import anyio

from . import _log
from ._backend import (
    CleanupTask,
    Waiter,
    start_task,
    starts_eagerly,
    task_error,
    task_signal,
    unshield,
)
from ._batch import AsyncBatch
from ._describe import describe_request, is_async_callable
from ._phases import Phases
from ._threads import SyncJob
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry, Directive, Entry, hold_outcome, let_go

logger = logging.getLogger("asgi_cleanup")

ABANDON_GRACE = 1.0  # how long past its timeout a cancelled cleanup may take to stop


class _TimedOut(NamedTuple):  # what a cleanup past its timeout gives
    where: types.TracebackType | None  # where it was then, if known
    waiting: bool = False  # still waiting for a worker thread


class CleanupPhase:
    """Runs one request's cleanups. Failures and timeouts are logged and go to ``on_error``; a
    ``BaseException`` that is not an ``Exception`` lets the rest run first."""

    def __init__(
        self,
        phases: Phases,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
    ) -> None:
        self._phases = phases
        self._registry = registry
        self._entries = entries if entries is not None else []
        self._later: list[Entry] = []
        if directives:
            # Directive cleanups run in the context as it was when the app finished.
            outcome, context = self._outcome, contextvars.copy_context()
            self._later = [(d, (outcome,), {}, context.copy()) for d in reversed(directives)]
        observing = phases.on_complete is not None or logger.isEnabledFor(logging.DEBUG)
        self._reports: list[CleanupReport] | None = [] if observing else None
        self._waiter: Waiter | None = None  # made when the phase first has to wait
        self._current: CleanupTask | None = None
        self._fatal: BaseException | None = None
        self._detached = False

    @property
    def _outcome(self) -> Outcome:
        outcome = self._registry.outcome
        assert outcome is not None, "registry.begin_phase() comes before the phase"
        return outcome

    def _request(self) -> str:
        return describe_request(self._outcome.scope)

    async def run(self, detached: bool = False) -> None:
        """Run the phase, then deliver what it held back: the first ``BaseException`` a
        cleanup raised, else a cancellation of the task. ``detached`` (``Phases.spawn``): in a
        task of its own, with nobody to deliver to, so it logs them."""
        self._detached = detached
        self._phases.running.add(self)
        try:
            await self._run()
        except BaseException:
            if not detached:  # else the shutdown's bound passed: cut short, as it should be
                raise
        finally:
            self._phases.finished(self)
            let_go(self._registry)
        if not detached:
            if self._fatal is not None:
                raise self._fatal
            if self._waiter is not None:
                await self._waiter.deliver()

    def release(self) -> None:
        """Stop holding back cancellation (the shutdown's bound has passed)."""
        if self._waiter is not None:
            self._waiter.release()
        if self._current is not None:
            unshield(self._current)

    async def _run(self) -> None:
        entries, later = self._entries, self._later
        eager = starts_eagerly()
        for pending, then in ((entries, later), (later, None)):
            while pending:
                if not is_async_callable(pending[-1][0]):
                    await self._run_sync(pending, then)
                    continue
                if not eager and len(pending) > 1 and is_async_callable(pending[-2][0]):
                    await self._run_batch(pending)  # one task for the run, not one each
                    continue
                func, args, kwargs, context = pending.pop()
                began = time.monotonic()
                try:
                    # Calling an async callable runs none of its code: no context needed yet.
                    awaitable = func(*args, **kwargs)
                except Exception as exc:  # arguments that do not fit
                    result: Any = exc
                except BaseException as exc:
                    self._fail_fatally(func, exc)
                    continue
                else:
                    task = start_task(awaitable, context)
                    # Most end in their first step: no await at all then.
                    result = task_error(task) if task.done() else await self._finish(task, began)
                if result is not None or self._reports is not None:
                    await self._record(func, began, result)
        hook = self._phases.on_complete
        if self._reports is not None:
            _log.log_phase(self._reports, self._request())
            if hook is not None:
                await self._call_hook("on_complete", hook, tuple(self._reports), self._outcome)

    async def _wait(self, signal: Any, deadline: float | None) -> bool:
        if self._waiter is None:
            self._waiter = Waiter(self._phases.shutdown_timeout, self._phases.released)
        return await self._waiter.wait(signal, deadline)

    async def _await(self, awaitable: Any, context: contextvars.Context, began: float) -> Any:
        """Await ``awaitable`` in a task of its own, in ``context``, until ``began`` plus the
        timeout: ``None``, what it raised, or a ``_TimedOut``."""
        task = start_task(awaitable, context)
        return task_error(task) if task.done() else await self._finish(task, began)

    async def _finish(self, task: CleanupTask, began: float) -> Any:
        self._current = task
        try:
            done = task_signal(task)
            timeout = self._phases.timeout
            if timeout is None:
                await self._wait(done, None)
                return task_error(task)
            deadline = began + timeout
            if await self._wait(done, deadline):
                error = task_error(task)
                # One that blocked the event loop past its deadline after it last waited overran.
                return _TimedOut(None) if time.monotonic() >= deadline else error
            where = _log.suspended_traceback(task.get_coro())
            task.cancel()
            if await self._wait(done, deadline + min(ABANDON_GRACE, timeout)):
                task_error(task)  # what it raised once cancelled is its timeout's doing
            else:
                # It does not stop when cancelled: it goes on, and drain() waits for it.
                self._phases.leave_behind(task, hold_outcome(self._registry))
            return _TimedOut(where)
        except BaseException:
            unshield(task)  # the phase is cut short: the shutdown's bound has passed
            raise
        finally:
            self._current = None

    async def _run_batch(self, pending: list[Entry]) -> None:
        """The async cleanups at the end of ``pending``, in one task (see ``_batch``)."""
        timeout = self._phases.timeout
        batch = AsyncBatch(pending, timeout)
        task = self._current = start_task(batch.run(), contextvars.copy_context(), eager=False)
        left_behind: Any = None
        try:
            while not task.done():
                step, seq = batch.step, batch.seq
                # Before its first step the batch has no cleanup running: look again soon.
                began = batch.began if seq else time.monotonic()
                deadline = None if timeout is None else began + timeout
                if await self._wait(step, deadline) or batch.seq != seq or not seq:
                    continue
                assert deadline is not None
                assert timeout is not None
                where = _log.suspended_traceback(batch.coro)
                batch.cut(seq, where)
                if await self._wait(step, deadline + min(ABANDON_GRACE, timeout)):
                    continue
                # It does not stop when cancelled: it goes on, and drain() waits for it.
                batch.abandoned = True
                self._phases.leave_behind(task, hold_outcome(self._registry))
                left_behind = (batch.current, batch.began, _TimedOut(where))
                break
        except BaseException:
            unshield(task)  # the phase is cut short: the shutdown's bound has passed
            raise
        finally:
            self._current = None
        for func, began, error, overran, where in batch.results:
            result = _TimedOut(where) if overran else error
            if result is not None or self._reports is not None:
                await self._record(func, began, result)
        if left_behind is not None:
            await self._record(*left_behind)

    async def _run_sync(self, pending: list[Entry], then: list[Entry] | None) -> None:
        """The sync cleanups at the end of ``pending`` (then ``then``): one thread hop."""
        timeout, pool = self._phases.timeout, self._phases.pool
        job = SyncJob(pending, then, self._request(), self._reports is not None)
        pool.submit(job.run)
        abandoned = None
        while not await self._wait(job.ended, job.deadline(timeout)):
            assert timeout is not None, "no deadline without a timeout"
            abandoned = job.abandon(timeout, pool, partial(hold_outcome, self._registry))
            if abandoned is not None:
                break
        for func, seconds, error in job.results:
            await self._record(func, time.monotonic() - seconds, error)
        if abandoned is not None:
            (func, *_), where = abandoned
            await self._record(func, job.started_at, _TimedOut(where, job.late is not None))
        elif job.current is not None and job.fatal is not None:
            self._fail_fatally(job.current[0], job.fatal)
        elif job.current is not None and job.awaitable is not None:
            # A sync cleanup returned an awaitable: awaited within what is left of its timeout.
            func, _, _, context = job.current
            result = await self._await(job.awaitable, context, job.started_at)
            await self._record(func, job.started_at, result)

    async def _record(self, func: Callable[..., Any], began: float, result: Any) -> None:
        """Report a cleanup that ended with ``result`` (``None``, an exception or a
        ``_TimedOut``): log a failure and call ``on_error``; note it for ``on_complete``."""
        timed_out = type(result) is _TimedOut
        if timed_out:
            message = _log.WAITED_OUT if result.waiting else _log.TIMED_OUT
            timeout = self._phases.timeout
            result = _log.timeout_error("cleanup", timeout, result.where)
            _log.log_error(message, func, result, timeout, self._request())
        elif result is not None:
            # Its own cancellation (it cancelled its task, or raised the class) is a failure.
            if not isinstance(result, (Exception, anyio.get_cancelled_exc_class())):
                self._fail_fatally(func, result)
                return
            _log.log_error(_log.FAILED, func, result, "", self._request())
        if result is not None and self._phases.on_error is not None:
            await self._call_hook("on_error", self._phases.on_error, func, result, self._outcome)
        if self._reports is not None:
            seconds = time.monotonic() - began
            self._reports.append(CleanupReport(func, seconds, result, timed_out))

    def _fail_fatally(self, func: Callable[..., Any], exc: BaseException) -> None:
        """A ``BaseException``: the rest still run, then the first one is raised."""
        if self._detached:
            why = "in a phase of its own task"
            _log.log_error(_log.FATAL, func, exc, type(exc).__name__, why, self._request())
        elif self._fatal is None:
            self._fatal = exc

    async def _call_hook(self, role: str, hook: Callable[..., Any], *args: Any) -> None:
        """Call a sync or async hook on the loop, within the timeout; log what it raises."""
        began = time.monotonic()
        try:
            result = hook(*args)
        except Exception as exc:
            error: Any = exc
        else:
            if result is None or not inspect.isawaitable(result):
                return
            error = await self._await(result, contextvars.copy_context(), began)
        if type(error) is _TimedOut:
            error = _log.timeout_error("hook", self._phases.timeout, error.where)
        if error is not None:
            _log.log_error(f"{role} hook %s failed for %s", hook, error, self._request())
