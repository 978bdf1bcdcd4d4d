"""The cleanup phase on any anyio backend (used on trio), shielded from cancellation.

``run_here`` runs the phase in the request's own task, in one shielded trio cancel scope:
an async cleanup's first step runs at once, and only one that suspends has the scope's
deadline set to its timeout, and a watching system task started (once per phase) that
leaves it behind ``ABANDON_GRACE`` past its timeout if it shields itself from the
cancellation. A trio task cannot hand a coroutine that has suspended to another, so the
abandoned cleanup goes on in the request's task, and the rest of the phase in the watcher.
Sync cleanups run in the middleware's worker threads, one thread hop per run of
consecutive ones. Before the phase, ``_trio_steps.run_first_steps`` may have run the first
async cleanups with no scope at all: ``run_here`` goes on with the one it stopped at (a
``Suspended`` one under the shield, moved outside the scopes its first step left open).

``run`` is the phase in system tasks of its own, watched from the caller's: what the
watcher goes on with after abandoning a cleanup.
"""

import contextvars
import inspect
import math
import time
import types
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING, Any, NamedTuple

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
    suspended_traceback,
    timeout_error,
)
from ._describe import describe_request
from ._sync_jobs import SyncJob
from ._threads import loop_caller
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry, Entry

if TYPE_CHECKING:
    import trio

_FunctionType = types.FunctionType
_CO_COROUTINE = inspect.CO_COROUTINE
_coroutine_send = types.CoroutineType.send

# How long past its timeout a cancelled cleanup may take to stop before it is left behind.
ABANDON_GRACE = 1.0
# Where run_here's loop goes on with the next cleanup.
_NEXT: Any = object()


class Suspended(NamedTuple):
    """An async cleanup whose first step ``_trio_steps.run_first_steps`` took outside any
    scope of ours, and which suspended: what it yielded is not yet passed on to trio."""

    coro: Any  # the coroutine, or the driver it suspended in (see _trio_steps)
    yielded: Any
    context: contextvars.Context
    status: Any  # the task's trio cancel status before the step


