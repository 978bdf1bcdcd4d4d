"""Runs one request's cleanups: order, async/sync dispatch, thread hops, timeouts, logging."""

import contextlib
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._describe import describe_callable, describe_request
from ._threads import WorkerPool, loop_caller
from .outcome import Outcome
from .registry import CleanupRegistry, Entry

logger = logging.getLogger("asgi_cleanup")


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: coroutine functions, objects whose
    ``__call__`` is one, and ``functools.partial`` of either."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


ErrorHook = Callable[[Callable[..., Any], BaseException, Outcome], Any]
Directive = Callable[[Outcome], Any]


class CleanupRunner:
    """Runs the cleanup phases of one middleware's requests.

    Cleanups run one after another, each isolated from the others and bounded in time.
    Failures and timeouts are logged at ERROR on the ``asgi_cleanup`` logger, reported to the
    ``on_error`` hook if there is one, and never raised; ``BaseException``s that are not
    ``Exception`` (``KeyboardInterrupt``, ``SystemExit``) propagate. The caller shields the
    phase from cancellation.
    """

    __slots__ = ("_on_error", "_pool", "_timeout")

    def __init__(
        self, timeout: float | None, pool: WorkerPool, on_error: ErrorHook | None = None
    ) -> None:
        self._timeout = timeout
        self._pool = pool
        self._on_error = on_error

    async def run_phase(
        self,
        registry: CleanupRegistry,
        entries: list[Entry] | None,
        directives: tuple[Directive, ...],
        outcome: Outcome,
    ) -> None:
        """Freeze-time work is done: set the outcome, run the dynamic cleanups LIFO, then the
        directive cleanups in order."""
        registry._start(outcome)
        if entries:
            await self.run(entries, outcome)
        if directives:
            await self.run([(d, (outcome,), {}) for d in reversed(directives)], outcome)

    async def run(self, pending: list[Entry], outcome: Outcome) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order)."""
        while pending:
            if is_async_callable(pending[-1][0]):
                func, args, kwargs = pending.pop()
                await self._run_async(func, args, kwargs, outcome)
            else:
                await self._run_sync(pending, outcome)

    async def _run_async(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        outcome: Outcome,
    ) -> None:
        try:
            timed_out = await self._await(func(*args, **kwargs))
        except Exception as exc:
            await self._failed(func, exc, outcome)
        else:
            if timed_out:
                await self._timed_out(func, outcome)

    async def _await(self, awaitable: Awaitable[Any]) -> bool:
        """Await ``awaitable`` within the timeout; ``True`` if it was cancelled for overrunning."""
        if self._timeout is None:
            await awaitable
            return False
        with anyio.move_on_after(self._timeout) as scope:
            await awaitable
        return scope.cancel_called

    async def _run_sync(self, pending: list[Entry], outcome: Outcome) -> None:
        """Run the sync cleanups at the end of ``pending`` in one worker thread."""
        job = _SyncJob(pending, describe_request(outcome.scope))
        done = anyio.Event()
        job.notify = functools.partial(loop_caller(), done.set)
        self._pool.submit(job.run)
        abandoned = None
        if self._timeout is None:
            await done.wait()
        else:
            abandoned = await self._wait_or_abandon(job, done, self._timeout)
        for func, exc in job.take_failures():
            await self._failed(func, exc, outcome)
        if abandoned is not None:
            await self._timed_out(abandoned[0], outcome, waiting=job.current is None)
            return
        if job.fatal is not None:
            raise job.fatal
        if job.awaitable is not None and job.current is not None:
            func = job.current[0]
            try:
                timed_out = await self._await(job.awaitable)
            except Exception as exc:
                await self._failed(func, exc, outcome)
            else:
                if timed_out:
                    await self._timed_out(func, outcome)

    async def _wait_or_abandon(
        self, job: "_SyncJob", done: anyio.Event, limit: float
    ) -> Entry | None:
        """Wait for ``job``; return the entry abandoned if one overran ``limit`` seconds.

        The deadline follows the job from cleanup to cleanup; while the job waits for a free
        thread, it runs from the submission.
        """
        wait = limit
        while True:
            with anyio.move_on_after(wait):
                await done.wait()
            if done.is_set():
                return None
            with job.lock:
                if job.finished:
                    break
                wait = job.started_at + limit - time.monotonic()
                if wait <= 0:
                    job.abandoned = True
                    if job.current is not None:
                        return job.current
                    # No thread was free in time: the next cleanup is given up unrun.
                    return job.pending.pop()
        await done.wait()
        return None

    async def _failed(self, func: Callable[..., Any], exc: BaseException, outcome: Outcome) -> None:
        logger.error(
            "Cleanup %s failed for %s",
            describe_callable(func),
            describe_request(outcome.scope),
            exc_info=exc,
        )
        await self._report(func, exc, outcome)

    async def _timed_out(
        self, func: Callable[..., Any], outcome: Outcome, waiting: bool = False
    ) -> None:
        reason = "waiting for a free worker thread" if waiting else "and was abandoned"
        logger.error(
            "Cleanup %s timed out after %gs %s for %s",
            describe_callable(func),
            self._timeout,
            reason,
            describe_request(outcome.scope),
        )
        error = TimeoutError(f"cleanup timed out after {self._timeout:g}s")
        await self._report(func, error, outcome)

    async def _report(self, func: Callable[..., Any], exc: BaseException, outcome: Outcome) -> None:
        hook = self._on_error
        if hook is None:
            return
        try:
            result = hook(func, exc, outcome)
            if inspect.isawaitable(result) and await self._await(result):
                raise TimeoutError(f"on_error hook timed out after {self._timeout:g}s")
        except Exception as hook_exc:
            logger.error(
                "on_error hook %s failed for %s",
                describe_callable(hook),
                describe_request(outcome.scope),
                exc_info=hook_exc,
            )


class _SyncJob:
    """Runs the sync cleanups at the end of a pending list in one worker thread.

    The thread pops each entry just before running it, so every entry is run once, by the
    thread or later by the event loop. Failures are collected for the event loop to report.
    The event loop may abandon the job when the running cleanup overruns its timeout; the
    thread then starts nothing more, and logs a later failure of that cleanup itself.
    """

    def __init__(self, pending: list[Entry], request: str) -> None:
        self.pending = pending
        self.current: Entry | None = None  # the cleanup running now (or last run)
        self.started_at = time.monotonic()
        self.lock = threading.Lock()
        self.abandoned = False
        self.finished = False
        self.awaitable: Awaitable[Any] | None = None
        self.fatal: BaseException | None = None
        self.notify: Callable[[], Any] = _noop
        self._failures: list[tuple[Callable[..., Any], Exception]] = []
        self._request = request

    def take_failures(self) -> list[tuple[Callable[..., Any], Exception]]:
        with self.lock:
            failures, self._failures = self._failures, []
            return failures

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # re-raised on the event loop, not lost in this thread
            self.fatal = exc
        with self.lock:
            self.finished = True
        with contextlib.suppress(Exception):  # the event loop is gone: nobody waits any more
            self.notify()

    def _run(self) -> None:
        pending = self.pending
        while True:
            with self.lock:
                if self.abandoned or not pending or is_async_callable(pending[-1][0]):
                    return
                self.current = func, args, kwargs = pending.pop()
                self.started_at = time.monotonic()
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                with self.lock:
                    if not self.abandoned:
                        self._failures.append((func, exc))
                        continue
                logger.error(
                    "Cleanup %s failed after it was abandoned for %s",
                    describe_callable(func),
                    self._request,
                    exc_info=exc,
                )
                return
            if inspect.isawaitable(result):
                self.awaitable = result
                return


def _noop() -> None:
    pass
