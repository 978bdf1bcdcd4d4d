"""What a queue's job is as a cleanup: :class:`Job` (``register_job()``), :class:`DirectiveJob`
(``job:QUEUE:TARGET`` in the settings), their idempotency keys, the outcome summary, and the
one bounded retry of a transient broker error."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeAlias, cast

import anyio

from .._describe import log_safe
from ..outcome import Outcome
from ..registry import CleanupRegistry

if TYPE_CHECKING:
    from ._durable import DurableJob

logger = logging.getLogger("asgi_cleanup")

#: Seconds between a transient broker error and the one retry; within the cleanup's timeout.
RETRY_DELAY = 0.2
_RETRYING = "Enqueueing %s failed (%s: %s); retrying once in %gs"

_ids = threading.Lock()  # register_job() may be called from worker threads too


def job_id(registry: CleanupRegistry, registration: str | None = None) -> str:
    """``asgi-cleanup:REQUEST:REGISTRATION``: the request's random id (made at its first job)
    and the registration's number in it, or a directive's reference."""
    with _ids:
        request = getattr(registry, "_job_request", None)
        if request is None:
            request = uuid.uuid4().hex
            setattr(registry, "_job_request", request)  # noqa: B010 - not a field of the class
        if registration is None:
            number = getattr(registry, "_job_count", 0) + 1
            setattr(registry, "_job_count", number)  # noqa: B010
            registration = str(number)
    return f"asgi-cleanup:{request}:{registration}"


def _type_name(cls: type) -> str:
    # As tracebacks show it: builtins bare, others with their module.
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def summary(outcome: Outcome | None) -> dict[str, Any] | None:
    """A JSON-serialisable summary of ``outcome``: no scope, headers or query string; the path
    escaped as in the logs."""
    if outcome is None:
        return None
    scope, exc = outcome.scope, outcome.exception
    method = scope.get("method", "WEBSOCKET") if scope.get("type") == "http" else "WEBSOCKET"
    return {
        "status": outcome.status,
        "exception": None if exc is None else _type_name(type(exc)),
        "response_complete": outcome.response_complete,
        "client_disconnected": outcome.client_disconnected,
        "duration": outcome.duration,
        "method": log_safe(str(method)),
        "path": log_safe(str(scope.get("path", ""))),
    }


#: What ``register_job(..., durable=True)`` returns: a coroutine that records the job in the
#: broker and returns its cleanup (the :class:`Job`).
Durable: TypeAlias = Coroutine[Any, Any, "Job"]


class JobQueue:
    """A queue the middleware hands jobs to: made once at construction, shared by its requests."""

    kind: ClassVar[str]
    job_class: ClassVar[type[Job]]
    durable_class: ClassVar[type[DurableJob]]
    transient: tuple[type[BaseException], ...] = (OSError,)  # worth one retry
    durable_grace = 30.0  # seconds: a durable job not released by then runs anyway

    def check_job(self, job: object) -> str:
        """The name of ``job`` for logs. :raises TypeError: if this queue cannot take it."""
        raise NotImplementedError

    def on_registration(self) -> None:
        """Checks of where ``register_job()`` is called (arq: not on trio)."""

    def check_durable(self, job: object) -> None:
        """:raises RuntimeError: where this queue cannot cancel a recorded job (docs/queues.md)."""

    def register(
        self,
        registry: CleanupRegistry,
        job: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        with_outcome: bool,
        durable: bool = False,
    ) -> Job | Durable:
        """``registry.register_job(job, *args, with_outcome=..., durable=..., **kwargs)``: the
        job checked now; registered now, or, if durable, recorded and registered when the
        coroutine returned is awaited (:mod:`._durable`)."""
        name = self.check_job(job)
        self.on_registration()
        if durable:
            self.check_durable(job)
            durable_job = self.durable_class(self, registry, job, name, args, kwargs, with_outcome)
            return durable_job.register()
        cleanup = self.job_class(self, registry, job, name, args, kwargs, with_outcome)
        registry.register(cast(Callable[[], Any], cleanup))
        return cleanup

    def enqueue(
        self,
        job: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        defer: float | None = None,
    ) -> Any:
        """Publish the job once, to run ``defer`` seconds from now (``None``: now); sync, in a
        worker thread, or an awaitable, on the loop."""
        raise NotImplementedError

    def cancel(self, job: object, kwargs: dict[str, Any], key: str) -> Any:
        """Tell the workers not to run the job ``key`` (recorded, not yet due); sync or an
        awaitable, as :meth:`enqueue`."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Let go of connections this queue made (the lifespan shutdown calls it)."""