class AnyioPhase:
    """One request's cleanup phase. Failures and timeouts are logged and reported to the
    ``on_error`` hook; ``BaseException``s that are not ``Exception`` propagate."""

    def __init__(self, outcome: Outcome, config: PhaseConfig, registry: CleanupRegistry) -> None:
        self._outcome = outcome
        self._config = config
        self._registry = registry
        self._timeout = config.timeout
        self._reports: list[CleanupReport] | None = [] if config.observing() else None
        self._watch: _Watch | None = None  # run_here's watcher, once a cleanup suspended

    async def run_here(
        self,
        entries: list[Entry] | None,
        later: list[Entry] | None,
        carried: tuple[Callable[..., Any], Any, float] | None = None,
    ) -> None:
        """Run and remove the entries of ``entries``, then of ``later``, each from its end,
        in the caller's task (see the module's docstring); first, see to its end the cleanup
        ``_trio_steps.run_first_steps`` stopped at (``carried``), if any."""
        import trio

        try:
            for pending, then in ((entries or [], later), (later or [], None)):
                while pending or carried is not None:
                    overran = None
                    with trio.CancelScope(shield=True) as scope:
                        step, carried = carried, None
                        if step is not None and type(step[1]) is Suspended:
                            from ._trio_steps import enclose

                            enclose(scope, step[1].status)
                        overran = await self._run_here(pending, then, scope, step)
                    watch = self._watch
                    if watch is None:
                        continue  # nothing suspended under a timeout: nothing overran
                    if watch.abandoned:
                        return
                    if scope.cancelled_caught:  # its timeout's cancellation came out of it
                        overran = watch.running
                    if overran is not None:
                        # A scope cannot be un-cancelled: the rest go on in a new one.
                        seconds, where = perf_counter() - watch.began, watch.where
                        watch.stop()
                        with trio.CancelScope(shield=True):
                            await self._timed_out(overran, seconds, where)
        finally:
            watch = self._watch
            if watch is not None:
                if watch.abandoned:
                    # The watcher runs the rest of the phase: the phase ends with it.
                    with trio.CancelScope(shield=True):
                        await watch.done.wait()
                    if watch.fatal is not None:
                        raise watch.fatal
                else:
                    watch.finished = True
                    watch.scope.cancel()

    async def _run_here(
        self,
        pending: list[Entry],
        then: list[Entry] | None,
        scope: "trio.CancelScope",
        step: tuple[Callable[..., Any], Any, float] | None,
    ) -> Callable[..., Any] | None:
        """Run cleanups, first the rest of ``step`` (see ``run_here``), until ``pending`` is
        empty; or return the one that overran its timeout (the scope is then cancelled), or
        return once the watcher took over."""
        reports = self._reports
        while step is not None or pending:
            if step is not None:
                func, result, began = step
                step = None
                if type(result) is not Suspended:  # its first step raised
                    await self._failed(func, result, perf_counter() - began)
                    continue
            else:
                func, args, kwargs, context = pending[-1]
                awaitable = None
                if type(func) is _FunctionType and func.__code__.co_flags & _CO_COROUTINE:
                    calls_code = False  # calling a coroutine function runs none of its code
                elif is_async_callable(func):
                    calls_code = True
                else:
                    returned = await self._run_sync(pending, then)
                    if returned is None:
                        continue
                    func, awaitable, context = returned
                if awaitable is None:
                    pending.pop()
                began = perf_counter()
                try:
                    if awaitable is not None:
                        coro = as_coroutine(awaitable)
                    elif calls_code:
                        coro = as_coroutine(context.run(func, *args, **kwargs))
                    else:
                        coro = func(*args, **kwargs) if kwargs else func(*args)
                    try:
                        yielded = context.run(_coroutine_send, coro, None)
                    except StopIteration:
                        if reports is not None:
                            reports.append(CleanupReport(func, perf_counter() - began, None, False))
                        continue
                except Exception as exc:
                    await self._failed(func, exc, perf_counter() - began)
                    continue
                result = Suspended(coro, yielded, context, None)
            # It suspended: from now on under its timeout, and watched.
            overran = await self._finish(func, result, began, pending, then, scope)
            if overran is not _NEXT:
                return overran  # type: ignore[no-any-return]
        return None

    async def _finish(
        self,
        func: Callable[..., Any],
        suspended: Suspended,
        began: float,
        pending: list[Entry],
        then: list[Entry] | None,
        scope: "trio.CancelScope",
    ) -> Any:
        """Go on with a cleanup that suspended in its first step, under its timeout, and
        watched. Returns ``_NEXT``, or what ``_run_here`` returns."""
        import trio

        timeout = self._timeout
        watch = self._watch
        if timeout is not None:
            deadline = trio.current_time() + timeout - (perf_counter() - began)
            if watch is None:
                self._watch = watch = _Watch()
                trio.lowlevel.spawn_system_task(
                    self._watching, watch, context=contextvars.copy_context()
                )
            watch.start(func, began, deadline, suspended.coro, scope, pending, then)
        try:
            await run_in_context(suspended.coro, suspended.context, suspended.yielded)
        except Exception as exc:
            ended = self._stop_watching(func, scope)
            if ended is not _NEXT:
                return ended
            await self._failed(func, exc, perf_counter() - began)
            return _NEXT
        ended = self._stop_watching(func, scope)
        if ended is not _NEXT:
            return ended
        if self._reports is not None:
            self._reports.append(CleanupReport(func, perf_counter() - began, None, False))
        return _NEXT

    def _stop_watching(self, func: Callable[..., Any], scope: "trio.CancelScope") -> Any:
        """A cleanup that suspended has ended: ``_NEXT``; or, if it was watched, ``None`` if
        the watcher took over, or ``func`` if it ran past its timeout."""
        watch = self._watch
        if watch is None:  # no timeout
            return _NEXT
        if watch.abandoned:
            return None
        if scope.cancel_called or watch.overdue():  # it caught its cancellation and carried on
            return func
        watch.stop()
        return _NEXT

    async def _watching(self, watch: "_Watch") -> None:
        """Wake at each suspended cleanup's deadline: if it is still running, note where it
        is and cancel it; and at its abandon time: if it is still running, report it timed
        out and run the rest of the phase here."""
        import trio

        while not watch.finished:
            with trio.CancelScope(deadline=watch.wake_at()) as watch.scope:
                await trio.sleep_forever()
            if watch.finished:
                return
            if watch.running is None:
                continue
            if not watch.expired:
                if watch.overdue():
                    watch.expire()
                continue
            if trio.current_time() < watch.abandon_at:
                continue
            watch.abandoned = True
            try:
                with trio.CancelScope(shield=True):
                    seconds = perf_counter() - watch.began
                    await self._timed_out(watch.running, seconds, watch.where)
                    pending, then = watch.pending, watch.then
                    await self.run(pending, then)
                    if then:
                        await self.run(then)
            except BaseException as exc:  # KeyboardInterrupt, say: the request task raises it
                watch.fatal = exc
            finally:
                watch.done.set()
            return

    async def run(self, pending: list[Entry], then: list[Entry] | None = None) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order).

        The cleanups run in a task of their own that this one watches: at an async cleanup's
        timeout it notes where the cleanup is and cancels it; one still running
        ``ABANDON_GRACE`` later (it shields itself from the cancellation) is left behind
        there, and the rest go on in a new task.
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
                        wait = state.began + timeout - time.perf_counter()
                        if not state.expired:
                            if wait <= 0:
                                state.expire()
                                continue
                        else:
                            wait += ABANDON_GRACE
                            if wait <= 0:
                                state.abandoned = True
                                seconds = time.perf_counter() - state.began
                                await self._timed_out(running, seconds, state.where)
                                break
                    state.wake = anyio.Event()
                    with anyio.move_on_after(wait):
                        await state.wake.wait()
            if state.fatal is not None:
                raise state.fatal

    async def _execute(self, pending: list[Entry], then: list[Entry] | None, state: "_Run") -> None:
        """Run cleanups in one shielded cancel scope, which the watching task cancels at an
        async cleanup's timeout; a scope cannot be un-cancelled, so after a timeout, in a new
        one."""
        try:
            while pending and not state.abandoned:
                overran = None
                with anyio.CancelScope(shield=True) as scope:
                    overran = await self._run_until_timeout(pending, then, scope, state)
                if scope.cancelled_caught:
                    overran = state.running
                if overran is not None and not state.abandoned:
                    seconds, where = time.perf_counter() - state.began, state.where
                    state.stop()
                    with anyio.CancelScope(shield=True):
                        await self._timed_out(overran, seconds, where)
        except BaseException as exc:  # KeyboardInterrupt, say: the watching task raises it
            state.fatal = exc
        finally:
            state.done.set()
            state.wake.set()

    async def complete(self) -> None:
        """The phase is over: the DEBUG record, and ``on_complete``."""
        reports = self._reports
        if reports is None:
            return
        log_phase(reports, self._outcome.scope)
        hook = self._config.on_complete
        if hook is not None:
            with anyio.CancelScope(shield=True):
                await self._call_hook("on_complete", hook, (tuple(reports), self._outcome))

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
            awaitable = None
            if is_async_callable(pending[-1][0]):
                func, args, kwargs, context = pending.pop()
            else:
                returned = await self._run_sync(pending, then)
                if returned is None:
                    continue
                func, awaitable, context = returned
            state.start(func, scope)
            try:
                if awaitable is None:
                    awaitable = context.run(func, *args, **kwargs)
                state.coro = as_coroutine(awaitable)
                await run_in_context(state.coro, context)
            except Exception as exc:
                if state.abandoned or scope.cancel_called or state.overran(timeout):
                    return None if state.abandoned else func
                seconds = time.perf_counter() - state.began
                state.stop()
                await self._failed(func, exc, seconds)
                continue
            if state.abandoned:
                return None
            if scope.cancel_called or state.overran(timeout):  # it caught its cancellation
                return func
            seconds = time.perf_counter() - state.began
            state.stop()
            self._record(func, seconds, None, False)
        return None

    async def _await(self, awaitable: Awaitable[Any]) -> bool:
        """Await a hook's ``awaitable`` within the timeout; ``True`` if it was cancelled for
        overrunning."""
        if self._timeout is None:
            await awaitable
            return False
        with anyio.move_on_after(self._timeout) as scope:
            await awaitable
        return scope.cancel_called

    async def _run_sync(
        self, pending: list[Entry], then: list[Entry] | None
    ) -> tuple[Callable[..., Any], Awaitable[Any], contextvars.Context] | None:
        """Run the sync cleanups at the end of ``pending`` (then of ``then``) in one thread
        hop, and report them; if the last one returned an awaitable, return it with the
        cleanup and its context, for the caller to await as it awaits an async cleanup."""
        job = SyncJob(
            pending, then, describe_request(self._outcome.scope), self._reports is not None
        )
        done = anyio.Event()
        job.notify = partial(loop_caller(), done.set)
        self._config.pool.submit(job.run)
        abandoned = where = None
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
                overdue = job.overdue(timeout, self._config.pool, self._registry)
                if overdue is None:
                    await done.wait()
                    break
                wait, abandoned = overdue
                if abandoned is not None:
                    where = job.where()
                    break
        for func, seconds, error in job.take_results():
            if error is None:
                self._record(func, seconds, None, False)
            else:
                await self._failed(func, error, seconds)
        if abandoned is not None:
            seconds = time.monotonic() - job.started_at
            await self._timed_out(abandoned[0], seconds, where, waiting=job.late is not None)
            return None
        if job.fatal is not None:
            raise job.fatal
        if job.awaitable is not None and job.current is not None:
            return job.current[0], job.awaitable, job.current[3]
        return None

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
        self,
        func: Callable[..., Any],
        seconds: float,
        where: types.TracebackType | None,
        waiting: bool = False,
    ) -> None:
        """Log and report ``func`` past its timeout; ``where`` it was then, if known."""
        exc = timeout_error(self._timeout, where)
        log_timeout(func, self._timeout, self._outcome.scope, exc, waiting)
        await self._report(func, exc)
        self._record(func, seconds, exc, True)

    async def _report(self, func: Callable[..., Any], exc: BaseException) -> None:
        hook = self._config.on_error
        if hook is not None:
            await self._call_hook("on_error", hook, (func, exc, self._outcome))

    async def _call_hook(self, role: str, hook: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result) and await self._await(result):
                raise TimeoutError(f"hook timed out after {self._timeout:g}s")
        except Exception as hook_exc:
            log_hook_failure(role, hook, hook_exc, self._outcome.scope)


