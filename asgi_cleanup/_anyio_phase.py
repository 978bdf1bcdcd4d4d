"""The cleanup phase on any anyio backend (used on trio), shielded from cancellation.

Async cleanups are awaited in a shielded cancel scope whose deadline follows each one's
timeout; sync cleanups run in the middleware's worker threads, one thread hop per run of
consecutive ones.
"""

import contextvars
import inspect
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

from ._calls import (
    PhaseConfig,
    as_coroutine,
    is_async_callable,
    log_failure,
    log_hook_failure,
    log_phase,
    log_timeout,
    run_in_context,
)
from ._describe import describe_request
from ._sync_jobs import SyncJob
from ._threads import loop_caller
from .outcome import CleanupReport, Outcome
from .registry import Entry

# How long past its timeout a cancelled cleanup may take to stop before it is left behind.
ABANDON_GRACE = 1.0


class AnyioPhase:
    """One request's cleanup phase. Failures and timeouts are logged and reported to the
    ``on_error`` hook; ``BaseException``s that are not ``Exception`` propagate."""

    def __init__(self, outcome: Outcome, config: PhaseConfig) -> None:
        self._outcome = outcome
        self._config = config
        self._timeout = config.timeout
        self._reports: list[CleanupReport] | None = [] if config.observing() else None

    async def run(self, pending: list[Entry], then: list[Entry] | None = None) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order).

        The cleanups run in a task of their own that this one watches: an async cleanup still
        running ``ABANDON_GRACE`` past its timeout (one that shields itself from the
        cancellation) is left behind there, and the rest go on in a new task.
        """
        import trio

        timeout = self._timeout
        while pending:
            state = _Run()
            trio.lowlevel.spawn_system_task(
                self._execute, pending, then, state, context=contextvars.copy_context()
            )
            with anyio.CancelScope(shield=True):
                while not state.done.is_set():
                    wait = math.inf
                    running = state.running
                    if running is not None and timeout is not None:
                        wait = state.began + timeout + ABANDON_GRACE - time.perf_counter()
                        if wait <= 0:
                            state.abandoned = True
                            await self._timed_out(running, time.perf_counter() - state.began)
                            break
                    elif timeout is not None:
                        wait = timeout + ABANDON_GRACE  # look again when one may be overdue
                    with anyio.move_on_after(wait):
                        await state.done.wait()
            if state.fatal is not None:
                raise state.fatal

    async def _execute(self, pending: list[Entry], then: list[Entry] | None, state: "_Run") -> None:
        """Run cleanups in one shielded cancel scope whose deadline is moved to each async
        cleanup's own; a scope cannot be un-cancelled, so after a timeout, in a new one."""
        try:
            while pending and not state.abandoned:
                overran = None
                with anyio.CancelScope(shield=True) as scope:
                    overran = await self._run_until_timeout(pending, then, scope, state)
                if scope.cancelled_caught:
                    overran = state.running
                if overran is not None and not state.abandoned:
                    state.running = None
                    with anyio.CancelScope(shield=True):
                        await self._timed_out(overran, time.perf_counter() - state.began)
        except BaseException as exc:  # KeyboardInterrupt, say: the watching task raises it
            state.fatal = exc
        finally:
            state.done.set()

    async def complete(self) -> None:
        """The phase is over: the DEBUG record, and ``on_complete``."""
        reports = self._reports
        if reports is None:
            return
        log_phase(reports, self._outcome.scope)
        hook = self._config.on_complete
        if hook is not None:
            with anyio.CancelScope(shield=True):
                await self._call_hook(hook, (tuple(reports), self._outcome))

    async def _run_until_timeout(
        self,
        pending: list[Entry],
        then: list[Entry] | None,
        scope: anyio.CancelScope,
        state: "_Run",
    ) -> Callable[..., Any] | None:
        """Run cleanups until ``pending`` is empty, or return the one that overran its timeout
        (or let its cancellation out, to ``scope``)."""
        timeout = self._timeout
        while pending and not state.abandoned:
            if not is_async_callable(pending[-1][0]):
                scope.deadline = math.inf
                await self._run_sync(pending, then)
                continue
            func, args, kwargs, context = pending.pop()
            state.running = func
            state.began = time.perf_counter()
            if timeout is not None:
                scope.deadline = anyio.current_time() + timeout
            try:
                await run_in_context(as_coroutine(context.run(func, *args, **kwargs)), context)
            except Exception as exc:
                if state.abandoned or scope.cancel_called:
                    return None if state.abandoned else func
                state.running = None
                scope.deadline = math.inf
                await self._failed(func, exc, time.perf_counter() - state.began)
                continue
            if state.abandoned:
                return None
            if scope.cancel_called:  # it caught its cancellation and carried on
                return func
            state.running = None
            self._record(func, time.perf_counter() - state.began, None, False)
        return None

    async def _await(self, awaitable: Awaitable[Any]) -> bool:
        """Await ``awaitable`` within the timeout; ``True`` if it was cancelled for overrunning."""
        if self._timeout is None:
            await awaitable
            return False
        with anyio.move_on_after(self._timeout) as scope:
            await awaitable
        return scope.cancel_called

    async def _run_sync(self, pending: list[Entry], then: list[Entry] | None) -> None:
        job = SyncJob(
            pending, then, describe_request(self._outcome.scope), self._reports is not None
        )
        done = anyio.Event()
        job.notify = partial(loop_caller(), done.set)
        self._config.pool.submit(job.run)
        abandoned = None
        timeout = self._timeout
        if timeout is None:
            await done.wait()
        else:
            wait = timeout
            while True:
                with anyio.move_on_after(wait):
                    await done.wait()
                if done.is_set():
                    break
                overdue = job.overdue(timeout)
                if overdue is None:
                    await done.wait()
                    break
                wait, abandoned = overdue
                if abandoned is not None:
                    break
        for func, seconds, error in job.take_results():
            if error is None:
                self._record(func, seconds, None, False)
            else:
                await self._failed(func, error, seconds)
        if abandoned is not None:
            seconds = time.monotonic() - job.started_at
            await self._timed_out(abandoned[0], seconds, waiting=job.current is None)
            return
        if job.fatal is not None:
            raise job.fatal
        if job.awaitable is not None and job.current is not None:
            func = job.current[0]
            began = job.started_at
            try:
                context = job.current[3]
                timed_out = await self._await(run_in_context(as_coroutine(job.awaitable), context))
            except Exception as exc:
                await self._failed(func, exc, time.monotonic() - began)
            else:
                if timed_out:
                    await self._timed_out(func, time.monotonic() - began)
                else:
                    self._record(func, time.monotonic() - began, None, False)

    def _record(
        self, func: Callable[..., Any], seconds: float, exc: BaseException | None, timed_out: bool
    ) -> None:
        if self._reports is not None:
            self._reports.append(CleanupReport(func, seconds, exc, timed_out))

    async def _failed(self, func: Callable[..., Any], exc: BaseException, seconds: float) -> None:
        log_failure(func, exc, self._outcome.scope)
        await self._report(func, exc)
        self._record(func, seconds, exc, False)

    async def _timed_out(
        self, func: Callable[..., Any], seconds: float, waiting: bool = False
    ) -> None:
        log_timeout(func, self._timeout, self._outcome.scope, waiting)
        exc = TimeoutError(f"cleanup timed out after {self._timeout:g}s")
        await self._report(func, exc)
        self._record(func, seconds, exc, True)

    async def _report(self, func: Callable[..., Any], exc: BaseException) -> None:
        hook = self._config.on_error
        if hook is not None:
            await self._call_hook(hook, (func, exc, self._outcome))

    async def _call_hook(self, hook: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result) and await self._await(result):
                raise TimeoutError(f"hook timed out after {self._timeout:g}s")
        except Exception as hook_exc:
            log_hook_failure(hook, hook_exc, self._outcome.scope)


class _Run:
    """What the task running cleanups tells the task watching it."""

    __slots__ = ("abandoned", "began", "done", "fatal", "running")

    def __init__(self) -> None:
        self.running: Callable[..., Any] | None = None  # the async cleanup running now
        self.began = 0.0  # when it started (time.perf_counter())
        self.abandoned = False
        self.fatal: BaseException | None = None
        self.done = anyio.Event()
