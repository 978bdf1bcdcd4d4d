"""The cleanup phase on asyncio, cheap when cleanups do not suspend.

A server may cancel the request's task natively (``Task.cancel()``), which no anyio shield
stops, and the phase must finish first. So the request's task never waits on a cleanup's own
futures, only on ours, where a cancellation is caught and held until the phase ends.

An async cleanup's first step runs at once, as an eagerly started task's does (Python 3.12's
``eager_start``): the current task is switched to an idle *worker task* for the step. Most
cleanups finish there, with no task, timer or cancel scope set up. One that suspends is
handed, as it stands, to that worker task, which goes on with it under a timeout; anything
the step bound to "the current task" (cancel scopes, ``asyncio.timeout``) is bound to the
worker, which is where it ends.
"""

import asyncio
import contextlib
import contextvars
import inspect
import sys
import time
import types
from asyncio import CancelledError, Future
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from typing import Any, NamedTuple

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
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry, Entry

# How long past its timeout a cancelled cleanup may take to stop before it is left behind.
ABANDON_GRACE = 1.0
# Idle worker tasks kept per event loop; more are made when needed, and end after their job.
MAX_IDLE_WORKERS = 32


class _TimedOut(NamedTuple):
    """What a cleanup past its timeout gives: ``where`` it was then, if known."""

    where: types.TracebackType | None


_FunctionType = types.FunctionType
# asyncio.current_task() is written in Python on 3.11 (in C from 3.12): there, read the dict
# it reads, which _enter_task() and _leave_task() keep.
_current_task: Callable[[asyncio.AbstractEventLoop], "asyncio.Task[Any] | None"] = (
    asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
    if type(asyncio.current_task) is types.FunctionType
    else asyncio.current_task
)

# Where asyncio's C tasks keep the current task of each loop (3.11 to 3.13): switching the
# current task is then one dict store instead of _leave_task() and _enter_task(), which do
# the same with checks, at four C calls for every run of first steps.
_current_tasks: "dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None" = getattr(
    asyncio.tasks, "_current_tasks", None
)
if not (
    isinstance(_current_tasks, dict)
    and _enter_task is getattr(sys.modules.get("_asyncio"), "_enter_task", None)
    and _current_tasks is getattr(sys.modules.get("_asyncio"), "_current_tasks", None)
):
    _current_tasks = None
_CO_COROUTINE = inspect.CO_COROUTINE
# Unbound, so that sending into a generator makes no bound method.
_generator_send = types.GeneratorType.send
# What a driver gives back when the coroutine it was sent finished in its first step.
_STEP_DONE: Any = object()
# What run_first_steps gives when it stopped before a cleanup it cannot run.
NOT_STARTED: Any = object()
# A cleanup cut short because the event loop cancelled its worker task (shutdown).
_LOOP_CLOSING: Any = object()


class _Completion:
    """A one-shot signal, set on the event loop; waiting for it survives cancellation."""

    __slots__ = ("finished", "on_set", "value", "waiter", "where")

    def __init__(self) -> None:
        self.finished = False
        self.value: Any = None
        self.waiter: Future[None] | None = None
        self.where: types.TracebackType | None = None  # a suspended cleanup's, at its deadline
        self.on_set: Callable[[], None] | None = None  # called once set, if nobody waits

    def set(self, value: Any = None) -> None:
        if not self.finished:
            self.finished = True
            self.value = value
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if self.on_set is not None:
                self.on_set()


class _Suspended(NamedTuple):
    # The coroutine, or the driver (see _drive) it suspended in.
    coro: "types.CoroutineType[Any, Any, Any] | types.GeneratorType[Any, Any, Any]"
    yielded: Any
    worker: "_Worker"
    started: float
    context: contextvars.Context


_Driver = tuple["types.GeneratorType[Any, Any, Any]", list[bool]]


@types.coroutine
def _drive(handed_off: list[bool]) -> Generator[Any, Any, Any]:
    """Take first steps of the coroutines sent in, one at a time: send one, and get
    ``_STEP_DONE`` if it finished, or what it yielded if it suspended.

    ``yield from`` learns that a coroutine finished without the ``StopIteration`` that
    ``coro.send()`` raises, which costs about as much as a whole first step of a no-op. A
    coroutine that suspended stays inside: the driver is then handed off (``handed_off``
    marked) and ends with it, giving its result.
    """
    coro = yield
    while True:
        result = yield from coro
        if handed_off:
            return result
        coro = yield _STEP_DONE


