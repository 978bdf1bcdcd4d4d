"""A broker slowed by 1 s per call (a delaying TCP proxy in front of the real Redis): the clients
see no delay, on one keep-alive connection, and the cleanup's timeout bounds the enqueue."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Serve, read_marks
from queue_support import RedisServer, delay_proxy
from servers import RawHTTPConnection

pytestmark = pytest.mark.real_server

DELAY = 1.0  # seconds the proxy holds each call to the broker
TIMEOUT = 0.5  # the middleware's per-cleanup timeout
PROMPT = 0.2  # what a client may wait, at most, for a response here
REQUESTS = 4


def test_a_slow_broker_delays_no_client_and_the_timeout_bounds_the_enqueue(
    queue_kind: str, broker: RedisServer, serve: Serve, tmp_path: Path
) -> None:
    with delay_proxy(broker.port, DELAY) as proxy:
        server = serve(proxy.url, timeout=TIMEOUT)
        with RawHTTPConnection(server.port) as conn:
            waits = []
            for i in range(REQUESTS):
                response = conn.request("GET", f"/ok/slow-{i}")
                assert response.status == 200
                waits.append(response.elapsed)
        assert max(waits) < PROMPT, waits
        deadline = time.monotonic() + REQUESTS * (TIMEOUT + 1.5) + 5
        while len(read_marks(tmp_path / "marks.jsonl")) < REQUESTS and time.monotonic() < deadline:
            time.sleep(0.05)
    marks = read_marks(tmp_path / "marks.jsonl")
    assert len(marks) == REQUESTS
    for mark in marks:
        (report,) = mark["reports"]
        assert report["timed_out"], mark
        # The SPEC's grace for a cleanup that does not stop at once is at most 1 s.
        assert TIMEOUT <= report["duration"] < TIMEOUT + 1.0, mark
    assert server.log_text().count("timed out after 0.5s and was abandoned") == REQUESTS
