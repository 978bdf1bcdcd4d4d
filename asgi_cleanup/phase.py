"""A request's cleanup phase.

Dynamic cleanups run last registered first, then directive cleanups, each once. Consecutive
async ones share a task of the phase's (``_batch``), which no other request shares, so that one
can be abandoned at its timeout; consecutive sync ones share one hop to a worker thread.
"""

import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio

from . import _log
from ._backend import CleanupTask, start_task, unshield
from ._batch import AsyncBatch, AsyncPlaces
from ._describe import describe_request, is_async_callable
from ._log import TimedOut
from ._phases import Phases
from ._threads import SyncJob
from ._waiter import Waiter
from ._watch import PhaseWatch
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry, Directive, Entry, hold_outcome, is_release, let_go

logger = logging.getLogger("asgi_cleanup")

ABANDON_GRACE = 1.0  # how long past its timeout a cancelled cleanup may take to stop


Ran = tuple[Entry, float, Any]  # a cleanup's entry, when it began, and _record's result
# The kwargs of every directive entry, which tell them apart; never changed (calls unpack it).
_DIRECTIVE_KWARGS: dict[str, Any] = {}


def is_directive(entry: Entry) -> bool:
    """Whether ``entry`` is a directive cleanup's, not a registered one's."""
    return entry[2] is _DIRECTIVE_KWARGS


