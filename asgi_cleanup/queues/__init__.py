"""Hand cleanups to an existing job queue: ``register_job()`` and ``job:`` directives.

The middleware makes its queue once, at construction (:func:`setup`), when the ``queue``
option is set; its registries carry it. Celery (:mod:`.celery`) and arq (:mod:`.arq`) are
imported only then, so an app without a queue pays nothing, at import or per request. The
enqueue is an ordinary cleanup: after the response, shielded, bounded by ``timeout``, its
failure logged and given to ``on_error``, waited for by ``drain()`` and the lifespan shutdown.
A durable job (:mod:`._durable`) is recorded in the broker inside the request, then released.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import SettingsError
from ..registry import CleanupRegistry
from ._jobs import DirectiveJob, Durable, Job, JobQueue, directive_job, summary

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = [
    "DirectiveJob",
    "Durable",
    "Job",
    "JobQueue",
    "directive_job",
    "setup",
    "summary",
    "validate_option",
]

QUEUES = ("celery", "arq")


def validate_option(name: str, value: object) -> Any:
    """``queue``: ``None``, ``"celery"`` or ``"arq"``; ``arq_redis_url``: ``None`` or a string;
    ``durable_grace``: ``None`` (the default, 30) or seconds > 0.

    :raises TypeError: for another type; :raises ValueError: for another queue or value."""
    if value is None:
        return None
    if name == "durable_grace":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"durable_grace must be a number of seconds, got {value!r}")
        if not 0 < value < math.inf:
            raise ValueError(f"durable_grace must be > 0 seconds and finite, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        wanted = "'celery' or 'arq'" if name == "queue" else "a redis:// URL string"
        raise TypeError(f"{name} must be {wanted} or None, got {type(value).__name__}")
    if name == "queue" and value not in QUEUES:
        raise ValueError(f"queue must be 'celery' or 'arq', got {value!r}")
    if name == "arq_redis_url" and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("arq_redis_url must be a redis://, rediss:// or unix:// URL")
    return value


def setup(
    queue: object,
    arq_redis_url: object,
    celery_app: Any,
    arq_redis: Any,
    durable_grace: object,
    settings: Settings | None,
) -> tuple[JobQueue | None, type[CleanupRegistry]]:
    """The middleware's job queue, or ``None``, and the registry class that carries it.

    :raises TypeError, ValueError: for bad or conflicting options; :raises SettingsError: for
        ``job:`` directives that the middleware's queue cannot run."""
    kind = validate_option("queue", queue)
    url = validate_option("arq_redis_url", arq_redis_url)
    grace = validate_option("durable_grace", durable_grace)
    if grace is not None and kind is None:
        raise ValueError("durable_grace is an option of a queue, but queue is None")
    given = {"celery_app": celery_app, "arq_redis": arq_redis, "arq_redis_url": url}
    for name, value in given.items():
        if value is not None and (owner := name.partition("_")[0]) != kind:
            raise ValueError(f"{name} is an option of queue={owner!r}, but queue is {kind!r}")
    backend: JobQueue | None = None
    if kind == "celery":
        from .celery import CeleryQueue

        backend = CeleryQueue(celery_app)
    elif kind == "arq":
        from .arq import ArqQueue

        backend = ArqQueue(arq_redis, url)
    source, handlers = ("", []) if settings is None else (settings.source, settings.handlers)
    for job in handlers:
        if isinstance(job, DirectiveJob) and (backend is None or backend.kind != job.kind):
            has = "no queue" if backend is None else f"queue={backend.kind!r}"
            raise SettingsError(
                f"{source}: handler {job.reference!r} is a job of queue={job.kind!r}, but the "
                f"middleware has {has}: pass queue={job.kind!r} (docs/queues.md)"
            )
    if backend is None:
        return None, CleanupRegistry
    if grace is not None:
        backend.durable_grace = grace
    return backend, _registry_class(backend)


def _registry_class(backend: JobQueue) -> type[CleanupRegistry]:
    class QueueRegistry(CleanupRegistry):
        """A registry of a middleware with a job queue: ``register_job()`` enqueues on it."""

        _queue = backend

    return QueueRegistry
