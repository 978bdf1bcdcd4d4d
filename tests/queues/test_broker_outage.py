"""A broker that is down when the first requests arrive: each enqueue is retried once, then
logged and reported (on_complete, on_error); the clients notice nothing; once the broker is
back, later requests enqueue normally and the workers run their jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Serve, read_marks
from queue_support import RedisServer, start_worker
from servers import RawHTTPConnection

from asgi_cleanup.queues._jobs import RETRY_DELAY

pytestmark = pytest.mark.real_server

DOWN, UP = 3, 3


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_broker_down_is_retried_once_then_reported_and_later_requests_enqueue(
    queue_kind: str, serve: Serve, tmp_path: Path
) -> None:
    broker = RedisServer(tmp_path)  # its port chosen, nothing listening yet
    server = serve(broker.url)
    marks_path = tmp_path / "marks.jsonl"

    with RawHTTPConnection(server.port) as conn:
        for i in range(DOWN):
            response = conn.request("GET", f"/ok/down-{i}")
            assert response.status == 200
            assert response.elapsed < 0.5
    wait_for(lambda: len(read_marks(marks_path)) >= DOWN, timeout=15)
    marks = read_marks(marks_path)
    assert len(marks) == DOWN
    for mark in marks:
        (report,) = mark["reports"]
        assert report["exception"] is not None, mark
        assert not report["timed_out"], mark
        # Two attempts, the retry after RETRY_DELAY, both refused at once.
        assert RETRY_DELAY <= report["duration"] < RETRY_DELAY + 1.0, mark
    log = server.log_text()
    assert log.count("retrying once") == DOWN, log
    assert log.count("failed for GET /ok/down-") == DOWN, log

    broker.start()
    worker = start_worker(queue_kind, broker, tmp_path / "worker.log")
    try:
        with RawHTTPConnection(server.port) as conn:
            for i in range(UP):
                assert conn.request("GET", f"/ok/up-{i}").status == 200
        ran = broker.wait_results("up-", lambda found: len(found) >= UP, timeout=20)
        assert sorted(job["tag"] for job in ran) == [f"up-{i}" for i in range(UP)]
        assert broker.results("down-") == []
        later = read_marks(marks_path)[DOWN:]
        assert [r["exception"] for mark in later for r in mark["reports"]] == [None] * UP
    finally:
        worker.stop()
        broker.stop()
