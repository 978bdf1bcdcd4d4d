"""Every request that registers a job gives one job run by a real worker, whatever the request
became: a 200, the app's exception (the server's 500), a client that left mid-stream. Served by
a real uvicorn, enqueued on a real Redis, run by real Celery and arq worker processes."""

from __future__ import annotations

import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import Serve, read_marks
from queue_support import Process, RedisServer
from servers import RawHTTPConnection

pytestmark = pytest.mark.real_server

N = 200
ROUTES = ("ok", "raise", "stream", "plain")
JOB_ID = re.compile(r"asgi-cleanup:[0-9a-f]{32}:1")


def request(port: int, route: str, tag: str) -> tuple[int | None, float]:
    """One request on a connection of its own: its status (None: the client left) and how long
    the client waited for what it read."""
    started = time.monotonic()
    with RawHTTPConnection(port) as conn:
        if route == "stream":
            conn.get_until(f"/{route}/{tag}", b"first")
            return None, time.monotonic() - started
        response = conn.request("GET", f"/{route}/{tag}")
        return response.status, response.elapsed


def test_n_requests_give_n_jobs_each_run_once_with_their_outcome(
    queue_kind: str, broker: RedisServer, worker: Process, serve: Serve, tmp_path: Path
) -> None:
    server = serve(broker.url)
    prefix = f"n-{queue_kind}-"
    tags = {f"{prefix}{i}": ROUTES[i % len(ROUTES)] for i in range(N)}

    with ThreadPoolExecutor(8) as pool:
        answers = dict(
            zip(
                tags,
                pool.map(lambda item: request(server.port, item[1], item[0]), tags.items()),
                strict=True,
            )
        )
    ran = broker.wait_results(prefix, lambda found: len(found) >= N, timeout=60)
    time.sleep(0.5)  # a second run of any job would show up meanwhile
    ran = broker.results(prefix)

    expected_status = {"ok": 200, "plain": 200, "raise": 500, "stream": None}
    assert {tag: answers[tag][0] for tag in tags} == {
        t: expected_status[r] for t, r in tags.items()
    }
    runs = Counter(job["tag"] for job in ran)
    assert set(runs) == set(tags), f"missing: {sorted(set(tags) - set(runs))[:10]}"
    # arq never runs a job id twice; Celery could after a retried publish, and none is here.
    assert set(runs.values()) == {1}, f"run more than once: {runs.most_common(5)}"
    for job in ran:
        assert JOB_ID.fullmatch(job["job_id"]), job
        check_outcome(tags[job["tag"]], job["tag"], job["outcome"])
    marks = read_marks(tmp_path / "marks.jsonl")
    assert len(marks) == N
    assert all(r["exception"] is None for mark in marks for r in mark["reports"]), marks[:3]


def check_outcome(route: str, tag: str, outcome: dict[str, Any] | None) -> None:
    if route == "plain":
        assert outcome is None
        return
    assert outcome is not None
    assert outcome["method"] == "GET"
    assert outcome["path"] == f"/{route}/{tag}"
    assert isinstance(outcome["duration"], float)
    assert outcome["duration"] >= 0
    summary = {k: outcome[k] for k in ("status", "exception", "response_complete")}
    summary["client_disconnected"] = outcome["client_disconnected"]
    expected = {
        "ok": {"status": 200, "exception": None, "response_complete": True},
        "raise": {"status": None, "exception": "RuntimeError", "response_complete": False},
        "stream": {"status": 200, "exception": None, "response_complete": False},
    }[route]
    assert summary == {**expected, "client_disconnected": route == "stream"}, (tag, outcome)
