"""The queue options and ``job:`` directives are checked at construction, like every other
option and reference; ``register_job()`` refuses what its queue cannot take, at once. No broker
is needed: nothing connects before the first enqueue."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import queue_jobs
from arq.connections import RedisSettings
from celery import Celery
from kombu.transport.memory import Transport as MemoryTransport

from asgi_cleanup import CleanupMiddleware, CleanupRegistry, SettingsError
from asgi_cleanup.outcome import Outcome
from asgi_cleanup.queues import summary

URL = "redis://127.0.0.1:1/0"  # never connected to here


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"queue": "rq"}, ValueError, "queue must be 'celery' or 'arq', got 'rq'"),
        ({"queue": 1}, TypeError, "queue must be 'celery' or 'arq' or None, got int"),
        ({"queue": "celery"}, TypeError, "queue='celery' needs celery_app=, a Celery app"),
        ({"queue": "celery", "celery_app": "app"}, TypeError, "a Celery app, got str 'app'"),
        ({"queue": "arq"}, ValueError, "needs arq_redis= (RedisSettings) or arq_redis_url"),
        ({"queue": "arq", "arq_redis": URL}, TypeError, "arq_redis must be arq's RedisSettings"),
        ({"queue": "arq", "arq_redis_url": "http://x"}, ValueError, "must be a redis://"),
        ({"celery_app": Celery()}, ValueError, "celery_app is an option of queue='celery', but"),
        ({"queue": "celery", "arq_redis_url": URL}, ValueError, "arq_redis_url is an option of"),
    ],
)
def test_bad_queue_options_fail_at_construction(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as caught:
        CleanupMiddleware(app, **options)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"queue": "rq"}, "top level, key 'queue': queue must be 'celery' or 'arq'"),
        ({"queue": "arq", "arq_redis_url": 6379}, "key 'arq_redis_url': arq_redis_url must be"),
        ({"handlers": ["job:arq:"]}, "entry 'job:arq:': needs the name of an arq worker's"),
        (
            {"handlers": ["job:celery:queue_jobs:REDIS_URL"]},
            "is not a Celery task (it is str 'redis://",
        ),
        ({"handlers": ["job:celery:no_such_module:task"]}, "cannot import module 'no_such_module'"),
        (
            {"handlers": ["job:arq:arq_record"]},
            "is a job of queue='arq', but the middleware has no queue",
        ),
        (
            {"queue": "celery", "handlers": ["job:arq:arq_record"]},
            "'job:arq:arq_record' is a job of queue='arq', but the middleware has queue='celery'",
        ),
    ],
)
def test_bad_queue_settings_are_settings_errors(settings: dict[str, Any], words: str) -> None:
    options = {"celery_app": Celery()} if settings.get("queue") == "celery" else {}
    with pytest.raises(SettingsError) as caught:
        CleanupMiddleware(app, settings=settings, **options)
    assert words in str(caught.value)


def test_a_settings_file_names_the_queue_and_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(
        'queue = "arq"\narq_redis_url = "redis://127.0.0.1:1/0"\n'
        'handlers = ["job:arq:arq_record", "job:celery:queue_jobs.record"]\n'
    )
    with pytest.raises(SettingsError, match=r"queue_jobs\.record' is a job of queue='celery'"):
        CleanupMiddleware(app, settings=path)
    path.write_text(
        'queue = "arq"\narq_redis_url = "redis://127.0.0.1:1/0"\n'
        'handlers = ["job:arq:arq_record"]\n'
    )
    middleware = CleanupMiddleware(app, settings=path)
    assert middleware.queue is not None
    assert middleware.queue.kind == "arq"


def test_a_middleware_without_a_queue_keeps_the_plain_registry() -> None:
    assert CleanupMiddleware(app)._registry is CleanupRegistry
    assert CleanupMiddleware(app, settings={"timeout": 1.0})._registry is CleanupRegistry
    assert CleanupMiddleware(app).queue is None


def registry_of(middleware: CleanupMiddleware) -> CleanupRegistry:
    registry = middleware._registry()
    assert isinstance(registry, CleanupRegistry)
    return registry


def test_register_job_without_a_queue_says_what_to_configure() -> None:
    registry = registry_of(CleanupMiddleware(app))
    with pytest.raises(
        RuntimeError, match=r"register_job\(\) needs CleanupMiddleware\(queue=...\)"
    ):
        registry.register_job("arq_record")
    assert len(registry) == 0


@pytest.mark.parametrize(
    ("queue", "job", "words"),
    [
        ("arq", queue_jobs.record, "an arq job is its function's name, a string, not"),
        ("arq", "", "an arq job is its function's name, a string, not str ''"),
        ("celery", 42, "a Celery job is a task or a task's name, not int 42"),
        ("celery", "two words", "a Celery job is a task or a task's name, not str 'two words'"),
    ],
)
def test_register_job_refuses_a_job_its_queue_cannot_take(queue: str, job: Any, words: str) -> None:
    options = {"celery_app": Celery()} if queue == "celery" else {"arq_redis_url": URL}
    registry = registry_of(CleanupMiddleware(app, queue=queue, **options))
    with pytest.raises(TypeError, match=words):
        registry.register_job(job)
    assert len(registry) == 0


def test_each_job_of_a_request_has_its_own_key_under_the_request_s_id() -> None:
    middleware = CleanupMiddleware(app, queue="arq", arq_redis=RedisSettings(port=1))
    registry, other = registry_of(middleware), registry_of(middleware)
    first, second = registry.register_job("a"), registry.register_job("b", 1, x=2)
    third = other.register_job("a")
    assert len(registry) == 2
    request = first.job_id.rsplit(":", 1)[0]
    assert (first.job_id, second.job_id) == (f"{request}:1", f"{request}:2")
    assert third.job_id.rsplit(":", 1)[0] != request
    assert (second.args, second.kwargs) == ((1,), {"x": 2})
    registry.unregister(second)
    assert len(registry) == 1


def test_the_outcome_summary_is_small_serialisable_and_escaped() -> None:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/a\x1b[31m/b\u2028",
        "query_string": b"token=secret",
        "headers": [(b"cookie", b"secret")],
    }
    outcome = Outcome(scope, None, KeyError("k"), False, True, 0.25)
    assert summary(outcome) == {
        "status": None,
        "exception": "KeyError",
        "response_complete": False,
        "client_disconnected": True,
        "duration": 0.25,
        "method": "POST",
        "path": "/a\\x1b[31m/b\\u2028",
    }
    websocket = Outcome({"type": "websocket", "path": "/ws"}, None, SettingsError("x"), 1, 0, 1.0)
    assert summary(websocket)["method"] == "WEBSOCKET"  # type: ignore[index]
    assert summary(websocket)["exception"] == "asgi_cleanup.errors.SettingsError"  # type: ignore[index]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_arq_on_trio_is_refused_at_registration(anyio_backend: str) -> None:
    registry = registry_of(CleanupMiddleware(app, queue="arq", arq_redis_url=URL))
    with pytest.raises(RuntimeError, match="arq runs on asyncio only, and this app runs on trio"):
        registry.register_job("arq_record")


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"durable_grace": 0}, ValueError, "durable_grace must be > 0 seconds and finite, got 0"),
        ({"durable_grace": float("inf")}, ValueError, "durable_grace must be > 0 seconds"),
        ({"durable_grace": "30"}, TypeError, "durable_grace must be a number of seconds, got '30'"),
        ({"durable_grace": True}, TypeError, "durable_grace must be a number of seconds, got True"),
    ],
)
def test_bad_durable_grace_fails_at_construction(
    options: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=re.escape(words)):
        CleanupMiddleware(app, queue="arq", arq_redis_url=URL, **options)


def test_durable_grace_is_an_option_of_a_queue_and_a_settings_key(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="durable_grace is an option of a queue, but queue is None"
    ):
        CleanupMiddleware(app, durable_grace=5)
    path = tmp_path / "cleanup.toml"
    path.write_text('queue = "arq"\narq_redis_url = "redis://127.0.0.1:1/0"\ndurable_grace = 5\n')
    assert CleanupMiddleware(app, settings=path).queue.durable_grace == 5.0  # type: ignore[union-attr]
    keyword = CleanupMiddleware(app, settings=path, durable_grace=7.5)
    assert keyword.queue.durable_grace == 7.5  # type: ignore[union-attr]
    assert CleanupMiddleware(app, queue="arq", arq_redis_url=URL).queue.durable_grace == 30.0  # type: ignore[union-attr]
    path.write_text('queue = "arq"\narq_redis_url = "redis://127.0.0.1:1/0"\ndurable_grace = -1\n')
    with pytest.raises(SettingsError, match="key 'durable_grace': durable_grace must be > 0"):
        CleanupMiddleware(app, settings=path)


class NoBroadcastTransport(MemoryTransport):
    """A broker transport that cannot broadcast (as SQS's): workers cannot be told to revoke."""

    implements = MemoryTransport.implements.extend(exchange_type=frozenset(["direct"]))


def test_celery_refuses_durable_jobs_where_its_broker_cannot_revoke_them() -> None:
    celery_app = Celery(broker="memory://")
    celery_app.conf.broker_transport = f"{__name__}:NoBroadcastTransport"
    registry = registry_of(CleanupMiddleware(app, queue="celery", celery_app=celery_app))
    with pytest.raises(RuntimeError, match="needs a Celery broker that can broadcast"):
        registry.register_job("queue_jobs.record", durable=True)
    assert len(registry) == 0
    registry.register_job("queue_jobs.record")  # a plain job needs no broadcast


def test_celery_refuses_a_durable_grace_past_redis_visibility_timeout() -> None:
    celery_app = Celery(broker=URL)
    celery_app.conf.broker_transport_options = {"visibility_timeout": 60}
    middleware = CleanupMiddleware(app, queue="celery", celery_app=celery_app, durable_grace=60)
    with pytest.raises(RuntimeError, match=r"shorter than the Redis broker's visibility_timeout"):
        registry_of(middleware).register_job("queue_jobs.record", durable=True)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_durable_arq_jobs_on_trio_are_refused_before_anything_is_recorded(
    anyio_backend: str,
) -> None:
    registry = registry_of(CleanupMiddleware(app, queue="arq", arq_redis_url=URL))
    with pytest.raises(RuntimeError, match="arq runs on asyncio only"):
        registry.register_job("arq_record", durable=True)
