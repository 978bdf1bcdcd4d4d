"""What each real server does (SPEC section 6), proven, and what the middleware makes of it.

The facts are the servers' own, mostly shown on routes under ``/bare`` (no middleware), so that
a server upgrade that changes one fails here, naming it, rather than somewhere obscure. Where a
fact is about one server only, the others skip, saying what they do instead.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from servers import (
    APP_ERROR_DELAY,
    STARTED_RESPONSE_ON_APP_ERROR,
    RawHTTPConnection,
    RawWebSocket,
    ServerProcess,
    limit,
    marks_of,
    read_marks,
    require,
    wait_for_marks,
)

pytestmark = pytest.mark.real_server

PROMPT = 0.5

Marks = list[dict[str, Any]]


def the_end(marks: Marks, rid: str) -> dict[str, Any]:
    ends = marks_of(marks, "end", rid)
    assert len(ends) == 1, f"expected exactly one end mark for {rid!r}, got {ends}; all: {marks}"
    return ends[0]


# --- what the app is given ------------------------------------------------------------------------

#: SPEC 6: ``scope["asgi"]`` and ``scope["extensions"]`` (None: absent) of an http request.
SCOPE_FACTS: dict[str, tuple[dict[str, str], dict[str, Any] | None]] = {
    "uvicorn": ({"version": "3.0", "spec_version": "2.3"}, None),
    "hypercorn-asyncio": ({"version": "3.0", "spec_version": "2.1"}, {}),
    "hypercorn-trio": ({"version": "3.0", "spec_version": "2.1"}, {}),
    "granian": (
        {"version": "3.0", "spec_version": "2.3"},
        {"http.response.pathsend": {}, "websocket.http.response": {}},
    ),
    "daphne": ({"version": "3.0"}, None),
}


def test_scope_lifespan_and_late_disconnects_are_as_spec_6_says(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """The ASGI version and extensions each server gives; lifespan on by default everywhere
    but daphne; and an ``http.disconnect`` that a server gives after a complete response (all
    four answer a late ``receive()`` with one at once) does not make ``client_disconnected``
    true."""
    with RawHTTPConnection(server.port) as conn:
        info = json.loads(conn.get("/scope").body)
        conn.get("/late-receive?id=late")

    asgi, extensions = SCOPE_FACTS[server_kind]
    assert info["asgi"] == asgi, info
    assert info["extensions"] == extensions, info
    assert info["lifespan_started"] is (limit(server_kind, "lifespan") is None), info
    marks = wait_for_marks(marks_path, lambda m: bool(marks_of(m, "end", "late")), 3.0)
    lifespan_marks = marks_of(marks, "lifespan-startup")
    assert len(lifespan_marks) == (0 if limit(server_kind, "lifespan") else 1), lifespan_marks

    (late,) = marks_of(marks, "late-receive", "late")
    assert late["message"] == "http.disconnect", late
    late_outcome = the_end(marks, "late")["outcome"]
    assert late_outcome["client_disconnected"] is False, late_outcome
    assert late_outcome["response_complete"] is True, late_outcome


# --- what the server does when the app raises -----------------------------------------------------


def test_how_the_server_answers_an_app_error_without_the_middleware(
    server_kind: str, server: ServerProcess
) -> None:
    """Raised before the response: a 500 (daphne's comes from a check that runs once a
    second). Raised after it started: the response is cut at once, except on daphne, whose
    check then fails on it (``ValueError: HTTP response has already been started`` in
    ``handle_exception``) and is never run again: the response stays unfinished with its
    connection open, and later app errors get no 500 at all. The middleware's tests hold it to
    the same."""
    bar = PROMPT + APP_ERROR_DELAY.get(server_kind, 0.0)
    with RawHTTPConnection(server.port) as conn:
        before = conn.get("/bare/error")
    assert before.status == 500, before
    assert before.elapsed < bar, before

    with RawHTTPConnection(server.port) as conn:
        after = conn.get("/bare/error-after-start", timeout=PROMPT, partial_ok=True)
        still_open = not conn.wait_closed(PROMPT)
    assert after.status == 200, after
    assert not after.complete, after
    fate = "open" if still_open else "cut"
    assert fate == STARTED_RESPONSE_ON_APP_ERROR.get(server_kind, "cut"), after

    with RawHTTPConnection(server.port) as conn:
        try:
            again = conn.get("/bare/error", timeout=bar)
        except TimeoutError:
            again = None
    if fate == "open":
        assert again is None, f"{server_kind} answered an app error again: {again}"
    else:
        assert again is not None, f"{server_kind} sent no 500 for a later app error"
        assert again.status == 500, again


# --- what the server does at shutdown with an app call still running -----------------------------

#: SPEC 6, at SIGINT, to an app call that goes on after its response ("ended": waited for).
LINGER_AT_SHUTDOWN = {
    "uvicorn": "ended",  # waits for request tasks (no --timeout-graceful-shutdown: for ever)
    "hypercorn-asyncio": "ended",  # waits up to --graceful-timeout, 3 s by default
    "hypercorn-trio": "ended",
    "granian": "dropped",  # no cancellation, no finally: the task is simply never resumed
    "daphne": "cancelled",  # Task.cancel() at once
}
LINGER = 2.0


def test_what_the_server_does_at_shutdown_to_an_app_call_that_outlives_its_response(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """Without the middleware: an app call still running 2 s after its response when SIGINT
    comes. uvicorn and hypercorn wait for it, granian drops it silently (so only a held
    lifespan shutdown, which the middleware's drain is, can save work there), daphne cancels it
    natively at once (so only a phase that survives ``Task.cancel()`` can)."""
    with RawHTTPConnection(server.port) as conn:
        assert conn.get(f"/bare/linger?id=bare&seconds={LINGER}").status == 200
    wait_for_marks(marks_path, lambda m: bool(marks_of(m, "linger-start", "bare")), 2.0)
    signalled = time.time()
    returncode = server.shutdown(signal.SIGINT, timeout=LINGER + 5)
    exited = time.time()

    marks = read_marks(marks_path)
    cancelled = marks_of(marks, "linger-cancelled", "bare")
    if marks_of(marks, "linger-end", "bare"):
        fate = "ended"
    elif cancelled:
        fate = "cancelled"
    else:
        fate = "dropped"
    assert fate == LINGER_AT_SHUTDOWN[server_kind], (returncode, marks)
    if fate == "dropped":
        assert not marks_of(marks, "linger-finally", "bare"), "dropped, yet its finally ran"
        assert exited - signalled < LINGER, "the server waited for the app call"
    if fate == "cancelled":
        assert cancelled[0]["t"] - signalled < PROMPT, "not cancelled at once"


def test_daphne_cancels_at_shutdown_at_once_and_a_cleanup_phase_survives_it(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """Daphne cancels the app task natively at SIGINT (above) and waits for it: the phase of
    one request in flight (a sync and an async cleanup, 1 s each) runs to its end first."""
    if LINGER_AT_SHUTDOWN[server_kind] == "ended":
        pytest.skip(f"{server_kind} waits for request tasks at a signal, up to its grace period")
    if LINGER_AT_SHUTDOWN[server_kind] == "dropped":
        pytest.skip(f"{server_kind} never cancels request tasks: it drops them after the lifespan")
    with RawHTTPConnection(server.port) as conn:
        assert conn.get("/slow?id=phase&n=2&mix=1&sleep=1.0").status == 200
    wait_for_marks(marks_path, lambda m: bool(marks_of(m, "start", "phase")), 2.0)
    assert server.shutdown(signal.SIGINT, timeout=8) == 0
    marks = read_marks(marks_path)
    ends = marks_of(marks, "end", "phase")
    assert sorted(m["idx"] for m in ends) == [0, 1], marks
    assert ends[-1]["t"] - marks_of(marks, "start", "phase")[0]["t"] >= 2.0 - 0.05, marks


def test_daphne_application_close_timeout_cancels_natively_and_the_phase_survives(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """SPEC 6: daphne cancels an app task natively ``--application-close-timeout`` seconds
    after its response (checked once a second). Without the middleware an app call is cut
    there; a cleanup phase runs to its end (2.5 s), although daphne cancels it every second."""
    require(server_kind, "close-timeout")
    server = start_server(extra_args=["--application-close-timeout", "1"])
    with RawHTTPConnection(server.port) as conn:
        bare = conn.get("/bare/linger?id=bare&seconds=4")
        ours = conn.get("/slow?id=ours&sleep=2.5")
    marks = wait_for_marks(
        marks_path,
        lambda m: bool(marks_of(m, "linger-cancelled", "bare") and marks_of(m, "end", "ours")),
        timeout=5.0,
    )
    (cancelled,) = marks_of(marks, "linger-cancelled", "bare")
    assert 1.0 <= cancelled["t"] - bare.ended_at < 2.5, (bare, cancelled)
    assert not marks_of(marks, "linger-end", "bare"), marks
    (start,) = marks_of(marks, "start", "ours")
    end = the_end(marks, "ours")
    assert end["t"] - start["t"] >= 2.5 - 0.05, (start, end)
    assert start["t"] >= ours.ended_at - 0.05, (ours, start)
    assert "took too long to shut down and was killed" in server.log_text()


# --- websockets -----------------------------------------------------------------------------------

#: When the server answers a client's websocket close: at once, or only when the app call has
#: returned (granian).
WEBSOCKET_CLOSE_ANSWER = {"granian": "when-the-app-returns"}


def test_when_the_server_answers_a_clients_websocket_close(
    server_kind: str, server: ServerProcess
) -> None:
    """Without the middleware, an app that returns 1 s after ``websocket.disconnect``: granian
    answers the client's close only then, the others at once. (So on granian, a cleanup phase
    run in the app call after a client's close delays the client's closing handshake.)"""
    linger = 1.0
    with RawWebSocket(server.port, f"/bare/ws?id=bare&linger={linger}") as ws:
        began = time.monotonic()
        answer = ws.close(1000, timeout=linger + 2)
        took = time.monotonic() - began
    assert answer == 1000, answer
    if WEBSOCKET_CLOSE_ANSWER.get(server_kind) == "when-the-app-returns":
        assert took >= linger - 0.05, f"answered after {took:.3f} s"
    else:
        assert took < PROMPT, f"answered after {took:.3f} s"


# --- several workers ------------------------------------------------------------------------------


def test_hypercorn_workers_still_shutting_down_are_killed_when_the_first_exits(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """hypercorn ``--workers 2``: at SIGINT the parent waits for the first worker to exit, then
    terminates the others (SIGTERM, which they do not handle): a cleanup (3 s) still running
    in a worker that is not the first to finish is lost, whatever the middleware does."""
    require(server_kind, "workers")
    if limit(server_kind, "workers-shutdown") is None:
        pytest.skip(f"{server_kind} lets each worker finish its shutdown")
    server = start_server(workers=2)
    # Open connections until one reaches each worker; keep one to each.
    by_pid: dict[int, RawHTTPConnection] = {}
    deadline = time.monotonic() + 10
    while len(by_pid) < 2 and time.monotonic() < deadline:
        conn = RawHTTPConnection(server.port)
        pid = int(conn.get("/slow?id=probe&n=0&hold=0.05").headers["x-pid"])
        if pid in by_pid:
            conn.close()
        else:
            by_pid[pid] = conn
    assert len(by_pid) == 2, f"connections reached only {list(by_pid)}"
    (idle_pid, idle), (busy_pid, busy) = by_pid.items()
    idle.close()
    assert busy.get("/slow?id=lost&sleep=3").status == 200
    busy.close()
    wait_for_marks(marks_path, lambda m: bool(marks_of(m, "start", "lost")), 2.0)
    signalled = time.monotonic()
    server.shutdown(signal.SIGINT, timeout=10)
    took = time.monotonic() - signalled

    marks = read_marks(marks_path)
    assert not marks_of(marks, "end", "lost"), f"the busy worker was not killed: {marks}"
    assert took < 3, f"the server waited {took:.1f} s for the busy worker"
    assert [m["pid"] for m in marks_of(marks, "lifespan-shutdown")] == [idle_pid], (
        idle_pid,
        busy_pid,
        marks,
    )
