"""The core promises of SPEC sections 2 and 5, proven against real servers on loopback.

Each test runs on uvicorn, hypercorn (asyncio worker) and hypercorn (trio worker), started as a
subprocess by the ``start_server``/``server`` fixtures (``tests/conftest.py``,
``tests/servers.py``) serving ``tests/server_apps.py``. The cleanups write JSON marks to a file,
which is how the test sees them run in the server process; clock times in the marks
(``time.time()``) are comparable with the client's ``RawResponse.ended_at``.

In-process clients return only when the app call returns, cleanups included, so "the client has
the response before the cleanups end" can only be proven here.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import (
    ConnectionClosedError,
    RawHTTPConnection,
    RawResponse,
    ServerProcess,
    marks_of,
    read_marks,
    wait_for_marks,
)

#: The client must have the whole response within this time (SPEC 5) ...
PROMPT = 0.5
#: ... although the cleanup of the request sleeps this long.
SLOW_CLEANUP = 1.5

Marks = list[dict[str, Any]]


def ended(*ids: str) -> Callable[[Marks], bool]:
    """A ``wait_for_marks`` predicate: every request id has an "end" mark."""
    return lambda marks: all(marks_of(marks, "end", rid) for rid in ids)


def the_end(marks: Marks, rid: str) -> dict[str, Any]:
    """The single "end" mark of request ``rid`` (the assertion says what there was instead)."""
    ends = marks_of(marks, "end", rid)
    assert len(ends) == 1, f"expected exactly one end mark for {rid!r}, got {ends}; all: {marks}"
    return ends[0]


def assert_prompt_ok(response: RawResponse, what: str) -> None:
    assert response.status == 200, f"{what}: {response}"
    assert response.complete, f"{what}: response cut: {response}"
    assert response.body == b"ok", f"{what}: {response}"
    assert response.elapsed < PROMPT, f"{what}: took {response.elapsed:.3f} s (bar {PROMPT} s)"


# --- 1. cleanups never delay what the client sees (SPEC 2.2, 5) ---------------------------------


def test_response_and_next_keepalive_request_arrive_before_slow_cleanups_end(
    server: ServerProcess, marks_path: Path
) -> None:
    with RawHTTPConnection(server.port) as conn:
        first = conn.get(f"/slow?id=first&sleep={SLOW_CLEANUP}")
        # The same socket: the server kept the connection, and serves the next request on it
        # while the first request's (async) cleanup is still sleeping.
        second = conn.get(f"/slow-sync?id=second&sleep={SLOW_CLEANUP}")
        local_address = conn.local_address()

    assert_prompt_ok(first, "first request")
    assert not first.server_closes, f"server did not keep the connection: {first}"
    assert_prompt_ok(second, "second request on the same connection")
    assert conn.requests == 2, f"both requests on one connection ({local_address})"

    marks = wait_for_marks(marks_path, ended("first", "second"), timeout=SLOW_CLEANUP + 3)
    end_first, end_second = the_end(marks, "first"), the_end(marks, "second")
    assert end_first["kind"] == "async", end_first
    assert end_second["kind"] == "sync", end_second
    # The cleanups really ran after the client had its responses, and for their whole length.
    assert end_first["t"] - first.ended_at > SLOW_CLEANUP - PROMPT, (first, end_first)
    assert end_second["t"] - second.ended_at > SLOW_CLEANUP - PROMPT, (second, end_second)
    # The follow-up was served while the first cleanup was still running.
    assert second.ended_at < end_first["t"], (second, end_first)
    for end, status in ((end_first, 200), (end_second, 200)):
        assert end["outcome"]["status"] == status, end
        assert end["outcome"]["response_complete"] is True, end
        assert end["outcome"]["exception"] is None, end


# --- 2. app errors: the server's answer at once, the cleanups all the same (SPEC 2.2, 2.7) -----


#: The error routes: (route, the status the app sent before raising, or None).
ERRORS_BEFORE_AND_AFTER_START = [("/error", None), ("/error-after-start", 200)]


def test_app_error_reaches_client_promptly_and_cleanup_still_runs(
    server: ServerProcess, marks_path: Path
) -> None:
    """Raised before the response started: the server's own 500 at once. Raised after it
    started: the server cuts the response off at once. Either way the cleanup (1.5 s) runs,
    and its Outcome has the exception."""
    responses: dict[str, RawResponse] = {}
    for route, _status in ERRORS_BEFORE_AND_AFTER_START:
        with RawHTTPConnection(server.port) as conn:
            responses[route] = conn.get(f"{route}?id={route}&sleep={SLOW_CLEANUP}")
            closed = conn.wait_closed(PROMPT)
        assert closed, f"{route}: the server should close the connection promptly after the error"

    for route, status in ERRORS_BEFORE_AND_AFTER_START:
        response = responses[route]
        assert response.elapsed < PROMPT, f"{route}: took {response.elapsed:.3f} s: {response}"
        if status is None:
            # No response started: the server sends its own 500 (the middleware sends none).
            assert response.status == 500, f"{route}: {response}"
            assert response.complete, f"{route}: {response}"
        else:
            assert response.status == status, f"{route}: {response}"
            assert not response.complete, f"{route}: an unfinished response looks complete"

    routes = [route for route, _ in ERRORS_BEFORE_AND_AFTER_START]
    marks = wait_for_marks(marks_path, ended(*routes), timeout=SLOW_CLEANUP + 3)
    for route, status in ERRORS_BEFORE_AND_AFTER_START:
        end = the_end(marks, route)
        outcome = end["outcome"]
        assert outcome is not None, end
        assert "AppError" in (outcome["exception"] or ""), end
        assert outcome["status"] == status, end
        assert outcome["response_complete"] is False, end
        assert end["t"] - responses[route].ended_at > SLOW_CLEANUP - PROMPT, (route, end)


def _connection_fate(server: ServerProcess, target: str) -> tuple[str, RawResponse]:
    """Send ``target`` and then a follow-up request on the same connection.

    "kept" if the follow-up was answered promptly on that connection, "closed" if the server
    closed it promptly (announced or not); anything slower fails.
    """
    with RawHTTPConnection(server.port) as conn:
        first = conn.get(target)
        assert first.elapsed < PROMPT, f"{target} took {first.elapsed:.3f} s: {first}"
        if first.server_closes:
            assert conn.wait_closed(PROMPT), f"{target}: announced close did not happen"
            return "closed", first
        try:
            follow = conn.get("/health", timeout=PROMPT)
        except ConnectionClosedError:
            return "closed", first
        except TimeoutError:
            pytest.fail(f"follow-up after {target} not answered within {PROMPT} s")
        assert follow.status == 200, follow
        assert follow.complete, follow
        assert follow.elapsed < PROMPT, f"follow-up took {follow.elapsed:.3f} s: {follow}"
        return "kept", first


def test_keepalive_request_after_app_error_fares_as_without_middleware_and_promptly(
    server: ServerProcess, marks_path: Path
) -> None:
    """SPEC 2.7: a keep-alive follow-up is never broken or delayed by a cleanup phase.

    What the server does after an app error is its own (hypercorn keeps the connection when the
    app raises after a complete response, uvicorn closes it; both close after their own 500),
    so the promise is: the same as without the middleware (routes under ``/bare``), and at
    once. A middleware that held the exception back until after its slow cleanup would keep
    uvicorn's connection open for that long, then cut whatever request was in flight on it.
    """
    firsts: dict[str, RawResponse] = {}
    for route in ("/error-after-response", "/error"):
        bare_fate, _ = _connection_fate(server, f"/bare{route}")
        fate, firsts[route] = _connection_fate(server, f"{route}?id={route}&sleep={SLOW_CLEANUP}")
        assert fate == bare_fate, f"{route}: with the middleware {fate}, without it {bare_fate}"

    marks = wait_for_marks(marks_path, ended(*firsts), timeout=SLOW_CLEANUP + 3)
    for route, first in firsts.items():
        end = the_end(marks, route)
        assert end["outcome"] is not None, end
        assert "AppError" in (end["outcome"]["exception"] or ""), end
        assert end["t"] - first.ended_at > SLOW_CLEANUP - PROMPT, (first, end)


# --- 3. a client that leaves mid-stream (SPEC 1 Outcome, 2.2) -----------------------------------


def test_client_disconnect_mid_stream_still_runs_cleanup_with_client_disconnected(
    server: ServerProcess, marks_path: Path
) -> None:
    with RawHTTPConnection(server.port) as conn:
        # 25 chunks 0.2 s apart: about 5 s if the client stayed.
        head = conn.get_until("/stream?id=gone&chunks=25&interval=0.2", b"chunk 1\n")
    assert head.startswith(b"HTTP/1.1 200"), head

    marks = wait_for_marks(marks_path, ended("gone"), timeout=4.0)
    end = the_end(marks, "gone")
    assert not marks_of(marks, "stream-complete", "gone"), marks
    assert marks_of(marks, "disconnect-seen", "gone"), f"the app saw no http.disconnect: {marks}"
    outcome = end["outcome"]
    assert outcome is not None, end
    assert outcome["client_disconnected"] is True, end
    assert outcome["response_complete"] is False, end
    assert outcome["status"] == 200, end
    assert outcome["exception"] is None, end


# --- 4. graceful shutdown loses no cleanup (SPEC 2.6, 2.8) --------------------------------------


@pytest.mark.parametrize(
    ("graceful_timeout", "cleanup_seconds", "sig"),
    [
        pytest.param(None, 1.0, signal.SIGINT, id="server-default-grace-SIGINT"),
        # The server cancels the request tasks natively (Task.cancel() on asyncio, a cancel
        # scope on trio) 1 s in, while their cleanups still have 1 s to go.
        pytest.param(1, 2.0, signal.SIGINT, id="grace-shorter-than-cleanup-SIGINT"),
        pytest.param(1, 2.0, signal.SIGTERM, id="grace-shorter-than-cleanup-SIGTERM"),
    ],
)
def test_shutdown_signal_during_slow_cleanups_loses_none(
    start_server: Callable[..., ServerProcess],
    marks_path: Path,
    graceful_timeout: float | None,
    cleanup_seconds: float,
    sig: signal.Signals,
) -> None:
    server = start_server(graceful_timeout=graceful_timeout)
    # An async and a sync cleanup of complete responses (their phase runs in the request task,
    # which the server waits for, then cancels), and the cleanup of an app error (its phase
    # runs in a task of the middleware's own, which only the lifespan drain waits for; it is
    # 0.5 s longer, so that it is still running when the server is done with its own tasks).
    ids = ("async", "sync", "error")
    seconds = {"async": cleanup_seconds, "sync": cleanup_seconds, "error": cleanup_seconds + 0.5}
    for rid, target in zip(
        ids,
        (
            f"/long-cleanup?id=async&seconds={cleanup_seconds}",
            f"/long-cleanup?id=sync&seconds={cleanup_seconds}&sync=1",
            f"/error?id=error&sleep={seconds['error']}",
        ),
        strict=True,
    ):
        with RawHTTPConnection(server.port) as conn:
            response = conn.get(target)
        assert response.status == (500 if rid == "error" else 200), response
        assert response.elapsed < PROMPT, f"{rid}: took {response.elapsed:.3f} s"
    started = wait_for_marks(
        marks_path, lambda m: all(marks_of(m, "start", rid) for rid in ids), timeout=2.0
    )
    assert all(marks_of(started, "start", rid) for rid in ids), started
    assert not marks_of(started, "end"), f"cleanups ended before the signal: {started}"

    returncode = server.shutdown(sig, timeout=seconds["error"] + 8)

    marks = read_marks(marks_path)
    # uvicorn re-raises a handled SIGTERM once it has shut down, so it "dies" of it: fine.
    assert returncode in (0, -sig), f"{server.name} exited with {returncode}"
    for rid in ids:
        start, end = marks_of(marks, "start", rid)[0], the_end(marks, rid)
        assert end["t"] - start["t"] >= seconds[rid] - 0.1, (start, end)
    # SPEC 2.8: lifespan.shutdown reaches the app only once every cleanup phase has finished.
    lifespan = marks_of(marks, "lifespan-shutdown")
    assert len(lifespan) == 1, marks
    assert lifespan[0]["t"] >= max(the_end(marks, rid)["t"] for rid in ids), marks


# --- 5. exactly once under concurrent load (SPEC 2.3, 2.4) --------------------------------------

REQUESTS = 50
CONCURRENCY = 10


def test_concurrent_requests_run_each_cleanup_exactly_once_in_lifo_order(
    server: ServerProcess, marks_path: Path
) -> None:
    def one(client: httpx.Client, i: int) -> int:
        # idx 0 is a sync cleanup, idx 1 an async one (mix=1), each 50 ms.
        return client.get(f"/slow?id=r{i}&n=2&mix=1&sleep=0.05").status_code

    limits = httpx.Limits(max_connections=CONCURRENCY)
    with (
        httpx.Client(base_url=server.url, timeout=5.0, limits=limits) as client,
        ThreadPoolExecutor(max_workers=CONCURRENCY) as pool,
    ):
        statuses = list(pool.map(lambda i: one(client, i), range(REQUESTS)))
    assert statuses == [200] * REQUESTS

    expected = 2 * REQUESTS
    wait_for_marks(marks_path, lambda m: len(marks_of(m, "end")) >= expected, timeout=10.0)
    # Stop the server (it drains), so that a late duplicate would show too.
    assert server.shutdown(signal.SIGINT, timeout=10.0) == 0
    marks = read_marks(marks_path)

    ends = Counter((m["id"], m["idx"]) for m in marks_of(marks, "end"))
    starts = Counter((m["id"], m["idx"]) for m in marks_of(marks, "start"))
    wanted = {(f"r{i}", idx) for i in range(REQUESTS) for idx in (0, 1)}
    assert set(ends) == wanted, f"missing: {sorted(wanted - set(ends))}"
    assert sum(ends.values()) == expected, {k: n for k, n in ends.items() if n != 1}
    assert starts == ends
    for i in range(REQUESTS):
        rid = f"r{i}"
        last_registered_end = next(m for m in marks_of(marks, "end", rid) if m["idx"] == 1)
        first_registered_start = next(m for m in marks_of(marks, "start", rid) if m["idx"] == 0)
        assert last_registered_end["t"] <= first_registered_start["t"], (
            f"{rid}: not LIFO",
            marks_of(marks, "start", rid),
            marks_of(marks, "end", rid),
        )
