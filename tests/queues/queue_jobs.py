"""The jobs the queue tests' real workers run: each pushes what it was given, as a JSON line,
onto the Redis list ``results``, where the test reads it. The broker is the Redis of
``ASGI_CLEANUP_REDIS_URL``.

- Celery: ``python -m celery -A queue_jobs worker --pool solo``; task ``queue_jobs.record``.
- arq: ``python -m arq queue_jobs.WorkerSettings``; function ``record``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from arq.connections import RedisSettings
from celery import Celery

from asgi_cleanup.queues.arq import durable_functions

REDIS_URL = os.environ.get("ASGI_CLEANUP_REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS = "results"

celery_app = Celery("queue_jobs", broker=REDIS_URL)
celery_app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)


def result_line(queue: str, tag: str, job_id: str | None, outcome: Any, key: Any = None) -> str:
    found = {"queue": queue, "tag": tag, "job_id": job_id, "outcome": outcome, "key": key}
    return json.dumps({**found, "ran_at": time.time()})


@celery_app.task(name="queue_jobs.record", bind=True)
def record(self: Any, tag: str, cleanup_outcome: Any = None, cleanup_job_key: Any = None) -> None:
    line = result_line("celery", tag, self.request.id, cleanup_outcome, cleanup_job_key)
    redis.Redis.from_url(REDIS_URL).rpush(RESULTS, line)


async def arq_record(
    ctx: dict[str, Any], tag: str, cleanup_outcome: Any = None, cleanup_job_key: Any = None
) -> None:
    line = result_line("arq", tag, ctx["job_id"], cleanup_outcome, cleanup_job_key)
    await ctx["redis"].rpush(RESULTS, line)


class WorkerSettings:
    # Durable jobs' recorded copies skip themselves once released (the abort's race).
    functions = durable_functions([arq_record])
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    max_jobs = 50
    poll_delay = 0.05
    allow_abort_jobs = True  # durable jobs' release aborts their recorded copy
