"""Enqueues on a real Redis, in-process (no worker here: the tests read what the broker holds):
arq refuses a second enqueue of a job id, so a retried enqueue never enqueues twice; ``job:``
directives enqueue with the request's outcome summary; Celery's publish works on trio too."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings
from celery import Celery
from queue_support import RedisServer

from asgi_cleanup import CleanupMiddleware

pytestmark = [pytest.mark.real_server, pytest.mark.anyio]


def app_registering(*jobs: tuple[Any, ...]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        for job, *args in jobs:
            scope["cleanup"].register_job(job, *args)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


async def call(middleware: CleanupMiddleware, path: str = "/x") -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "query_string": b""}
    await middleware(scope, receive, send)
    await middleware.drain()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_retried_arq_enqueue_never_enqueues_twice(
    anyio_backend: str, broker: RedisServer, arq_redis: ArqRedis
) -> None:
    middleware = CleanupMiddleware(app_registering(), queue="arq", arq_redis_url=broker.url)
    job = middleware._registry().register_job("arq_record", "once")
    await job()
    await job()  # what the one retry does after an answer lost on the way back

    queued = await arq_redis.queued_jobs()
    assert [(j.function, j.args, j.job_id) for j in queued] == [
        ("arq_record", ("once",), job.job_id)
    ]
    await middleware.queue.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_arq_directive_jobs_enqueue_once_with_the_outcome(
    anyio_backend: str, broker: RedisServer, arq_redis: ArqRedis
) -> None:
    settings = {
        "handlers": ["job:arq:audit"],
        "location": [{"path": "/x", "handlers": ["job:arq:audit"]}],
    }
    middleware = CleanupMiddleware(
        app_registering(("arq_record", "dynamic")),
        settings=settings,
        queue="arq",
        arq_redis=RedisSettings.from_dsn(broker.url),
    )
    await call(middleware, "/x/y")

    queued = sorted(await arq_redis.queued_jobs(), key=lambda j: j.function)
    assert [(j.function, j.args) for j in queued] == [("arq_record", ("dynamic",)), ("audit", ())]
    audit = queued[1]
    assert audit.job_id.endswith(":job:arq:audit")
    assert audit.job_id.rsplit(":", 3)[0] == queued[0].job_id.rsplit(":", 1)[0]  # one request
    assert audit.kwargs == {
        "cleanup_outcome": {
            "status": 201,
            "exception": None,
            "response_complete": True,
            "client_disconnected": False,
            "duration": audit.kwargs["cleanup_outcome"]["duration"],
            "method": "POST",
            "path": "/x/y",
        }
    }
    await middleware.queue.aclose()  # type: ignore[union-attr]


def celery_messages(broker: RedisServer) -> list[tuple[str, str, Any]]:
    """(task name, task id, [args, kwargs, embed]) of each message Celery left in the queue."""
    found = []
    for raw in broker.client().lrange("celery", 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        found.append((message["headers"]["task"], message["headers"]["id"], body[:2]))
    return found


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_celery_jobs_and_directives_publish_from_worker_threads_on_both_backends(
    anyio_backend: str, broker: RedisServer
) -> None:
    broker.client().flushdb()
    celery_app = Celery("in_process", broker=broker.url)
    middleware = CleanupMiddleware(
        app_registering(("queue_jobs.record", "by-name")),
        settings={"handlers": ["job:celery:queue_jobs.record"]},  # by name: celery_app publishes
        queue="celery",
        celery_app=celery_app,
    )
    await call(middleware)

    messages = sorted(celery_messages(broker), key=lambda m: m[1])
    assert [(task, body[0]) for task, _, body in messages] == [
        ("queue_jobs.record", ["by-name"]),
        ("queue_jobs.record", []),
    ]
    by_id = {task_id.rsplit(":", 1)[1]: body for _, task_id, body in messages}
    assert set(by_id) == {"1", "queue_jobs.record"}  # the registration, the directive
    assert by_id["queue_jobs.record"][1]["cleanup_outcome"]["status"] == 201
    celery_app.close()
