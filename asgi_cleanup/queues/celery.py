"""Celery as the middleware's job queue: ``CleanupMiddleware(app, queue="celery",
celery_app=celery)``. A task object is published with its ``apply_async`` (its own options and
app); a task name with ``celery_app.send_task``. Celery's publish blocks, so the enqueue is a
sync cleanup, run in the middleware's worker threads, never on the event loop. Celery does not
deduplicate task ids: a publish retried after a lost answer may run the task twice.

Durable jobs are recorded with ``countdown=durable_grace`` and cancelled with
``app.control.revoke()``: a broadcast that only workers running then receive, kept in their
memory (and in ``--statedb`` where set). So durable mode needs a broker that can broadcast
(Redis, RabbitMQ), and, on Redis, a ``visibility_timeout`` longer than ``durable_grace``."""

from __future__ import annotations

from typing import Any, ClassVar

from .._describe import describe_value
from .._handlers import resolve
from ._durable import SyncDurableJob
from ._jobs import JobQueue, SyncJob

try:
    import celery
    from kombu.exceptions import OperationalError
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("queue='celery' needs Celery: pip install 'asgi-cleanup[celery]'") from exc


def _task_name(job: object) -> str | None:
    if isinstance(job, str):
        return job if job and not any(c.isspace() for c in job) else None
    if isinstance(job, celery.Task):
        name = job.name
        return name if isinstance(name, str) else None
    return None


def celery_job(target: str) -> tuple[object, str]:
    """A ``job:celery:TARGET`` directive's job and name: with ``:``, a reference to the task
    object (imported now); without, the task's name. :raises TypeError, ValueError:"""
    if ":" in target:
        job = resolve(target, {})
        if (name := _task_name(job)) is None or isinstance(job, str):
            raise TypeError(f"is not a Celery task (it is {describe_value(job, 60)})")
        return job, name
    if _task_name(target) is None:
        raise ValueError(
            "needs a Celery task's name or a 'pkg.module:task' reference after 'job:celery:'"
        )
    return target, target


class CeleryQueue(JobQueue):
    kind: ClassVar[str] = "celery"
    job_class = SyncJob
    durable_class = SyncDurableJob
    transient = (OperationalError, OSError)

    def __init__(self, app: Any) -> None:
        if not isinstance(app, celery.Celery):
            raise TypeError(
                f"queue='celery' needs celery_app=, a Celery app, got {describe_value(app, 60)}"
            )
        self.app = app
        self._durable_checked: set[int] = set()  # the apps that can revoke

    def check_job(self, job: object) -> str:
        name = _task_name(job)
        if name is None:
            raise TypeError(
                f"a Celery job is a task or a task's name, not {describe_value(job, 60)}"
            )
        return name

    def _app(self, job: object) -> Any:
        return self.app if isinstance(job, str) else job.app  # type: ignore[attr-defined]

    def check_durable(self, job: object) -> None:
        app = self._app(job)
        if id(app) in self._durable_checked:
            return
        # Creating the connection object connects nothing; its transport says what it can do.
        with app.connection_for_write() as connection:
            transport = connection.transport
        if "fanout" not in transport.implements.exchange_type:
            raise RuntimeError(
                f"durable=True needs a Celery broker that can broadcast, to revoke the recorded "
                f"job after the response; {transport.driver_type} cannot (docs/queues.md)"
            )
        options = app.conf.broker_transport_options or {}
        visibility = options.get("visibility_timeout", 3600)
        if transport.driver_type == "redis" and self.durable_grace >= visibility:
            raise RuntimeError(
                f"durable_grace ({self.durable_grace:g}s) must be shorter than the Redis "
                f"broker's visibility_timeout ({visibility:g}s), or Redis hands the recorded "
                "job to a second worker (docs/queues.md)"
            )
        self._durable_checked.add(id(app))

    def enqueue(
        self,
        job: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        defer: float | None = None,
    ) -> None:
        app = self._app(job)
        with app.producer_or_acquire() as producer:
            # One connection attempt, and retry=False: Celery's own retries (for up to
            # broker_connection_timeout) would come on top of our one.
            producer.connection.ensure_connection(max_retries=0)
            options = {"task_id": key, "producer": producer, "retry": False, "countdown": defer}
            if isinstance(job, str):
                app.send_task(job, args, kwargs, **options)
            else:
                job.apply_async(args, kwargs, **options)  # type: ignore[attr-defined]

    def cancel(self, job: object, kwargs: dict[str, Any], key: str) -> None:
        app = self._app(job)
        with app.connection_or_acquire() as connection:
            connection.ensure_connection(max_retries=0)  # as for the enqueue: one attempt
            app.control.revoke(key, connection=connection)