def _new_driver() -> _Driver:
    handed_off: list[bool] = []
    driver = _drive(handed_off)
    driver.send(None)
    return driver, handed_off  # type: ignore[return-value]


class WorkerTasks:
    """The idle worker tasks of one event loop, and its driver of first steps."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.idle: list[_Worker] = []
        self.driver: _Driver | None = None
        self.max_idle = MAX_IDLE_WORKERS  # workers kept idle; 0 once dismissed

    def dismiss(self) -> None:
        """Let every worker task end once idle, from any thread: nothing will use them.

        An idle worker waits on a future only it holds, so once its middleware is gone it
        would be garbage while pending, which asyncio logs as an error.
        """
        loop = self.loop
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._dismiss)

    def _dismiss(self) -> None:
        self.max_idle = 0
        idle, self.idle = self.idle, []
        for worker in idle:
            if not worker.inbox.done():
                worker.inbox.set_result(None)

    def take(self) -> "_Worker":
        idle = self.idle
        while idle:
            worker = idle.pop()
            if not worker.task.done():  # the event loop may have cancelled it while idle
                return worker
        return _Worker(self)


class _Worker:
    """A task that waits for cleanups that suspended, and sees each to its end."""

    __slots__ = ("inbox", "pool", "task")

    def __init__(self, pool: WorkerTasks) -> None:
        self.pool = pool
        # A job, or None to dismiss the worker.
        self.inbox: Future[tuple[Any, ...] | None] = pool.loop.create_future()
        # An empty context: a worker must not keep the context of the request that made it.
        self.task = pool.loop.create_task(self._serve(), context=contextvars.Context())

    def release(self) -> None:
        """The worker was lent for a step that finished: back to the idle list."""
        if len(self.pool.idle) < self.pool.max_idle:
            self.pool.idle.append(self)
        else:
            self.inbox.set_result(None)

    def continue_with(self, job: tuple[Any, ...]) -> None:
        self.inbox.set_result(job)

    async def _serve(self) -> None:
        task = self.task
        loop = self.pool.loop
        while True:
            inbox = self.inbox
            cancel: CancelledError | None = None
            try:
                job = await inbox
            except CancelledError as exc:
                if inbox.cancelled() or not inbox.done():
                    self._retire()  # the event loop is shutting down
                    raise
                # A cleanup's first step, run as this task, asked to cancel it (an expired
                # asyncio.timeout, say): that cancellation is the cleanup's.
                job = inbox.result()
                cancel = exc
            if job is None:
                self._retire()
                return
            coro, yielded, context, deadline, done = job
            self.inbox = self.pool.loop.create_future()
            if cancel is not None and isinstance(yielded, Future):
                yielded.cancel()  # as Task.cancel() does with what the task waits on
                cancel = None
            # Expired by our timer, which first notes where the cleanup is, before the
            # cancellation unwinds it.
            timeout = asyncio.timeout_at(None)
            expiry = None
            try:
                async with timeout:
                    if deadline is not None:
                        expiry = loop.call_at(deadline, _expire, timeout, deadline, coro, done)
                    try:
                        await run_in_context(coro, context, yielded, cancel)
                    finally:
                        if expiry is not None:
                            expiry.cancel()
            except TimeoutError as exc:
                done.set(_TimedOut(done.where) if _overran(timeout, deadline, loop) else exc)
            except CancelledError as exc:
                if task.cancelling():
                    done.set(_LOOP_CLOSING)
                    self._retire()
                    raise
                done.set(exc)  # the cleanup's own, not ours: a failure like any other
            except Exception as exc:
                # Past its deadline, its failure is that it overran (as on trio).
                done.set(_TimedOut(done.where) if _overran(timeout, deadline, loop) else exc)
            except BaseException as exc:  # KeyboardInterrupt too: the request task raises it
                done.set(exc)
            else:
                # A cleanup that caught its timeout's cancellation and returned still overran.
                done.set(_TimedOut(done.where) if _overran(timeout, deadline, loop) else None)
            # An idle worker must not keep the last cleanup (its frames, through a timeout's
            # traceback, hold the cleanup's locals) alive until its next job.
            del job, coro, yielded, context, done, timeout, expiry
            if len(self.pool.idle) >= self.pool.max_idle:
                return
            self.pool.idle.append(self)

    def _retire(self) -> None:
        if self in self.pool.idle:
            self.pool.idle.remove(self)


def _overran(
    timeout: asyncio.Timeout, deadline: float | None, loop: asyncio.AbstractEventLoop
) -> bool:
    """Whether a cleanup that ended reached its deadline: our timer expired it, or it blocked
    the loop past the deadline after it last waited, so the timer could not fire (trio
    reports both as timeouts)."""
    return timeout.expired() or (deadline is not None and loop.time() >= deadline)


def step_awaitable(
    loop: asyncio.AbstractEventLoop,
    request_task: "asyncio.Task[Any]",
    workers: WorkerTasks,
    context: contextvars.Context,
    awaitable: Awaitable[Any],
) -> Any:
    """Take the first step of ``awaitable`` in ``context``, as an idle worker task (see the
    module's docstring).

    Returns ``None`` if it finished there, the exception it raised (a ``CancelledError`` of
    its own too), or a ``_Suspended`` that ``AsyncioPhase`` sees to its end.
    """
    coro = awaitable if type(awaitable) is types.CoroutineType else as_coroutine(awaitable)
    idle = workers.idle
    worker = idle.pop() if idle else _Worker(workers)
    _leave_task(loop, request_task)
    _enter_task(loop, worker.task)
    try:
        yielded = context.run(coro.send, None)
    except StopIteration:
        worker.release()
        return None
    except (Exception, CancelledError) as exc:  # a CancelledError of its own
        worker.release()
        return exc
    except BaseException:
        worker.release()
        raise
    finally:
        _leave_task(loop, worker.task)
        _enter_task(loop, request_task)
    return _Suspended(coro, yielded, worker, time.monotonic(), context)


def run_first_steps(
    loop: asyncio.AbstractEventLoop,
    workers: WorkerTasks,
    entries: list[Entry],
    reports: list[CleanupReport] | None = None,
) -> Any:
    """Run the async cleanups at the end of ``entries`` (LIFO) as long as each finishes in
    its first step: the phase's fast path, with no task, timer or await of its own. They run
    as one idle worker task, lent for the whole run (see the module's docstring).

    Returns ``None`` once ``entries`` is empty; ``NOT_STARTED`` at a sync cleanup, which it
    leaves in place; or ``(func, result, began)`` for the cleanup it removed that failed
    (``result`` is the exception) or suspended (a ``_Suspended``), for ``AsyncioPhase``.
    With ``reports``, each cleanup that finished is timed and recorded there.
    """
    request_task = _current_task(loop)
    assert request_task is not None, "the cleanup phase runs in a task"
    idle = workers.idle
    if not idle:
        idle.append(_Worker(workers))
        if not workers.max_idle:  # dismissed while a phase still runs on its loop
            loop.call_soon(workers._dismiss)  # once this run has given the worker back
    # Lent while it stays on the idle list: only a cleanup that suspends takes it off.
    lent = idle[-1]
    worker_task = lent.task
    current_tasks = _current_tasks
    if current_tasks is not None:
        current_tasks[loop] = worker_task
    else:
        _leave_task(loop, request_task)
        _enter_task(loop, worker_task)
    try:
        while entries:
            entry = entries.pop()
            func, args, kwargs, context = entry
            if type(func) is _FunctionType and func.__code__.co_flags & _CO_COROUTINE:
                # A coroutine function: calling it runs none of its code, so no context.
                began = time.perf_counter() if reports is not None else 0.0
                try:
                    # Unpacking an empty kwargs still builds a dict: most cleanups have none.
                    coro = func(*args, **kwargs) if kwargs else func(*args)
                except Exception as exc:  # arguments that do not fit
                    return func, exc, began
            elif is_async_callable(func):
                began = time.perf_counter() if reports is not None else 0.0
                try:
                    awaitable = context.run(func, *args, **kwargs)
                except Exception as exc:
                    return func, exc, began
                if awaitable is None:
                    coro = None
                elif type(awaitable) is types.CoroutineType:
                    coro = awaitable
                else:
                    coro = as_coroutine(awaitable)
            else:
                entries.append(entry)
                return NOT_STARTED
            if coro is not None:
                driver = workers.driver
                if driver is None:
                    driver = _new_driver()
                workers.driver = None  # in use: a first step that runs first steps makes its own
                try:
                    yielded = context.run(_generator_send, driver[0], coro)
                except (Exception, CancelledError) as exc:  # a CancelledError of its own
                    return func, exc, began
                if yielded is not _STEP_DONE:
                    idle.remove(lent)  # it sees this cleanup to its end, through the driver
                    driver[1].append(True)  # handed off: the driver ends with the cleanup
                    suspended = _Suspended(driver[0], yielded, lent, time.monotonic(), context)
                    return func, suspended, began
                workers.driver = driver
            if reports is not None:
                reports.append(CleanupReport(func, time.perf_counter() - began, None, False))
        return None
    finally:
        if current_tasks is not None:
            current_tasks[loop] = request_task
        else:
            _leave_task(loop, worker_task)
            _enter_task(loop, request_task)


class AsyncioPhase:
    """One request's cleanup phase on asyncio.

    ``run_phase`` holds back a cancellation of the request task until the phase has finished,
    then raises it.
    """

    __slots__ = (
        "_config",
        "_loop",
        "_registry",
        "_reports",
        "_shield",
        "_task",
        "_workers",
        "cancelled",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        workers: WorkerTasks,
        registry: CleanupRegistry,
        config: PhaseConfig,
    ) -> None:
        self._loop = loop
        self._workers = workers
        task = asyncio.current_task(loop)
        assert task is not None, "the cleanup phase runs in a task"
        self._task: asyncio.Task[Any] = task
        self._registry = registry
        self._config = config
        self._shield: anyio.CancelScope | None = None
        self.cancelled: CancelledError | None = None
        self._reports: list[CleanupReport] | None = [] if config.observing() else None

    @property
    def _outcome(self) -> Outcome:
        outcome = self._registry.outcome
        assert outcome is not None, "registry._start() comes before the phase"
        return outcome

    async def run_phase(
        self,
        entries: list[Entry] | None,
        directives: tuple[Any, ...],
        carried: Any = NOT_STARTED,
    ) -> None:
        """Run the dynamic cleanups (LIFO), then the directive cleanups; first, see to its
        end the cleanup ``run_first_steps`` stopped at (``carried``), if any."""
        try:
            if carried is not NOT_STARTED:
                await self._settle(*carried)
            later: list[Entry] | None = None
            if directives:
                # Directive cleanups run in the context as it was when the app finished.
                outcome = self._outcome
                context = contextvars.copy_context()
                later = [(d, (outcome,), {}, context.copy()) for d in reversed(directives)]
            if entries:
                await self.run(entries, later)
            if later:
                await self.run(later)
            if self._reports is not None:
                await self._complete(self._reports)
        finally:
            if self._shield is not None:
                self._shield.__exit__(None, None, None)
        if self.cancelled is not None:
            raise self.cancelled

    async def run(self, pending: list[Entry], then: list[Entry] | None = None) -> None:
        """Run and remove the entries of ``pending`` from its end (so in LIFO order)."""
        while pending:
            carried = run_first_steps(self._loop, self._workers, pending, self._reports)
            if carried is NOT_STARTED:
                await self._run_sync(pending, then)
            elif carried is not None:
                await self._settle(*carried)

    async def _settle(self, func: Callable[..., Any], result: Any, began: float) -> None:
        """See a cleanup whose first step gave ``result`` (see ``run_first_steps``) to its end;
        report a failure, and record it for ``on_complete``."""
        if type(result) is _Suspended:
            result = await self._finish(result)
        timed_out = type(result) is _TimedOut
        if result is not None:
            result = await self._report(func, result)
        if self._reports is not None:
            seconds = time.perf_counter() - began
            self._reports.append(CleanupReport(func, seconds, result, timed_out))

    async def _await(self, awaitable: Awaitable[Any], context: contextvars.Context) -> Any:
        """Await ``awaitable`` in ``context``; ``None``, or the exception it raised, or
        a ``_TimedOut``."""
        result = step_awaitable(self._loop, self._task, self._workers, context, awaitable)
        if type(result) is _Suspended:
            return await self._finish(result)
        return result

    async def _finish(self, suspended: "_Suspended") -> Any:
        """Hand a suspended cleanup to its worker task and wait, within the timeout."""
        done = _Completion()
        timeout = self._config.timeout
        started = suspended.started
        deadline = None
        if timeout is not None:
            deadline = self._loop.time() + timeout - (time.monotonic() - started)
        suspended.worker.continue_with(
            (suspended.coro, suspended.yielded, suspended.context, deadline, done)
        )
        if timeout is None:
            await self._wait(done, None)
        elif not await self._wait(done, started + timeout + ABANDON_GRACE):
            # It did not stop when cancelled: left behind in its worker task, where drain()
            # and the lifespan shutdown wait for it.
            done.on_set = self._config.scheduler.leave_behind()
            return _TimedOut(done.where)
        value = done.value
        if value is _LOOP_CLOSING:
            return CancelledError("the event loop cancelled the cleanup: it is shutting down")
        if isinstance(value, BaseException) and not isinstance(value, Exception | CancelledError):
            raise value
        return value

    async def _wait(self, done: _Completion, deadline: float | None) -> bool:
        """Wait for ``done`` until ``deadline`` (``time.monotonic()``); ``True`` if it is set.

        A cancellation of the request task is caught and kept for the end of the phase.
        """
        loop = self._loop
        while not done.finished:
            handle = None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                waiter = done.waiter = loop.create_future()
                handle = loop.call_later(left, _wake, waiter)
            else:
                waiter = done.waiter = loop.create_future()
            try:
                await waiter
            except CancelledError as exc:
                if self.cancelled is None:
                    self.cancelled = exc
                if self._shield is None:
                    # anyio re-cancels a task in a cancelled scope on every loop turn.
                    self._shield = anyio.CancelScope(shield=True)
                    self._shield.__enter__()
            finally:
                done.waiter = None
                if handle is not None:
                    handle.cancel()
        return True

    async def _run_sync(self, pending: list[Entry], then: list[Entry] | None) -> None:
        scope = self._outcome.scope
        job = SyncJob(pending, then, describe_request(scope), self._reports is not None)
        done = _Completion()
        job.notify = partial(self._loop.call_soon_threadsafe, done.set)
        self._config.pool.submit(job.run)
        abandoned = where = None
        timeout = self._config.timeout
        if timeout is None:
            await self._wait(done, None)
        else:
            while not await self._wait(done, job.started_at + timeout):
                overdue = job.overdue(timeout, self._config.pool, self._registry)
                if overdue is None:
                    await self._wait(done, None)
                    break
                if overdue[1] is not None:
                    abandoned = overdue[1]
                    where = job.where()
                    break
        reports = self._reports
        for func, seconds, error in job.take_results():
            reported = None if error is None else await self._report(func, error)
            if reports is not None:
                reports.append(CleanupReport(func, seconds, reported, False))
        if abandoned is not None:
            seconds = time.monotonic() - job.started_at
            reported = await self._report(abandoned[0], _TimedOut(where), job.late is not None)
            if reports is not None:
                reports.append(CleanupReport(abandoned[0], seconds, reported, True))
            return
        if job.fatal is not None:
            raise job.fatal
        if job.awaitable is not None and job.current is not None:
            func = job.current[0]
            began = job.started_at
            result = await self._await(job.awaitable, job.current[3])
            timed_out = type(result) is _TimedOut
            if result is not None:
                result = await self._report(func, result)
            if reports is not None:
                seconds = time.monotonic() - began
                reports.append(CleanupReport(func, seconds, result, timed_out))

    async def _report(
        self, func: Callable[..., Any], result: Any, waiting: bool = False
    ) -> BaseException:
        """Log a failure or timeout, call ``on_error``; return the exception reported."""
        scope = self._outcome.scope
        timeout = self._config.timeout
        if type(result) is _TimedOut:
            timed_out = timeout_error(timeout, result.where)
            log_timeout(func, timeout, scope, timed_out, waiting)
            exc: BaseException = timed_out
        else:
            log_failure(func, result, scope)
            exc = result
        hook = self._config.on_error
        if hook is not None:
            await self._call_hook("on_error", hook, (func, exc, self._outcome))
        return exc

    async def _complete(self, reports: list[CleanupReport]) -> None:
        log_phase(reports, self._outcome.scope)
        hook = self._config.on_complete
        if hook is not None:
            await self._call_hook("on_complete", hook, (tuple(reports), self._outcome))

    async def _call_hook(self, role: str, hook: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Call a sync or async hook, within the timeout; log what it raises."""
        scope = self._outcome.scope
        try:
            result = hook(*args)
        except Exception as exc:
            log_hook_failure(role, hook, exc, scope)
            return
        if result is not None and hasattr(result, "__await__"):
            outcome = await self._await(result, contextvars.copy_context())
            if type(outcome) is _TimedOut:
                where = outcome.where
                outcome = TimeoutError(f"hook timed out after {self._config.timeout:g}s")
                outcome.with_traceback(where)
            if outcome is not None:
                log_hook_failure(role, hook, outcome, scope)


def _expire(timeout: asyncio.Timeout, deadline: float, coro: Any, done: _Completion) -> None:
    """A suspended cleanup's deadline: note where it is, then let ``timeout`` cancel it."""
    done.where = suspended_traceback(coro)
    timeout.reschedule(deadline)  # at once, or when the loop's clock reaches it


def _wake(waiter: Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