class _Watched:
    """The async cleanup running under a timeout, as the task watching it sees it."""

    __slots__ = ("began", "coro", "expired", "running", "target", "where")

    def __init__(self) -> None:
        self.running: Callable[..., Any] | None = None  # the async cleanup running now
        self.began = 0.0  # when it started (perf_counter())
        self.coro: Any = None  # what it runs in: its coroutine, or a driver (see Suspended)
        self.target: anyio.CancelScope | trio.CancelScope | None = None  # the scope it runs in
        self.expired = False  # its timeout came: it was cancelled
        self.where: types.TracebackType | None = None  # where it was then

    def expire(self) -> None:
        """Note where the cleanup running is, then cancel it: its timeout."""
        assert self.target is not None, "a cleanup is running"
        self.where = suspended_traceback(self.coro)
        self.expired = True
        self.target.cancel()

    def stop(self) -> None:
        """Nothing runs under watch now; let go of it, and of where it was (its frames)."""
        self.running = self.coro = self.target = self.where = None


class _Run(_Watched):
    """What the task running cleanups tells the task watching it."""

    __slots__ = ("abandoned", "done", "fatal", "wake")

    def __init__(self) -> None:
        super().__init__()
        self.abandoned = False
        self.fatal: BaseException | None = None
        self.done = anyio.Event()
        self.wake = anyio.Event()  # for the watching task: a cleanup started, or all are done

    def start(self, func: Callable[..., Any], target: anyio.CancelScope) -> None:
        """``func`` starts in ``target``: the watching task looks at its timeout."""
        self.running = func
        self.began = time.perf_counter()
        self.coro = None
        self.target = target
        self.expired = False
        self.where = None
        self.wake.set()

    def overran(self, timeout: float | None) -> bool:
        """Whether the cleanup running has reached its timeout."""
        return timeout is not None and time.perf_counter() - self.began >= timeout


