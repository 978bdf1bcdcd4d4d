"""Durable jobs: ``await registry.register_job(job, ..., durable=True)``.

At registration, inside the request, the job K is recorded in the broker deferred by
``durable_grace``, with ``cleanup_outcome="unknown"``. After the response, as a cleanup, it is
released: ``K:released`` is enqueued to run now with the real outcome, then K is cancelled. A
process that dies in between leaves K in the broker, and a worker runs it after
``durable_grace``. Both receive ``cleanup_job_key=K``, for jobs to be idempotent on it: a lost
cancel, or a request longer than ``durable_grace``, runs the job twice (docs/queues.md)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import anyio.to_thread

from .._describe import log_safe
from ._jobs import AsyncJob, Job, SyncJob

logger = logging.getLogger("asgi_cleanup")

#: The ``cleanup_outcome`` of a recorded job that runs because it was never released.
UNKNOWN = "unknown"
_LATE = (
    "Durable %s released %.1fs after it was recorded, past durable_grace (%gs): its recorded "
    "copy may have run already, with outcome 'unknown'"
)


class DurableJob(Job):
    """The release of a durable job: the cleanup that ``register_job(..., durable=True)``
    registers once the job is recorded. ``job_id`` is K, the key the job receives as
    ``cleanup_job_key``; the release runs under the id ``K:released``."""

    __slots__ = ("recorded_at",)

    @property
    def cleanup_name(self) -> str:
        return f"{self.queue.kind} durable job {log_safe(self.name, 200)} ({self.job_id})"

    @property
    def released_id(self) -> str:
        return f"{self.job_id}:released"

    def _recorded_kwargs(self) -> dict[str, Any]:
        kwargs = {**self.kwargs, "cleanup_job_key": self.job_id}
        if self.with_outcome:
            kwargs["cleanup_outcome"] = UNKNOWN
        return kwargs

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "cleanup_job_key": self.job_id}

    async def _record(self) -> None:
        raise NotImplementedError

    async def register(self) -> Job:
        """Record the job in the broker, then register its release. Once cleanups have
        started, records nothing and registers nothing (``register()`` says so)."""
        if not self.registry.frozen:
            await self._record()
            self.recorded_at = time.monotonic()
        self.registry.register(cast(Callable[[], Any], self))
        return self

    def _check_late(self) -> None:
        waited = time.monotonic() - self.recorded_at
        if waited >= self.queue.durable_grace:
            name, grace = self.cleanup_name, self.queue.durable_grace
            logger.warning(_LATE, name, waited, grace, extra={"cleanup_name": name})


class SyncDurableJob(DurableJob, SyncJob):
    """Celery's: recorded from a worker thread, released as a sync cleanup."""

    __slots__ = ()

    async def _record(self) -> None:
        grace, kwargs = self.queue.durable_grace, self._recorded_kwargs()
        enqueue = self.queue.enqueue
        record = partial(self._twice, enqueue, self.job, self.args, kwargs, self.job_id, grace)
        await anyio.to_thread.run_sync(record)

    def __call__(self) -> None:
        self._check_late()
        # Released first, cancelled second: a crash between the two runs the job twice, never
        # not at all; a failed release leaves the recorded job to run.
        self._twice(self.queue.enqueue, self.job, self.args, self._kwargs(), self.released_id)
        self._twice(self.queue.cancel, self.job, self.kwargs, self.job_id)


class AsyncDurableJob(DurableJob, AsyncJob):
    """arq's: recorded and released on the event loop."""

    __slots__ = ()

    async def _record(self) -> None:
        grace, kwargs = self.queue.durable_grace, self._recorded_kwargs()
        await self._twice(self.queue.enqueue, self.job, self.args, kwargs, self.job_id, grace)

    async def __call__(self) -> None:
        self._check_late()
        released = self.released_id
        await self._twice(self.queue.enqueue, self.job, self.args, self._kwargs(), released)
        await self._twice(self.queue.cancel, self.job, self.kwargs, self.job_id)
