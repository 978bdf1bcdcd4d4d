"""Celery as the middleware's job queue: ``CleanupMiddleware(app, queue="celery",
celery_app=celery)``. A task object is published with its ``apply_async`` (its own options and
app); a task name with ``celery_app.send_task``. Celery's publish blocks, so the enqueue is a
sync cleanup, run in the middleware's worker threads, never on the event loop. Celery does not
deduplicate task ids: a publish retried after a lost answer may run the task twice."""

from __future__ import annotations

from typing import Any, ClassVar

from .._describe import describe_value
from .._handlers import resolve
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
    transient = (OperationalError, OSError)

    def __init__(self, app: Any) -> None:
        if not isinstance(app, celery.Celery):
            raise TypeError(
                f"queue='celery' needs celery_app=, a Celery app, got {describe_value(app, 60)}"
            )
        self.app = app

    def check_job(self, job: object) -> str:
        name = _task_name(job)
        if name is None:
            raise TypeError(
                f"a Celery job is a task or a task's name, not {describe_value(job, 60)}"
            )
        return name

    def enqueue(self, job: object, args: tuple[Any, ...], kwargs: dict[str, Any], key: str) -> None:
        app = self.app if isinstance(job, str) else job.app  # type: ignore[attr-defined]
        with app.producer_or_acquire() as producer:
            # One connection attempt, and retry=False: Celery's own retries (for up to
            # broker_connection_timeout) would come on top of our one.
            producer.connection.ensure_connection(max_retries=0)
            if isinstance(job, str):
                app.send_task(job, args, kwargs, task_id=key, producer=producer, retry=False)
            else:
                options = {"task_id": key, "producer": producer, "retry": False}
                job.apply_async(args, kwargs, **options)  # type: ignore[attr-defined]
