"""The cleanup phase on any anyio backend (used on trio), shielded from cancellation.

Async cleanups are awaited in a shielded cancel scope whose deadline follows each one's
timeout; sync cleanups run in the middleware's worker threads, one thread hop per run of
consecutive ones.
"""

import inspect
import math
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
    log_timeout,
    run_in_context,
)
from ._describe import describe_request
from ._sync_jobs import SyncJob
from ._threads import loop_caller
from .outcome import Outcome
from .registry import Entry


class AnyioPhase:
    """One request's cleanup phase. Failures and timeouts are logged and reported to the
    ``on_error`` hook; ``BaseException``s that are not ``Exception`` propagate."""

    def __init__(self, outcome: Outcome, config: PhaseConfig) -> None:
        self._outcome = outcome
        self._timeout = config.timeout
        self._pool = config.pool
        self._on_error = config.on_error
        self._running: Callable[..., Any] | None = None  # the async cleanup running now

    async def run(self, pending: list[Entry]) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order).

        One shielded cancel scope serves a whole run of cleanups: its deadline is moved to
        each async cleanup's own. A scope cannot be un-cancelled, so after a timeout the rest
        runs in a new one.
        """
        while pending:
            overran = None
            with anyio.CancelScope(shield=True) as scope:
                overran = await self._run_until_timeout(pending, scope)
            if scope.cancelled_caught:
                overran = self._running
            if overran is not None:
                with anyio.CancelScope(shield=True):
                    await self._timed_out(overran)

    async def _run_until_timeout(
        self, pending: list[Entry], scope: anyio.CancelScope
    ) -> Callable[..., Any] | None:
        """Run cleanups until ``pending`` is empty, or return the one that overran its timeout
        (or let its cancellation out, to ``scope``)."""
        timeout = self._timeout
        while pending:
            if not is_async_callable(pending[-1][0]):
                scope.deadline = math.inf
                await self._run_sync(pending)
                continue
            func, args, kwargs, context = pending.pop()
            self._running = func
            if timeout is not None:
                scope.deadline = anyio.current_time() + timeout
            try:
                await run_in_context(as_coroutine(context.run(func, *args, **kwargs)), context)
            except Exception as exc:
                if scope.cancel_called:
                    return func
                scope.deadline = math.inf
                await self._failed(func, exc)
                continue
            if scope.cancel_called:  # it caught its cancellation and carried on
                return func
        return None

    async def _await(self, awaitable: Awaitable[Any]) -> bool:
        """Await ``awaitable`` within the timeout; ``True`` if it was cancelled for overrunning."""
        if self._timeout is None:
            await awaitable
            return False
        with anyio.move_on_after(self._timeout) as scope:
            await awaitable
        return scope.cancel_called

    async def _run_sync(self, pending: list[Entry]) -> None:
        scope = self._outcome.scope
        job = SyncJob(pending, describe_request(scope))
        done = anyio.Event()
        job.notify = partial(loop_caller(), done.set)
        self._pool.submit(job.run)
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
        for func, exc in job.take_failures():
            await self._failed(func, exc)
        if abandoned is not None:
            await self._timed_out(abandoned[0], waiting=job.current is None)
            return
        if job.fatal is not None:
            raise job.fatal
        if job.awaitable is not None and job.current is not None:
            func = job.current[0]
            try:
                context = job.current[3]
                timed_out = await self._await(run_in_context(as_coroutine(job.awaitable), context))
            except Exception as exc:
                await self._failed(func, exc)
            else:
                if timed_out:
                    await self._timed_out(func)

    async def _failed(self, func: Callable[..., Any], exc: BaseException) -> None:
        log_failure(func, exc, self._outcome.scope)
        await self._report(func, exc)

    async def _timed_out(self, func: Callable[..., Any], waiting: bool = False) -> None:
        log_timeout(func, self._timeout, self._outcome.scope, waiting)
        await self._report(func, TimeoutError(f"cleanup timed out after {self._timeout:g}s"))

    async def _report(self, func: Callable[..., Any], exc: BaseException) -> None:
        hook = self._on_error
        if hook is None:
            return
        try:
            result = hook(func, exc, self._outcome)
            if inspect.isawaitable(result) and await self._await(result):
                raise TimeoutError(f"on_error hook timed out after {self._timeout:g}s")
        except Exception as hook_exc:
            log_hook_failure(hook, hook_exc, self._outcome.scope)