class CleanupPhase:
    """Runs one request's cleanups. Failures and timeouts are logged and go to ``on_error``; a
    ``BaseException`` that is not an ``Exception`` lets the rest run first."""

    _watch: PhaseWatch | None = None  # with telemetry on: told as each cleanup starts and ends

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
            args, context = (self._outcome,), contextvars.copy_context()
            kwargs = _DIRECTIVE_KWARGS
            self._later = [(d, args, kwargs, context.copy()) for d in reversed(directives)]
        observing = phases.on_complete is not None or logger.isEnabledFor(logging.DEBUG)
        self._reports: list[CleanupReport] | None = [] if observing else None
        self._waiter: Waiter | None = None  # made when the phase first has to wait
        self._current: CleanupTask | None = None
        self._fatal: BaseException | None = None
        self._detached = False
        if phases.telemetry is not None:
            self._watch = phases.telemetry.phase()

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
            if self._watch is not None:
                self._watch.finished()
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
        for pending, then in ((self._entries, self._later), (self._later, None)):
            while pending:
                if is_async_callable(pending[-1][0]):
                    places = self._phases.places
                    results = await self._run_async(pending, None, places, self._watch)
                else:
                    results = await self._run_sync(pending, then)
                for entry, began, result in results:
                    if result is not None or self._reports is not None:
                        await self._record(entry, began, result)
        hook = self._phases.on_complete
        if self._reports is not None:
            _log.log_phase(self._reports, self._request())
            if hook is not None:
                await self._call_hook("on_complete", hook, tuple(self._reports), self._outcome)

    async def _wait(self, signal: Any, deadline: float | None) -> bool:
        if self._waiter is None:
            self._waiter = Waiter(self._phases.shutdown_timeout, self._phases.released)
        return await self._waiter.wait(signal, deadline)

    async def _run_async(
        self,
        pending: list[Entry],
        began: float | None = None,
        places: AsyncPlaces | None = None,
        watch: PhaseWatch | None = None,
    ) -> list[Ran]:
        """The async cleanups at the end of ``pending``, in a task of their own (``_batch``),
        each once it has one of ``places``, if given; the first began at ``began``, if given;
        ``watch`` is told as each starts and ends."""
        timeout = self._phases.timeout
        batch = AsyncBatch(pending, timeout, began, places, watch)
        task = self._current = start_task(batch.run(), contextvars.copy_context())
        abandoned: list[Ran] = []
        try:
            while not task.done():
                seq = batch.seq
                if timeout is None or not seq:
                    # Nothing to time (yet): wait for the next to begin or end.
                    await self._wait(batch.step(), None)
                    continue
                deadline = batch.began + timeout
                if await self._wait(batch.step(), deadline) or batch.seq != seq:
                    continue
                if batch.waiting:
                    # It never had a place: it runs once one is free, as a sync cleanup
                    # waiting for a thread does, and drain() waits for it.
                    where, waiting_for = None, "a place among async_limit"
                else:
                    where, waiting_for = _log.suspended_traceback(batch.coro), ""
                    batch.cut(seq, where)
                    if await self._wait(batch.step(), deadline + min(ABANDON_GRACE, timeout)):
                        continue
                # It does not stop when cancelled: it goes on, and drain() waits for it.
                batch.abandoned = True
                self._phases.leave_behind(task, hold_outcome(self._registry))
                assert batch.current is not None
                abandoned.append((batch.current, batch.began, TimedOut(where, waiting_for)))
                if watch is not None:
                    watch.given_up(batch.current, batch.began)
                break
        except BaseException:
            unshield(task)  # the phase is cut short: the shutdown's bound has passed
            raise
        finally:
            self._current = None
        return batch.results + abandoned

    async def _run_sync(self, pending: list[Entry], then: list[Entry] | None) -> list[Ran]:
        """The sync cleanups at the end of ``pending`` (then ``then``): one thread hop."""
        timeout, pool = self._phases.timeout, self._phases.pool
        job = SyncJob(pending, then, self._request(), self._reports is not None, self._watch)
        around = self._phases.sync_run_context
        to_lane = job.keep_to_releases if is_release(pending[-1][0]) else None
        pool.submit(job.run if around is None else partial(job.run, around), to_lane)
        abandoned = None
        while not await self._wait(job.ended, job.deadline(timeout)):
            assert timeout is not None, "no deadline without a timeout"
            abandoned = job.abandon(timeout, pool, partial(hold_outcome, self._registry))
            if abandoned is not None:
                break
        now = time.monotonic()
        ran: list[Ran] = [(entry, now - seconds, error) for entry, seconds, error in job.results]
        watch = self._watch
        if watch is not None:
            for entry, seconds, error in job.results:
                watch.end(entry, error, seconds)
        if abandoned is not None:
            entry, where = abandoned
            waiting_for = "a free worker thread" if job.late is not None else ""
            ran.append((entry, job.started_at, TimedOut(where, waiting_for)))
            if watch is not None:
                watch.given_up(entry, job.started_at)
        elif job.current is not None and job.fatal is not None:
            ran.append((job.current, job.started_at, job.fatal))
            if watch is not None:
                watch.end(job.current, job.fatal, now - job.started_at)
        elif job.current is not None and job.awaitable is not None:
            # A sync cleanup returned an awaitable: awaited within what is left of its timeout.
            awaited: Entry = (_awaited, (job.awaitable,), {}, job.current[3])
            places = self._phases.places
            ((_, _, result),) = await self._run_async([awaited], job.started_at, places, watch)
            ran.append((job.current, job.started_at, result))
        return ran

    async def _record(self, entry: Entry, began: float, result: Any) -> None:
        """Report a cleanup that ended with ``result`` (``None``, an exception or a
        ``TimedOut``): log a failure and call ``on_error``; note it for ``on_complete``."""
        func, timed_out = entry[0], type(result) is TimedOut
        seconds = time.monotonic() - began
        why: tuple[Any, ...] = (_log.FAILED, "")  # the message and its arguments
        if timed_out:
            timeout, waiting_for = self._phases.timeout, result.waiting_for
            result = _log.timeout_error("cleanup", timeout, result.where)
            why = (
                (_log.WAITED_OUT, timeout, waiting_for)
                if waiting_for
                else (_log.TIMED_OUT, timeout)
            )
        # Its own cancellation (it cancelled its task, or raised the class) is a failure.
        elif result is not None and not isinstance(
            result, (Exception, anyio.get_cancelled_exc_class())
        ):
            self._fail_fatally(func, result)
            return
        if result is not None:
            message, *args = why
            source = "directive" if is_directive(entry) else "registered"
            fields = {"cleanup_source": source, "duration": seconds, "timed_out": timed_out}
            log = partial(_log.log_error, message, func, result, *args, self._request(), **fields)
            if self._watch is None:
                log()
            else:
                self._watch.current(entry, log)  # within its span, for a log handler to tie
            if self._phases.on_error is not None:
                hook = self._phases.on_error
                await self._call_hook("on_error", hook, func, result, self._outcome)
        if self._reports is not None:
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
            entry: Entry = (_awaited, (result,), {}, contextvars.copy_context())
            ((_, _, error),) = await self._run_async([entry], began)
        if type(error) is TimedOut:
            error = _log.timeout_error("hook", self._phases.timeout, error.where)
        if error is not None:
            _log.log_error(f"{role} hook %s failed for %s", hook, error, self._request())


async def _awaited(awaitable: Awaitable[Any]) -> None:
    await awaitable
