"""Fixtures of the queue tests: a real Redis (one per module), real Celery and arq workers on
it, and uvicorn serving ``queue_apps:app``; all stopped at teardown."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis, RedisSettings, create_pool
from queue_support import PYTHONPATH, Process, RedisServer, start_worker
from servers import ServerProcess

QUEUES = ["celery", "arq"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
async def arq_redis(broker: RedisServer) -> AsyncIterator[ArqRedis]:
    """A pool on ``broker``, emptied first: for tests that read what arq holds."""
    broker.client().flushdb()
    pool = await create_pool(RedisSettings.from_dsn(broker.url))
    yield pool
    await pool.aclose()


@pytest.fixture(scope="module", params=QUEUES)
def queue_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture(scope="module")
def worker(
    queue_kind: str, broker: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Process]:
    """A real worker of ``queue_kind`` on ``broker``, ready."""
    path = tmp_path_factory.mktemp("worker") / f"{queue_kind}.log"
    process = start_worker(queue_kind, broker, path)
    yield process
    process.stop()


Serve = Callable[..., ServerProcess]


@pytest.fixture
def serve(queue_kind: str, tmp_path: Path) -> Generator[Serve, None, None]:
    """``serve(redis_url, timeout=5.0, durable_grace=30.0)``: uvicorn serving
    ``queue_apps:app`` on the queue of ``queue_kind``; its on_complete marks go to
    ``tmp_path / "marks.jsonl"``."""
    started: list[ServerProcess] = []

    def start(redis_url: str, timeout: float = 5.0, durable_grace: float = 30.0) -> ServerProcess:
        env = {
            "PYTHONPATH": PYTHONPATH,
            "ASGI_CLEANUP_QUEUE": queue_kind,
            "ASGI_CLEANUP_REDIS_URL": redis_url,
            "ASGI_CLEANUP_TIMEOUT": str(timeout),
            "ASGI_CLEANUP_DURABLE_GRACE": str(durable_grace),
            "ASGI_CLEANUP_MARKS": str(tmp_path / "marks.jsonl"),
        }
        log = tmp_path / f"uvicorn-{len(started)}.log"
        server = ServerProcess("uvicorn", log, app="queue_apps:app", env=env)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


def read_marks(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
