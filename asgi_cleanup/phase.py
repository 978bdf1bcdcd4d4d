"""One request's cleanup phase, the same on asyncio and trio.

Dynamic cleanups run last registered first, then the directive cleanups, each once. An async
cleanup runs in a task of its own (on Python 3.12+ started eagerly: one that finishes in its
first step costs no scheduling), so that it can be abandoned at its timeout and sees a task
no other request shares. Consecutive sync cleanups share one hop to a worker thread. The
request's task waits through ``Waiter``, which holds back a cancellation until the phase ends.
"""

import contextvars
import inspect
import logging
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel

from ._backend import (
    CleanupTask,
    guarded,
    loop_caller,
    new_signal,
    set_signal,
    start_task,
    task_error,
    task_signal,
    unshield,
)
from ._describe import describe_request, is_async_callable
from ._log import (
    log_failure,
    log_fatal,
    log_hook_failure,
    log_phase,
    log_timeout,
    suspended_traceback,
    timeout_error,
)
from ._sync_run import SyncJob
from ._threads import WorkerPool
from ._tracker import PhaseTracker
from ._waiter import Waiter
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry, Directive, Entry, end_phase, hold_outcome

logger = logging.getLogger("asgi_cleanup")

ErrorHook = Callable[[Callable[..., Any], BaseException, Outcome], Any]
CompleteHook = Callable[[tuple[CleanupReport, ...], Outcome], Any]

# How long past its timeout a cancelled cleanup may take to stop before it is left behind.
ABANDON_GRACE = 1.0


@dataclass(frozen=True)
class PhaseConfig:
    """A middleware's settings for its cleanup phases."""

    timeout: float | None
    shutdown_timeout: float | None
    pool: WorkerPool
    tracker: PhaseTracker
    on_error: ErrorHook | None
    on_complete: CompleteHook | None


class _TimedOut(NamedTuple):
    """What a cleanup past its timeout gives: ``where`` it was then, if known."""

    where: types.TracebackType | None


