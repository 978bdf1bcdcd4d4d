"""``async_limit`` under a burst against a real uvicorn: 2,000 requests answered at once, each
leaving a cleanup that holds one of a pool's ten connections for 50 ms (``burst_app``)."""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers import HOST, ServerProcess

pytestmark = pytest.mark.real_server

REQUESTS = 2_000
CLIENTS = 50  # keep-alive connections, each sending its share of the requests in turn


def burst(port: int) -> None:
    def client(count: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=10)
        try:
            for _ in range(count):
                conn.request("GET", "/")
                response = conn.getresponse()
                assert response.status == 200
                response.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(CLIENTS) as executor:
        for future in [executor.submit(client, REQUESTS // CLIENTS) for _ in range(CLIENTS)]:
            future.result()


def stats_once_settled(port: int, deadline: float) -> dict[str, int]:
    """The pool's figures, once every cleanup has held a connection or failed to get one."""
    while True:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        try:
            conn.request("GET", "/stats")
            stats: dict[str, int] = json.loads(conn.getresponse().read())
        finally:
            conn.close()
        if stats["held"] + stats["exhausted"] >= REQUESTS or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def serve_burst(tmp_path: Path, async_limit: str) -> dict[str, int]:
    server = ServerProcess(
        kind="uvicorn",
        log_path=tmp_path / "server.log",
        app="burst_app:app",
        env={"BURST_ASYNC_LIMIT": async_limit},
    )
    server.start()
    try:
        began = time.monotonic()
        burst(server.port)
        answered = time.monotonic() - began
        stats = stats_once_settled(server.port, deadline=time.monotonic() + 60)
        stats["answered_ms"] = round(answered * 1000)
        print(f"async_limit={async_limit}: {stats}")  # the figures the docs quote
        return stats
    finally:
        server.stop()


def test_with_async_limit_the_pool_is_never_exhausted_and_every_cleanup_runs_once(
    tmp_path: Path,
) -> None:
    stats = serve_burst(tmp_path, "10")
    assert stats["held"] == REQUESTS
    assert stats["exhausted"] == 0
    assert stats["max_in_use"] <= 10
    assert stats["max_waiting"] == 0  # the cap queues them, not the pool


def test_without_async_limit_the_burst_exhausts_the_pool(tmp_path: Path) -> None:
    stats = serve_burst(tmp_path, "none")
    assert stats["held"] + stats["exhausted"] == REQUESTS
    assert stats["exhausted"] > 0  # what the cap prevents
    assert stats["max_waiting"] > 10