class _Watch(_Watched):
    """What the request task running cleanups tells the system task watching them."""

    __slots__ = (
        "abandon_at",
        "abandoned",
        "deadline",
        "done",
        "fatal",
        "finished",
        "pending",
        "scope",
        "then",
    )

    def __init__(self) -> None:
        import trio

        super().__init__()
        self.deadline = math.inf  # when to cancel the cleanup (trio.current_time())
        self.abandon_at = math.inf  # when to leave it behind (trio.current_time())
        self.pending: list[Entry] = []
        self.then: list[Entry] | None = None
        self.abandoned = False
        self.finished = False
        self.fatal: BaseException | None = None
        self.done = trio.Event()
        self.scope = trio.CancelScope()  # the watcher's sleep, until it starts

    def start(
        self,
        func: Callable[..., Any],
        began: float,
        deadline: float,
        coro: Any,
        target: "trio.CancelScope",
        pending: list[Entry],
        then: list[Entry] | None,
    ) -> None:
        """Watch ``func``, suspended in ``coro`` inside ``target``, from now on."""
        self.running = func
        self.began = began
        self.deadline = deadline
        self.abandon_at = deadline + ABANDON_GRACE
        self.coro = coro
        self.target = target
        self.expired = False
        self.where = None
        self.pending = pending
        self.then = then
        self.scope.deadline = deadline

    def wake_at(self) -> float:
        return self.abandon_at if self.expired else self.deadline

    def overdue(self) -> bool:
        """Whether the cleanup watched has reached its deadline."""
        import trio

        return trio.current_time() >= self.deadline

    def stop(self) -> None:
        """The suspended cleanup is over: nothing to watch until the next one (the watcher
        would otherwise wake at its stale abandon time over and over)."""
        super().stop()
        self.deadline = self.abandon_at = math.inf
