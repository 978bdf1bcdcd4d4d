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
from ._types import Scope
from .registry import Entry

logger = logging.getLogger("asgi_cleanup")

_NO_KWARGS: dict[str, Any] = {}


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: coroutine functions, objects whose
    ``__call__`` is one, and ``functools.partial`` of either."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )


class CleanupRunner:
    """Runs cleanups one after another, each isolated from the others and bounded in time.

    Failures and timeouts are logged at ERROR on the ``asgi_cleanup`` logger and never raised;
    ``BaseException``s that are not ``Exception`` (``KeyboardInterrupt``, ``SystemExit``)
    propagate. The runner assumes its caller has shielded it from cancellation.
    """

    __slots__ = ("_pool", "_scope", "_timeout")

    def __init__(self, scope: Scope, timeout: float | None, pool: WorkerPool) -> None:
        self._scope = scope
        self._timeout = timeout
        self._pool = pool

    async def run(self, pending: list[Entry]) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order)."""
        while pending:
            if is_async_callable(pending[-1][0]):
                func, args, kwargs = pending.pop()
                await self._run_async(func, args, kwargs)
                continue
            # One thread hop for every run of consecutive sync cleanups.
            batch = [pending.pop()]
            while pending and not is_async_callable(pending[-1][0]):
                batch.append(pending.pop())
            await self._run_sync_batch(batch)

    async def _run_async(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        try:
            awaitable = func(*args, **kwargs)
            await self._await(func, awaitable)
        except Exception as exc:
            self._failed(func, exc)

    async def _await(self, func: Callable[..., Any], awaitable: Awaitable[Any]) -> None:
        if self._timeout is None:
            await awaitable
            return
        with anyio.move_on_after(self._timeout) as scope:
            await awaitable
        if scope.cancel_called:
            self._timed_out(func)

    async def _run_sync_batch(self, batch: list[Entry]) -> None:
        start = 0
        while start < len(batch):
            job = _SyncJob(batch, start, self._failed)
            done = anyio.Event()
            job.notify = functools.partial(loop_caller(), done.set)
            self._pool.submit(job.run)
            await self._wait_for(job, done)
            if job.fatal is not None:
                raise job.fatal
            if job.abandoned_at is not None:
                if job.abandoned_at < 0:
                    for func, _, _ in batch[start:]:
                        self._timed_out(func, waiting=True)
                    return
                self._timed_out(batch[job.abandoned_at][0])
                start = job.abandoned_at + 1
                continue
            if job.awaitable is not None:
                func = batch[job.next - 1][0]
                try:
                    await self._await(func, job.awaitable)
                except Exception as exc:
                    self._failed(func, exc)
            start = job.next

    async def _wait_for(self, job: "_SyncJob", done: anyio.Event) -> None:
        timeout = self._timeout
        if timeout is None:
            await done.wait()
            return
        wait = timeout
        while True:
            with anyio.move_on_after(wait):
                await done.wait()
            if done.is_set():
                return
            with job.lock:
                if job.finished:
                    break
                wait = job.started_at + timeout - time.monotonic()
                if wait <= 0:
                    job.abandoned_at = job.index
                    return
        await done.wait()

    def _failed(self, func: Callable[..., Any], exc: BaseException) -> None:
        logger.error(
            "Cleanup %s failed for %s",
            describe_callable(func),
            describe_request(self._scope),
            exc_info=exc,
        )

    def _timed_out(self, func: Callable[..., Any], waiting: bool = False) -> None:
        reason = "waiting for a free worker thread" if waiting else "and was abandoned"
        logger.error(
            "Cleanup %s timed out after %gs %s for %s",
            describe_callable(func),
            self._timeout,
            reason,
            describe_request(self._scope),
        )


class _SyncJob:
    """Runs a slice of a batch of sync cleanups in one worker thread.

    The event loop side may abandon the job when the running cleanup overruns its timeout;
    the thread then starts nothing more, and the loop runs what is left.
    """

    def __init__(
        self,
        batch: list[Entry],
        start: int,
        failed: Callable[[Callable[..., Any], BaseException], None],
    ) -> None:
        self.batch = batch
        self.next = start
        self.index = -1  # the cleanup running now; -1 while waiting for a thread
        self.started_at = time.monotonic()
        self.lock = threading.Lock()
        self.abandoned_at: int | None = None
        self.finished = False
        self.awaitable: Awaitable[Any] | None = None
        self.fatal: BaseException | None = None
        self.notify: Callable[[], Any] = _noop
        self._failed = failed

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
        batch = self.batch
        for index in range(self.next, len(batch)):
            with self.lock:
                if self.abandoned_at is not None:
                    return
                self.index = index
                self.started_at = time.monotonic()
            func, args, kwargs = batch[index]
            self.next = index + 1
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                self._failed(func, exc)
                continue
            if inspect.isawaitable(result):
                self.awaitable = result
                return


def _noop() -> None:
    pass
