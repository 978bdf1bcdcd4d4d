"""The starvation of issue #22, part 3, against real servers: sixteen requests leave a sync
cleanup that sleeps 1 s, taking every thread of the default ``thread_limit`` but the lane;
meanwhile, for 1.5 s, four clients request ``/db``, whose connection, of a pool of four, is
returned by a context manager's exit (``release_app``)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from servers import HOST, ServerProcess

pytestmark = pytest.mark.real_server

SLOW_REQUESTS = 16
CLIENTS = 4
DB_SECONDS = 1.5


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200
    return response.read()


def db_client(port: int, until: float) -> list[float]:
    """Request ``/db`` on one keep-alive connection until ``until``: each request's seconds."""
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    latencies = []
    try:
        while time.monotonic() < until:
            began = time.monotonic()
            get(conn, "/db")
            latencies.append(time.monotonic() - began)
    finally:
        conn.close()
    return latencies


def slow_request(port: int) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        get(conn, "/slow")
    finally:
        conn.close()


def starve(tmp_path: Path, kind: str, via: str) -> dict[str, Any]:
    server = ServerProcess(
        kind=kind,
        log_path=tmp_path / "server.log",
        app="release_app:app",
        env={"RELEASE_VIA": via},
    )
    server.start()
    try:
        with ThreadPoolExecutor(SLOW_REQUESTS + CLIENTS) as executor:
            slow = [executor.submit(slow_request, server.port) for _ in range(SLOW_REQUESTS)]
            for future in slow:
                future.result()
            until = time.monotonic() + DB_SECONDS
            clients = [executor.submit(db_client, server.port, until) for _ in range(CLIENTS)]
            latencies = [seconds for future in clients for seconds in future.result()]
        conn = http.client.HTTPConnection(HOST, server.port, timeout=5)
        deadline = time.monotonic() + 15
        while True:  # until every release and every slow cleanup has run
            stats: dict[str, Any] = json.loads(get(conn, "/stats"))
            done = stats["slow_ran"] == SLOW_REQUESTS and stats["releases"] == len(latencies)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        conn.close()
    finally:
        server.stop()
    stats["answered"] = len(latencies)
    stats["max_latency_ms"] = round(max(latencies) * 1000, 1)
    print(f"{kind}, release via {via}: {stats}")  # the figures the docs quote
    return stats


@pytest.mark.parametrize("kind", ["uvicorn", "hypercorn-trio"])
def test_releases_wait_under_100_ms_while_slow_sync_cleanups_hold_the_other_threads(
    tmp_path: Path, kind: str
) -> None:
    stats = starve(tmp_path, kind, "enter_context")
    assert stats["slow_ran"] == SLOW_REQUESTS
    assert stats["releases"] == stats["answered"] > 0
    assert stats["releases_during_slow"] == stats["releases"]
    assert stats["max_release_wait_ms"] < 100
    assert stats["exhausted"] == 0


def test_the_same_exit_registered_as_any_sync_cleanup_waits_behind_them(tmp_path: Path) -> None:
    # What every release did before the lane: it waits for a thread behind the slow cleanups,
    # holding its connection, so the pool runs dry and /db stalls with it.
    stats = starve(tmp_path, "uvicorn", "register")
    assert stats["slow_ran"] == SLOW_REQUESTS
    assert stats["releases"] == stats["answered"] > 0
    assert stats["max_release_wait_ms"] > 500
    assert stats["max_latency_ms"] > 500