class CleanupPhase:
    """Runs one request's cleanups: ``run()`` in the request's task, or ``run_detached()``
    in a task of its own. Failures and timeouts are logged and go to ``on_error``; a
    ``BaseException`` that is not an ``Exception`` lets the rest run first."""

    def __init__(
        self,
        config: PhaseConfig,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
    ) -> None:
        self._config = config
        self._registry = registry
        self._entries = entries if entries is not None else []
        self._later: list[Entry] = []
        if directives:
            # Directive cleanups run in the context as it was when the app finished.
            outcome, context = self._outcome, contextvars.copy_context()
            self._later = [(d, (outcome,), {}, context.copy()) for d in reversed(directives)]
        observing = config.on_complete is not None or logger.isEnabledFor(logging.DEBUG)
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

    async def run(self) -> None:
        """Run the phase in the caller's task, then deliver what it held back: the first
        ``BaseException`` a cleanup raised, else a cancellation of the task."""
        tracker = self._config.tracker
        tracker.started(self)
        try:
            await self._run()
        finally:
            tracker.finished(self)
            end_phase(self._registry)
        if self._fatal is not None:
            raise self._fatal
        if self._waiter is not None:
            await self._waiter.deliver()

    async def run_detached(self) -> None:
        """Run the phase in a task of its own (``PhaseTracker.spawn``): nobody is there to
        raise anything to, so a ``BaseException`` is logged."""
        self._detached = True
        try:
            await self._run()
        except BaseException:  # the shutdown's bound passed: cut short, as it should be
            pass
        finally:
            self._config.tracker.finished(self)
            end_phase(self._registry)

    def release(self) -> None:
        """Stop holding back cancellation (the shutdown's bound has passed)."""
        if self._waiter is not None:
            self._waiter.release()
        if self._current is not None:
            unshield(self._current)

    async def _run(self) -> None:
        entries, later = self._entries, self._later
        for pending, then in ((entries, later), (later, None)):
            while pending:
                if not is_async_callable(pending[-1][0]):
                    await self._run_sync(pending, then)
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
                    task = start_task(guarded(awaitable), context)
                    # Most end in their first step: no await at all then.
                    result = task_error(task) if task.done() else await self._finish(task, began)
                if result is not None or self._reports is not None:
                    await self._record(func, began, result)
        if self._reports is not None:
            await self._complete(self._reports)

    async def _await(self, awaitable: Any, context: contextvars.Context, began: float) -> Any:
        """Await ``awaitable`` in a task of its own, in ``context``, until ``began`` plus the
        timeout; ``None``, what it raised, or a ``_TimedOut``."""
        task = start_task(guarded(awaitable), context)
        return task_error(task) if task.done() else await self._finish(task, began)

    async def _finish(self, task: CleanupTask, began: float) -> Any:
        self._current = task
        try:
            return await self._wait_for(task, began)
        except BaseException:
            unshield(task)  # the phase is cut short: the shutdown's bound has passed
            raise
        finally:
            self._current = None

    async def _wait_for(self, task: CleanupTask, began: float) -> Any:
        done = task_signal(task)
        waiter = self._waiter_for_phase()
        timeout = self._config.timeout
        if timeout is None:
            await waiter.wait(done, None)
            return task_error(task)
        deadline = began + timeout
        if await waiter.wait(done, deadline):
            error = task_error(task)
            # One that blocked the event loop past its deadline after it last waited overran.
            return _TimedOut(None) if time.monotonic() >= deadline else error
        where = suspended_traceback(task.get_coro())
        task.cancel()
        if await waiter.wait(done, deadline + min(ABANDON_GRACE, timeout)):
            task_error(task)  # what it raised once cancelled is its timeout's doing
        else:
            # It does not stop when cancelled: it goes on, and drain() waits for it.
            self._config.tracker.leave_behind(task, hold_outcome(self._registry))
        return _TimedOut(where)

    def _waiter_for_phase(self) -> Waiter:
        waiter = self._waiter
        if waiter is None:
            config = self._config
            waiter = self._waiter = Waiter(config.shutdown_timeout, config.tracker.released)
        return waiter

    async def _run_sync(self, pending: list[Entry], then: list[Entry] | None) -> None:
        """Run the sync cleanups at the end of ``pending`` (then of ``then``) in one worker
        thread, within the timeout of each."""
        config = self._config
        job = SyncJob(pending, then, self._request(), self._reports is not None)
        done = new_signal()
        job.notify = partial(loop_caller(), partial(set_signal, done))
        config.pool.submit(job.run)
        waiter = self._waiter_for_phase()
        abandoned = where = None
        timeout = config.timeout
        if timeout is None:
            await waiter.wait(done, None)
        else:
            while not await waiter.wait(done, job.started_at + timeout):
                overdue = job.overdue(timeout, config.pool, partial(hold_outcome, self._registry))
                if overdue is None:  # it finished meanwhile
                    await waiter.wait(done, None)
                    break
                if overdue[1] is not None:
                    abandoned, where = overdue[1], job.where()
                    break
        for func, seconds, error in job.take_results():
            await self._record(func, time.monotonic() - seconds, error)
        if abandoned is not None:
            await self._record(abandoned[0], job.started_at, _TimedOut(where), job.late is not None)
        elif job.fatal is not None and job.current is not None:
            self._fail_fatally(job.current[0], job.fatal)
        elif job.awaitable is not None and job.current is not None:
            # A sync cleanup returned an awaitable: awaited within what is left of its timeout.
            func, began = job.current[0], job.started_at
            await self._record(func, began, await self._await(job.awaitable, job.current[3], began))

    async def _record(
        self, func: Callable[..., Any], began: float, result: Any, waiting: bool = False
    ) -> None:
        """Report a cleanup that ended with ``result`` (``None``, an exception or a
        ``_TimedOut``): log a failure and call ``on_error``; note it for ``on_complete``."""
        timed_out = type(result) is _TimedOut
        if timed_out:
            timeout = self._config.timeout
            result = timeout_error(timeout, result.where)
            log_timeout(func, timeout, self._request(), result, waiting)
        elif result is not None:
            if not isinstance(result, Exception) and not _is_loop_cancellation(result):
                self._fail_fatally(func, result)
                return
            log_failure(func, result, self._request())
        if result is not None and self._config.on_error is not None:
            await self._call_hook("on_error", self._config.on_error, func, result, self._outcome)
        if self._reports is not None:
            seconds = time.monotonic() - began
            self._reports.append(CleanupReport(func, seconds, result, timed_out))

    def _fail_fatally(self, func: Callable[..., Any], exc: BaseException) -> None:
        """A ``BaseException``: the rest still run, then the first one is raised."""
        if self._detached:
            log_fatal(func, exc, self._request(), "in a phase of its own task")
        elif self._fatal is None:
            self._fatal = exc

    async def _complete(self, reports: list[CleanupReport]) -> None:
        log_phase(reports, self._request())
        hook = self._config.on_complete
        if hook is not None:
            await self._call_hook("on_complete", hook, tuple(reports), self._outcome)

    async def _call_hook(self, role: str, hook: Callable[..., Any], *args: Any) -> None:
        """Call a sync or async hook on the event loop, within the timeout; log what it
        raises."""
        began = time.monotonic()
        try:
            result = hook(*args)
        except Exception as exc:
            log_hook_failure(role, hook, exc, self._request())
            return
        if result is not None and inspect.isawaitable(result):
            error = await self._await(result, contextvars.copy_context(), began)
            if type(error) is _TimedOut:
                timeout = self._config.timeout
                error = TimeoutError(f"hook timed out after {timeout:g}s").with_traceback(
                    error.where
                )
            if error is not None:
                log_hook_failure(role, hook, error, self._request())


def _is_loop_cancellation(exc: BaseException) -> bool:
    """A cleanup's own cancellation (it cancelled its task, or raised the class itself): a
    failure like any other."""
    return isinstance(exc, anyio.get_cancelled_exc_class())