class Job:
    """A job to enqueue in the cleanup phase: the cleanup ``register_job()`` registers (and
    returns). ``job_id`` is its idempotency key: arq's ``_job_id``, Celery's ``task_id``."""

    __slots__ = ("args", "job", "job_id", "kwargs", "name", "queue", "registry", "with_outcome")

    def __init__(
        self,
        queue: JobQueue,
        registry: CleanupRegistry,
        job: object,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        with_outcome: bool,
        key: str | None = None,
    ) -> None:
        self.queue, self.registry, self.job, self.name = queue, registry, job, name
        self.args, self.kwargs, self.with_outcome = args, kwargs, with_outcome
        self.job_id = job_id(registry) if key is None else key

    @property
    def cleanup_name(self) -> str:
        return f"{self.queue.kind} job {log_safe(self.name, 200)} ({self.job_id})"

    def __repr__(self) -> str:
        return f"<Job {self.cleanup_name}>"

    def _kwargs(self) -> dict[str, Any]:
        if not self.with_outcome:
            return self.kwargs
        return {**self.kwargs, "cleanup_outcome": summary(self.registry.outcome)}

    def _failed(self, exc: BaseException) -> bool:
        """Whether to retry after ``exc``: a transient error, the first time (logged)."""
        if not isinstance(exc, self.queue.transient):
            return False
        reason = log_safe(str(exc), 300)
        name = self.cleanup_name
        extra = {"cleanup_name": name}
        logger.warning(_RETRYING, name, type(exc).__name__, reason, RETRY_DELAY, extra=extra)
        return True


class SyncJob(Job):
    """A job whose publish blocks (Celery): a sync cleanup, run in a worker thread."""

    __slots__ = ()

    def __call__(self) -> None:
        self._twice(self.queue.enqueue, self.job, self.args, self._kwargs(), self.job_id)

    def _twice(self, action: Callable[..., Any], *args: Any) -> Any:
        """``action(*args)``, and once more after a transient broker error."""
        try:
            return action(*args)
        except Exception as exc:
            if not self._failed(exc):
                raise
        time.sleep(RETRY_DELAY)
        return action(*args)


class AsyncJob(Job):
    """A job enqueued on the event loop (arq): an async cleanup."""

    __slots__ = ()

    async def __call__(self) -> None:
        await self._twice(self.queue.enqueue, self.job, self.args, self._kwargs(), self.job_id)

    async def _twice(self, action: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``await action(*args)``, and once more after a transient broker error."""
        try:
            return await action(*args)
        except Exception as exc:
            if not self._failed(exc):
                raise
        await anyio.sleep(RETRY_DELAY)
        return await action(*args)


class DirectiveJob:
    """A ``job:QUEUE:TARGET`` directive cleanup: enqueues TARGET with one keyword argument,
    ``cleanup_outcome`` (the :func:`summary`), on the queue of the request's middleware."""

    __slots__ = ("job", "kind", "name", "reference")

    def __init__(self, reference: str, kind: str, job: object, name: str) -> None:
        self.reference, self.kind, self.job, self.name = reference, kind, job, name

    @property
    def cleanup_name(self) -> str:
        return log_safe(self.reference, 200)

    def __repr__(self) -> str:
        return f"<DirectiveJob {self.cleanup_name}>"

    def _job(self, outcome: Outcome) -> Job:
        registry = outcome.scope.get("cleanup")
        queue: JobQueue | None = getattr(registry, "_queue", None)
        if not isinstance(registry, CleanupRegistry) or queue is None or queue.kind != self.kind:
            raise RuntimeError(
                f"{self.reference} needs queue={self.kind!r} on the outermost CleanupMiddleware"
            )
        key = job_id(registry, self.reference)
        return queue.job_class(queue, registry, self.job, self.name, (), {}, True, key)


class SyncDirectiveJob(DirectiveJob):
    __slots__ = ()

    def __call__(self, outcome: Outcome) -> None:
        cast(Callable[[], None], self._job(outcome))()


class AsyncDirectiveJob(DirectiveJob):
    __slots__ = ()

    async def __call__(self, outcome: Outcome) -> None:
        await cast(Callable[[], Awaitable[None]], self._job(outcome))()


_directives: dict[
    str, DirectiveJob
] = {}  # one object per reference: nested middlewares run it once


def directive_job(reference: str) -> DirectiveJob:
    """The directive of ``"job:celery:TASK"`` (a task's name, or a ``"pkg.mod:task"`` reference
    to the task object) or ``"job:arq:FUNCTION"`` (the function's name in the worker).

    :raises ValueError: for a malformed reference or one that cannot be imported;
    :raises TypeError: for a reference to something that is not a Celery task."""
    if reference not in _directives:
        _, kind, target = reference.split(":", 2)
        if kind == "celery":
            from .celery import celery_job

            job, name = celery_job(target)
            _directives[reference] = SyncDirectiveJob(reference, kind, job, name)
        else:
            from .arq import arq_job

            name = arq_job(target)
            _directives[reference] = AsyncDirectiveJob(reference, kind, name, name)
    return _directives[reference]
