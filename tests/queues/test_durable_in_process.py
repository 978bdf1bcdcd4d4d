"""Durable registrations on a real Redis, in-process (no worker: the tests read what the broker
holds): the job is in the broker, deferred and with outcome ``"unknown"``, before the endpoint
answers; its release follows the response with the real outcome; a broker that refuses the
record raises in the endpoint and registers nothing; what a registration costs, measured."""

from __future__ import annotations

import base64
import json
import logging
import statistics
import time
from typing import Any

import anyio
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job as ArqJob
from arq.worker import Worker
from celery import Celery
from queue_jobs import arq_record
from queue_support import RedisServer
from servers import free_port

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.queues.arq import SKIPPED, durable_functions, released_mark

pytestmark = [pytest.mark.real_server, pytest.mark.anyio]

GRACE = 20.0
COST_RUNS = 50


async def call(middleware: CleanupMiddleware, app_steps: Any) -> None:
    """One POST /x through ``middleware``, whose app awaits ``app_steps(registry)`` first."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await app_steps(scope["cleanup"])
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware.app = app
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    await middleware(scope, receive, send)
    await middleware.drain()


def celery_messages(broker: RedisServer) -> dict[str, tuple[str | None, list[Any]]]:
    """Task id -> (eta, [args, kwargs]) of each message Celery left in its queue."""
    found = {}
    for raw in broker.client().lrange("celery", 0, -1):
        message = json.loads(raw)
        body = json.loads(base64.b64decode(message["body"]))
        found[message["headers"]["id"]] = (message["headers"]["eta"], body[:2])
    return found


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_arq_records_the_job_before_the_answer_and_releases_it_after(
    anyio_backend: str, broker: RedisServer, arq_redis: ArqRedis
) -> None:
    middleware = CleanupMiddleware(
        lambda *a: None, queue="arq", arq_redis_url=broker.url, durable_grace=GRACE
    )
    during: dict[str, Any] = {}

    async def steps(registry: CleanupRegistry) -> None:
        job = await registry.register_job("arq_record", "d", with_outcome=True, durable=True)
        (recorded,) = await arq_redis.queued_jobs()
        during.update(key=job.job_id, recorded=recorded, at=time.time(), pending=len(registry))

    await call(middleware, steps)

    key, recorded = during["key"], during["recorded"]
    assert (recorded.job_id, recorded.args) == (key, ("d",))
    assert recorded.kwargs == {"cleanup_outcome": "unknown", "cleanup_job_key": key}
    assert recorded.score / 1000 - during["at"] == pytest.approx(GRACE, abs=1.0)  # deferred
    assert during["pending"] == 1  # the release, a cleanup
    queued = {job.job_id: job for job in await arq_redis.queued_jobs()}
    released = queued[f"{key}:released"]
    assert released.kwargs["cleanup_job_key"] == key
    assert released.kwargs["cleanup_outcome"]["status"] == 201
    assert released.score / 1000 <= time.time()  # due now
    await middleware.queue.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_arq_worker_that_starts_a_released_recorded_copy_skips_it(
    anyio_backend: str, broker: RedisServer, arq_redis: ArqRedis
) -> None:
    """The abort's race, made certain: a worker without ``allow_abort_jobs`` runs K as soon as
    ``Job.abort()`` has moved it to the front, as a worker polling between the abort's two
    commands does. The release's mark makes the wrapped function skip it."""
    middleware = CleanupMiddleware(
        lambda *a: None, queue="arq", arq_redis_url=broker.url, durable_grace=GRACE
    )
    keys: list[str] = []

    async def steps(registry: CleanupRegistry) -> None:
        keys.append((await registry.register_job("arq_record", "race", durable=True)).job_id)

    await call(middleware, steps)  # released: K:released queued, K marked, then moved up
    (key,) = keys
    assert await arq_redis.exists(released_mark(key))
    worker = Worker(
        functions=durable_functions([arq_record]),
        redis_pool=arq_redis,
        burst=True,
        poll_delay=0.01,
        handle_signals=False,
    )
    await worker.main()  # burst: returns once the queue is empty; the fixture closes the pool
    ran = broker.results("race")
    assert [job["job_id"] for job in ran] == [f"{key}:released"]
    info = await ArqJob(key, arq_redis).result_info()
    assert info is not None
    assert info.result == SKIPPED  # started, and returned at once
    await middleware.queue.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_what_the_workers_check_costs_per_job_run(
    anyio_backend: str,
    broker: RedisServer,
    arq_redis: ArqRedis,
    record_property: pytest.RecordProperty,
) -> None:
    """The wrapper's cost at each job run: a plain job or a release pays a dictionary lookup; a
    recorded copy, one Redis EXISTS (it is skipped, or runs after a crash)."""

    async def nothing(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        pass

    (guarded,) = durable_functions([nothing])
    key = "asgi-cleanup:cost:1"
    await arq_redis.set(released_mark(key), b"1")
    cases = {
        "bare": (nothing, {"job_id": key}, {}),
        "release": (guarded.coroutine, {"job_id": f"{key}:released"}, {"cleanup_job_key": key}),
        "recorded_copy": (guarded.coroutine, {"job_id": key}, {"cleanup_job_key": key}),
    }
    figures = {}
    for name, (function, ctx, kwargs) in cases.items():
        ctx["redis"] = arq_redis
        await function(ctx, **kwargs)
        times = []
        for _ in range(COST_RUNS):
            started = time.perf_counter()
            await function(ctx, **kwargs)
            times.append(time.perf_counter() - started)
        figures[f"{name}_median_us"] = statistics.median(times) * 1e6
    assert (
        await guarded.coroutine({"job_id": key, "redis": arq_redis}, cleanup_job_key=key) == SKIPPED
    )
    record_property("durable_check_cost_arq", figures)
    print(f"\narq: the worker's check per job run, {COST_RUNS} runs: {figures}")


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_celery_records_the_job_with_a_countdown_and_releases_it_on_both_backends(
    anyio_backend: str, broker: RedisServer
) -> None:
    broker.client().flushdb()
    celery_app = Celery("in_process", broker=broker.url)
    middleware = CleanupMiddleware(
        lambda *a: None, queue="celery", celery_app=celery_app, durable_grace=GRACE
    )
    keys: list[str] = []

    async def steps(registry: CleanupRegistry) -> None:
        job = await registry.register_job("queue_jobs.record", "d", with_outcome=True, durable=True)
        keys.append(job.job_id)
        assert list(celery_messages(broker)) == [job.job_id]  # before the answer

    await call(middleware, steps)

    (key,) = keys
    messages = celery_messages(broker)
    assert set(messages) == {key, f"{key}:released"}
    eta, (args, kwargs) = messages[key]
    assert eta is not None
    assert (args, kwargs) == (["d"], {"cleanup_outcome": "unknown", "cleanup_job_key": key})
    eta, (args, kwargs) = messages[f"{key}:released"]
    assert eta is None
    assert kwargs["cleanup_job_key"] == key
    assert kwargs["cleanup_outcome"]["status"] == 201
    celery_app.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_release_past_durable_grace_is_warned_about_with_the_cleanups_name(
    anyio_backend: str, broker: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    grace = 0.2
    middleware = CleanupMiddleware(
        lambda *a: None, queue="arq", arq_redis_url=broker.url, durable_grace=grace
    )

    async def steps(registry: CleanupRegistry) -> None:
        await registry.register_job("arq_record", "late", durable=True)
        await anyio.sleep(grace + 0.1)  # the endpoint outlasts the grace before answering

    with caplog.at_level(logging.WARNING, logger="asgi_cleanup"):
        await call(middleware, steps)
    [late] = [r for r in caplog.records if "past durable_grace" in r.getMessage()]
    assert "may have run already" in late.getMessage()
    assert "arq_record" in late.cleanup_name  # type: ignore[attr-defined]
    assert late.cleanup_name in late.getMessage()  # type: ignore[attr-defined]
    await middleware.queue.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("queue", ["celery", "arq"])
async def test_a_broker_that_refuses_the_record_raises_in_the_endpoint(
    anyio_backend: str, queue: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    options: dict[str, Any] = {"arq_redis_url": url}
    job = "arq_record"
    if queue == "celery":
        options, job = {"celery_app": Celery(broker=url)}, "queue_jobs.record"
    middleware = CleanupMiddleware(lambda *a: None, queue=queue, **options)
    caught: list[BaseException] = []

    async def steps(registry: CleanupRegistry) -> None:
        started = time.monotonic()
        try:
            await registry.register_job(job, durable=True)
        except Exception as exc:
            caught.append(exc)
        assert time.monotonic() - started < 3  # one attempt, one retry 0.2 s later
        assert len(registry) == 0

    with caplog.at_level(logging.WARNING, logger="asgi_cleanup"):
        await call(middleware, steps)
    assert len(caught) == 1
    assert isinstance(caught[0], middleware.queue.transient)  # type: ignore[union-attr]
    [retrying] = [r for r in caplog.records if "retrying once" in r.getMessage()]
    assert retrying.cleanup_name in retrying.getMessage()  # type: ignore[attr-defined]
    assert job in retrying.cleanup_name  # type: ignore[attr-defined]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("queue", ["celery", "arq"])
async def test_what_a_durable_registration_costs_in_the_request(
    anyio_backend: str, queue: str, broker: RedisServer, record_property: pytest.RecordProperty
) -> None:
    broker.client().flushdb()
    options: dict[str, Any] = {"arq_redis_url": broker.url}
    job = "arq_record"
    if queue == "celery":
        options, job = {"celery_app": Celery(broker=broker.url)}, "queue_jobs.record"
    middleware = CleanupMiddleware(lambda *a: None, queue=queue, **options)
    registry = middleware._registry()
    await registry.register_job(job, "warm-up", durable=True)  # the connection is made
    durable, plain = [], []
    for i in range(COST_RUNS):
        started = time.perf_counter()
        await registry.register_job(job, i, durable=True)
        durable.append(time.perf_counter() - started)
        started = time.perf_counter()
        registry.register_job(job, i)
        plain.append(time.perf_counter() - started)
    figures = {
        "durable_median_ms": statistics.median(durable) * 1e3,
        "durable_max_ms": max(durable) * 1e3,
        "plain_median_ms": statistics.median(plain) * 1e3,
    }
    record_property(f"durable_cost_{queue}", figures)
    print(f"\n{queue}: a durable registration in the request, {COST_RUNS} runs: {figures}")
    assert figures["durable_median_ms"] < 100, figures  # loose: CI's cores are shared
    await middleware.queue.aclose()  # type: ignore[union-attr]
