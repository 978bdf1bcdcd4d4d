"""The core promises of SPEC sections 2 and 5, proven against real servers on loopback.

Each test runs on every server of ``servers.SERVER_KINDS`` (uvicorn, hypercorn with its asyncio
and its trio worker, granian, daphne), started as a subprocess by the ``start_server``/``server``
fixtures (``tests/conftest.py``, ``tests/servers.py``) serving ``tests/server_apps.py``. The
cleanups write JSON marks to a file, which is how the test sees them run in the server process;
clock times in the marks (``time.time()``) are comparable with the client's
``RawResponse.ended_at``. A server that cannot run a case skips it, saying why
(``servers.LIMITS``).

In-process clients return only when the app call returns, cleanups included, so "the client has
the response before the cleanups end" can only be proven here.

What each server itself does (SPEC section 6) is proven in ``test_real_server_facts.py``; faulty
cleanups and the log in ``test_real_server_isolation.py``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import (
    APP_ERROR_DELAY,
    STARTED_RESPONSE_ON_APP_ERROR,
    TESTS_DIR,
    ConnectionClosedError,
    RawHTTPConnection,
    RawResponse,
    RawWebSocket,
    ServerProcess,
    limit,
    marks_of,
    read_marks,
    require,
    wait_for_marks,
)

pytestmark = pytest.mark.real_server

#: The client must have the whole response within this time (SPEC 5) ...
PROMPT = 0.5
#: ... although the cleanup of the request sleeps this long.
SLOW_CLEANUP = 1.5
#: How long the cleanups of the other cases sleep: long enough to show that what the client
#: saw came first (and on daphne, whose answer to an app error takes up to 1 s, longer).
CLEANUP = 1.0

Marks = list[dict[str, Any]]


def ended(*ids: str) -> Callable[[Marks], bool]:
    """A ``wait_for_marks`` predicate: every request id has an "end" mark."""
    return lambda marks: all(marks_of(marks, "end", rid) for rid in ids)


def the_end(marks: Marks, rid: str, idx: int = 0) -> dict[str, Any]:
    """The single "end" mark of cleanup ``idx`` of request ``rid`` (the assertion says what
    there was instead)."""
    ends = [m for m in marks_of(marks, "end", rid) if m.get("idx") == idx]
    assert len(ends) == 1, f"expected exactly one end mark for {rid!r}, got {ends}; all: {marks}"
    return ends[0]


def the_start(marks: Marks, rid: str, idx: int = 0) -> dict[str, Any]:
    starts = [m for m in marks_of(marks, "start", rid) if m.get("idx") == idx]
    assert len(starts) == 1, f"expected one start mark for {rid!r}, got {starts}; all: {marks}"
    return starts[0]


def assert_prompt_ok(response: RawResponse, what: str) -> None:
    assert response.status == 200, f"{what}: {response}"
    assert response.complete, f"{what}: response cut: {response}"
    assert response.body == b"ok", f"{what}: {response}"
    assert response.elapsed < PROMPT, f"{what}: took {response.elapsed:.3f} s (bar {PROMPT} s)"


def error_bar(kind: str) -> float:
    """How soon the server's answer to an app error must arrive: at once, give or take the
    server's own delay (daphne's once-a-second check)."""
    return PROMPT + APP_ERROR_DELAY.get(kind, 0.0)


def error_cleanup(kind: str) -> float:
    """How long the cleanup of an app error sleeps: past the server's answer to the error."""
    return CLEANUP + APP_ERROR_DELAY.get(kind, 0.0)


# --- 1. cleanups never delay what the client sees (SPEC 2.2, 5) ---------------------------------


def test_response_next_keepalive_and_pipelined_requests_arrive_before_slow_cleanups_end(
    server: ServerProcess, marks_path: Path
) -> None:
    with RawHTTPConnection(server.port) as conn:
        first = conn.get(f"/slow?id=first&sleep={SLOW_CLEANUP}")
        # The same socket: the server kept the connection, and serves the next request on it
        # while the first request's (async) cleanup is still sleeping.
        second = conn.get(f"/slow-sync?id=second&sleep={SLOW_CLEANUP}")
        local_address = conn.local_address()
    # Pipelined: both requests written at once, before either response; every server here
    # answers them in order, the second while the first one's cleanup is still sleeping.
    with RawHTTPConnection(server.port) as conn:
        third, fourth = conn.pipeline(
            [f"/slow?id=third&sleep={SLOW_CLEANUP}", f"/slow?id=fourth&sleep={SLOW_CLEANUP}"]
        )

    assert_prompt_ok(first, "first request")
    assert not first.server_closes, f"server did not keep the connection: {first}"
    assert_prompt_ok(second, "second request on the same connection")
    assert conn.requests == 2, f"both requests on one connection ({local_address})"
    assert_prompt_ok(third, "first pipelined request")
    assert_prompt_ok(fourth, "second pipelined request")

    ids = ("first", "second", "third", "fourth")
    marks = wait_for_marks(marks_path, ended(*ids), timeout=SLOW_CLEANUP + 3)
    responses = dict(zip(ids, (first, second, third, fourth), strict=True))
    for rid, response in responses.items():
        end = the_end(marks, rid)
        assert end["kind"] == ("sync" if rid == "second" else "async"), end
        # The cleanup really ran after the client had its response, and for its whole length.
        assert end["t"] - response.ended_at > SLOW_CLEANUP - PROMPT, (rid, response, end)
        assert end["outcome"]["status"] == 200, end
        assert end["outcome"]["response_complete"] is True, end
        assert end["outcome"]["exception"] is None, end
    # The follow-ups were served while the cleanups before them were still running.
    assert second.ended_at < the_end(marks, "first")["t"], marks
    assert fourth.ended_at < the_end(marks, "third")["t"], marks


def test_starlette_file_response_is_complete_and_not_a_disconnect(
    server: ServerProcess, marks_path: Path
) -> None:
    """Starlette's ``FileResponse`` (``http.response.pathsend`` on granian, body messages
    elsewhere) watches ``receive()`` for a disconnect while it sends; servers answer that
    ``receive()`` with ``http.disconnect`` once the last message is theirs. The Outcome must say
    what the client got: the whole response, no disconnect."""
    with RawHTTPConnection(server.port) as conn:
        response = conn.get("/file?id=file")
    assert response.status == 200, response
    assert response.complete, response
    # What /file serves (server_apps is the servers' module, not imported here).
    assert response.body == (TESTS_DIR / "server_apps.py").read_bytes(), "the file came out wrong"
    marks = wait_for_marks(marks_path, ended("file"), timeout=3.0)
    outcome = the_end(marks, "file")["outcome"]
    assert outcome["status"] == 200, outcome
    assert outcome["exception"] is None, outcome
    assert outcome["response_complete"] is True, outcome
    assert outcome["client_disconnected"] is False, outcome


# --- 2. app errors: the server's answer at once, the cleanups all the same (SPEC 2.2, 2.7) -----


#: The error routes: (route, the status the app sent before raising, or None).
ERRORS_BEFORE_AND_AFTER_START = [("/error", None), ("/error-after-start", 200)]


def test_app_error_reaches_client_promptly_and_cleanup_still_runs(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """Raised before the response started: the server's own 500 at once. Raised after it
    started: the server cuts the response off at once (daphne leaves it unfinished and open, as
    it does without the middleware). Either way the cleanup (1 s) runs, and its Outcome has
    the exception."""
    bar = error_bar(server_kind)
    seconds = error_cleanup(server_kind)
    left_open = STARTED_RESPONSE_ON_APP_ERROR.get(server_kind) == "open"
    responses: dict[str, RawResponse] = {}
    for route, status in ERRORS_BEFORE_AND_AFTER_START:
        with RawHTTPConnection(server.port) as conn:
            target = f"{route}?id={route}&sleep={seconds}"
            if status is not None and left_open:
                # What arrives within the bar, and then the connection must still be open.
                responses[route] = conn.get(target, timeout=PROMPT, partial_ok=True)
                assert not conn.wait_closed(PROMPT), f"{server_kind} closed after {route}"
            else:
                responses[route] = conn.get(target)
                assert responses[route].elapsed < bar, f"{route}: {responses[route]}"

    for route, status in ERRORS_BEFORE_AND_AFTER_START:
        response = responses[route]
        if status is None:
            # No response started: the server sends its own 500 (the middleware sends none).
            assert response.status == 500, f"{route}: {response}"
            assert response.complete, f"{route}: {response}"
        else:
            assert response.status == status, f"{route}: {response}"
            assert response.body == b"partial", f"{route}: {response}"
            assert not response.complete, f"{route}: an unfinished response looks complete"

    routes = [route for route, _ in ERRORS_BEFORE_AND_AFTER_START]
    marks = wait_for_marks(marks_path, ended(*routes), timeout=seconds + 3)
    for route, status in ERRORS_BEFORE_AND_AFTER_START:
        start, end = the_start(marks, route), the_end(marks, route)
        outcome = end["outcome"]
        assert outcome is not None, end
        assert "AppError" in (outcome["exception"] or ""), end
        assert outcome["status"] == status, end
        assert outcome["response_complete"] is False, end
        assert responses[route].ended_at < end["t"], (route, responses[route], end)
        assert end["t"] - start["t"] >= seconds - 0.05, (start, end)


def _connection_fate(server: ServerProcess, target: str, bar: float) -> tuple[str, RawResponse]:
    """Send ``target`` and then a follow-up request on the same connection.

    "kept" if the follow-up was answered promptly on that connection, "closed" if the server
    closed it promptly (announced or not); anything slower fails.
    """
    with RawHTTPConnection(server.port) as conn:
        first = conn.get(target)
        assert first.elapsed < bar, f"{target} took {first.elapsed:.3f} s: {first}"
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


#: SPEC 6: what the server does to the connection when the app raises after a complete
#: response.
FATE_AFTER_COMPLETE_RESPONSE = {"uvicorn": "closed"}


def test_keepalive_request_after_app_error_fares_as_without_middleware_and_promptly(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """SPEC 2.7: a keep-alive follow-up is never broken or delayed by a cleanup phase.

    What the server does after an app error is its own (SPEC 6: uvicorn closes the connection
    when the app raises after a complete response, the others keep it), so the promise is: the
    same as without the middleware (routes under ``/bare``), and at once. A middleware that
    held the exception back until after its slow cleanup would keep uvicorn's connection open
    for that long, then cut whatever request was in flight on it.
    """
    bar = error_bar(server_kind)
    seconds = error_cleanup(server_kind)
    firsts: dict[str, RawResponse] = {}
    fates: dict[str, str] = {}
    for route in ("/error-after-response", "/error"):
        bare_fate, _ = _connection_fate(server, f"/bare{route}", bar)
        target = f"{route}?id={route}&sleep={seconds}"
        fates[route], firsts[route] = _connection_fate(server, target, bar)
        assert fates[route] == bare_fate, (
            f"{route}: with the middleware {fates[route]}, without it {bare_fate}"
        )
    expected = FATE_AFTER_COMPLETE_RESPONSE.get(server_kind, "kept")
    assert fates["/error-after-response"] == expected, f"SPEC 6 says {server_kind}: {expected}"

    marks = wait_for_marks(marks_path, ended(*firsts), timeout=seconds + 3)
    for route, first in firsts.items():
        end = the_end(marks, route)
        assert end["outcome"] is not None, end
        assert "AppError" in (end["outcome"]["exception"] or ""), end
        assert first.ended_at < end["t"], (first, end)
        assert end["t"] - the_start(marks, route)["t"] >= seconds - 0.05, end


# --- 3. a client that leaves (SPEC 1 Outcome, 2.2) ----------------------------------------------


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


UPLOAD_ANNOUNCED = 64 << 20  # bytes the large upload's Content-Length promises
UPLOAD_SENT = 3 << 20  # bytes it sends before the client walks away


def test_client_disconnect_before_and_during_the_request_body_still_runs_cleanup(
    server_kind: str, server: ServerProcess, marks_path: Path
) -> None:
    """A client that sends a request's head and leaves before the body, and one that leaves
    3 MiB into a 64 MiB upload (with a TCP reset, as a crashed client would): the app sees
    ``http.disconnect``, and the cleanup it registered runs once, with ``client_disconnected``.
    """
    require(server_kind, "streamed-body")
    # Before the body: the head says 1 MiB follows; the client leaves once the app has run.
    before = RawHTTPConnection(server.port)
    before.sock.sendall(before.send_head("POST", "/upload?id=before-body", length=1 << 20))
    registered = wait_for_marks(marks_path, lambda m: marks_of(m, "reg", "before-body"), 3.0)
    assert marks_of(registered, "reg", "before-body"), "the app was not called for the head"
    before.close()

    # During a large upload, in 64 KiB writes.
    upload = RawHTTPConnection(server.port)
    upload.sock.sendall(upload.send_head("POST", "/upload?id=upload", length=UPLOAD_ANNOUNCED))
    chunk = b"x" * (64 << 10)
    for _ in range(UPLOAD_SENT // len(chunk)):
        upload.sock.sendall(chunk)
    progress = wait_for_marks(
        marks_path,
        lambda m: any(p["received"] >= 1 << 20 for p in marks_of(m, "upload-progress", "upload")),
        3.0,
    )
    assert marks_of(progress, "upload-progress", "upload"), "the app read none of the upload"
    upload.abort()

    marks = wait_for_marks(marks_path, ended("before-body", "upload"), timeout=3.0)
    for rid in ("before-body", "upload"):
        end = the_end(marks, rid)
        assert len(marks_of(marks, "start", rid)) == 1, marks
        (seen,) = marks_of(marks, "disconnect-seen", rid)
        assert seen["received"] < (1 << 20 if rid == "before-body" else UPLOAD_SENT + 1), seen
        outcome = end["outcome"]
        assert outcome["client_disconnected"] is True, end
        assert outcome["response_complete"] is False, end
        assert outcome["status"] is None, end
        assert outcome["exception"] is None, end


# --- 4. graceful shutdown loses no cleanup (SPEC 2.6, 2.8) --------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("grace", ["server-default-grace", "grace-shorter-than-cleanup"])
def test_shutdown_signal_during_slow_cleanups_loses_none(
    server_kind: str,
    start_server: Callable[..., ServerProcess],
    marks_path: Path,
    grace: str,
    sig: signal.Signals,
) -> None:
    """A shutdown signal while cleanups run: the server exits only once they have all ended,
    whatever it does to the request tasks (SPEC 6): uvicorn waits for them (with
    ``--timeout-graceful-shutdown 1``: cancels them natively 1 s in), hypercorn waits up to its
    grace (3 s by default; 1 s here: then cancels them), granian runs the lifespan shutdown and
    then drops them (so the middleware's lifespan drain holds it), daphne cancels them natively
    at once and waits for the tasks it cancelled, but only until the first one ends (it gathers
    them with ``asyncio.gather``), and not at all for the task of an app error's phase, which it
    does not know of (daphne has no lifespan to hold): so there, a request task cancelled
    natively with no lifespan seen waits, bounded, for every phase running before it ends."""
    short_grace = grace == "grace-shorter-than-cleanup"
    if short_grace:
        require(server_kind, "graceful-timeout")
    server = start_server(graceful_timeout=1 if short_grace else None)
    # Daphne's answer to an app error takes up to a second, and the signal must come later
    # (below), so its cleanups are longer.
    seconds_base = 2.5 if server_kind == "daphne" else 1.5 if short_grace else 1.0
    # An async and a sync cleanup of complete responses (their phase runs in the request task,
    # which the server waits for, cancels or drops), and the cleanup of an app error (its phase
    # runs in a task of the middleware's own, which only the lifespan drain waits for). Each
    # is 0.25 s longer than the one before, so that each is still running when the server is
    # done with the tasks before it.
    ids = ("async", "sync", "error")
    seconds = {"async": seconds_base, "sync": seconds_base + 0.25, "error": seconds_base + 0.5}
    for rid, target in zip(
        ids,
        (
            f"/long-cleanup?id=async&seconds={seconds['async']}",
            f"/long-cleanup?id=sync&seconds={seconds['sync']}&sync=1",
            f"/error?id=error&sleep={seconds['error']}",
        ),
        strict=True,
    ):
        with RawHTTPConnection(server.port) as conn:
            response = conn.get(target)
        assert response.status == (500 if rid == "error" else 200), response
        bar = error_bar(server_kind) if rid == "error" else PROMPT
        assert response.elapsed < bar, f"{rid}: took {response.elapsed:.3f} s"
    started = wait_for_marks(
        marks_path, lambda m: all(marks_of(m, "start", rid) for rid in ids), timeout=2.0
    )
    assert all(marks_of(started, "start", rid) for rid in ids), started
    if server_kind == "daphne":
        # A daphne bug: for a second after it sent its 500 for an app error, a shutdown
        # signal makes its shutdown hook fail (KeyError 'application_instance' in
        # kill_all_applications), and daphne then waits for no app task at all. Wait that
        # second out, so that what is tested here is the middleware.
        time.sleep(1.1)
    assert not marks_of(read_marks(marks_path), "end"), "cleanups ended before the signal"

    returncode = server.shutdown(sig, timeout=seconds["error"] + 8)

    marks = read_marks(marks_path)
    # uvicorn re-raises a handled SIGTERM once it has shut down, so it "dies" of it: fine.
    assert returncode in (0, -sig), f"{server.name} exited with {returncode}"
    for rid in ids:
        start, end = the_start(marks, rid), the_end(marks, rid)
        assert end["t"] - start["t"] >= seconds[rid] - 0.1, (start, end)
    lifespan = marks_of(marks, "lifespan-shutdown")
    if limit(server_kind, "lifespan") is None:
        # SPEC 2.8: lifespan.shutdown reaches the app only once every cleanup phase has ended.
        assert len(lifespan) == 1, marks
        assert lifespan[0]["t"] >= max(the_end(marks, rid)["t"] for rid in ids), marks
    else:
        assert not lifespan, marks


def test_shutdown_signal_with_a_request_still_in_the_app_loses_no_cleanup(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """A shutdown signal while one request's cleanup runs and another request, with nothing
    registered, is still in the app (a long poll): the cleanup still ends before the server
    exits. daphne cancels both tasks at once and stops when the first ends, which is the one
    cancelled in the app: it must wait for the other's phase. The others wait for the request
    in the app (uvicorn, hypercorn up to its grace) or hold their shutdown in the lifespan."""
    server = start_server()
    with RawHTTPConnection(server.port) as conn:
        response = conn.get("/long-cleanup?id=cleanup&seconds=2")
    assert_prompt_ok(response, "long-cleanup")
    wait_for_marks(marks_path, lambda m: bool(marks_of(m, "start", "cleanup")), timeout=2.0)

    def held() -> None:
        with contextlib.suppress(OSError, TimeoutError), RawHTTPConnection(server.port) as c:
            c.get("/slow?id=held&n=0&hold=3", timeout=10)  # cut or answered: either is fine

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(held)
        time.sleep(0.5)  # the held request is in the app
        assert not marks_of(read_marks(marks_path), "end"), "the cleanup ended before the signal"
        returncode = server.shutdown(signal.SIGINT, timeout=12)

    assert returncode in (0, -signal.SIGINT), f"{server.name} exited with {returncode}"
    marks = read_marks(marks_path)
    start, end = the_start(marks, "cleanup"), the_end(marks, "cleanup")
    assert end["t"] - start["t"] >= 2 - 0.1, (start, end)


@pytest.mark.parametrize("cleanup", ["app-error-async", "complete-sync"])
def test_shutdown_past_shutdown_timeout_holds_the_server_no_longer(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path, cleanup: str
) -> None:
    """SPEC 2.8: the shutdown's bound is absolute. Cleanups far longer than it: two async ones
    of app errors (in tasks of their own) cut at ``timeout=2``; or a sync one of a complete
    response with ``timeout=None``, still in its thread. The server exits soon after
    ``shutdown_timeout=1``: on hypercorn's trio worker its timeouts are still enforced after
    trio's main task returned, and uvicorn (which cancels its request tasks at the end of its
    graceful timeout, then sends lifespan.shutdown) gets its task back."""
    sync = cleanup == "complete-sync"
    if sync:
        require(server_kind, "graceful-timeout")
    server = start_server(
        graceful_timeout=1 if sync else None,
        env={
            "ASGI_CLEANUP_TIMEOUT": "none" if sync else "2",
            "ASGI_CLEANUP_SHUTDOWN_TIMEOUT": "1",
        },
    )
    targets = (
        ["/slow?id=s&sleep=60&sync=1"] if sync else [f"/error?id=e{i}&sleep=12" for i in (1, 2)]
    )
    for target in targets:
        with RawHTTPConnection(server.port) as conn:
            conn.get(target)
    wait_for_marks(marks_path, lambda m: len(marks_of(m, "start")) == len(targets), timeout=3.0)
    if server_kind == "daphne":
        time.sleep(1.1)  # daphne's shutdown hook fails for a second after a 500 (see above)

    began = time.monotonic()
    returncode = server.shutdown(signal.SIGINT, timeout=15)
    took = time.monotonic() - began

    assert returncode in (0, -signal.SIGINT), f"{server.name} exited with {returncode}"
    # Graceful timeout 1 s, shutdown_timeout 1 s, a cleanup's timeout 2 s, and slack; not the
    # cleanups' 12 s or 60 s.
    assert took < 8, f"{server.name} took {took:.1f} s to exit"


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
        last_registered_end = the_end(marks, rid, idx=1)
        first_registered_start = the_start(marks, rid, idx=0)
        assert last_registered_end["t"] <= first_registered_start["t"], (
            f"{rid}: not LIFO",
            marks_of(marks, "start", rid),
            marks_of(marks, "end", rid),
        )


# --- 6. several worker processes ----------------------------------------------------------------

WORKERS = 2
WORKER_CLEANUP = 1.0


def _spread_over_workers(server: ServerProcess, seconds: float) -> tuple[dict[str, int], int]:
    """Batches of 8 concurrent connections, each a request with a sync and an async cleanup of
    ``seconds``, until every worker has served some (bounded). Which worker (``x-pid``) served
    each request id, and the number of batches."""
    served_by: dict[str, int] = {}
    lock = threading.Lock()

    def one(rid: str) -> None:
        with RawHTTPConnection(server.port) as conn:
            # The app holds each request 50 ms, so that concurrent connections spread over
            # the workers.
            response = conn.get(f"/slow?id={rid}&n=2&mix=1&sleep={seconds}&hold=0.05")
        assert response.status == 200, response
        with lock:
            served_by[rid] = int(response.headers["x-pid"])

    deadline = time.monotonic() + 10.0
    batch = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(set(served_by.values())) < WORKERS and time.monotonic() < deadline:
            list(pool.map(one, [f"w{batch}-{i}" for i in range(8)]))
            batch += 1
    pids = set(served_by.values())
    assert len(pids) == WORKERS, f"only pids {pids} answered {len(served_by)} requests"
    assert pids <= set(server.processes()), (pids, server.processes())
    return served_by, batch


def _assert_each_ran_once_in_its_worker(
    marks: Marks, served_by: dict[str, int], each_worker_drains: bool = True
) -> None:
    wanted = {(rid, idx) for rid in served_by for idx in (0, 1)}
    ends = Counter((m["id"], m["idx"]) for m in marks_of(marks, "end"))
    starts = Counter((m["id"], m["idx"]) for m in marks_of(marks, "start"))
    assert set(ends) == wanted, f"missing: {sorted(wanted - set(ends))}"
    assert set(ends.values()) == {1}, {k: n for k, n in ends.items() if n != 1}
    assert starts == ends
    for m in marks_of(marks, "end"):
        assert m["pid"] == served_by[m["id"]], f"cleanup ran in another process: {m}"
    # Each worker heard of the shutdown through its own lifespan, after its own cleanups
    # (hypercorn terminates the workers left once the first has exited: at most once there).
    for pid in set(served_by.values()):
        lifespans = [m for m in marks_of(marks, "lifespan-shutdown") if m["pid"] == pid]
        last_end = max(m["t"] for m in marks_of(marks, "end") if m["pid"] == pid)
        assert len(lifespans) == 1 or (not each_worker_drains and not lifespans), (pid, marks)
        assert all(m["t"] >= last_end for m in lifespans), (pid, lifespans, last_end)


def test_two_workers_each_run_their_own_cleanups_exactly_once(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """``--workers 2``: every cleanup runs once, in the worker process that served its request
    (the ``x-pid`` of the response)."""
    require(server_kind, "workers")
    server = start_server(workers=WORKERS)
    served_by, _ = _spread_over_workers(server, seconds=0.05)
    wait_for_marks(marks_path, lambda m: len(marks_of(m, "end")) >= 2 * len(served_by), 5.0)
    assert server.shutdown(signal.SIGINT, timeout=10.0) == 0
    drains = limit(server_kind, "workers-shutdown") is None
    _assert_each_ran_once_in_its_worker(read_marks(marks_path), served_by, drains)


def test_shutdown_signal_with_cleanups_running_in_two_workers_loses_none(
    server_kind: str, start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """``--workers 2`` and a shutdown signal while both workers have cleanups running (1 s):
    each worker drains its own, and the server exits once all have ended."""
    require(server_kind, "workers")
    require(server_kind, "workers-shutdown")
    server = start_server(workers=WORKERS)
    served_by, batches = _spread_over_workers(server, seconds=WORKER_CLEANUP)
    # The last batch's cleanups are still running: shut down now.
    assert not marks_of(read_marks(marks_path), "end", f"w{batches - 1}-0"), "cleanups too short"
    returncode = server.shutdown(signal.SIGINT, timeout=WORKER_CLEANUP + 10)
    assert returncode == 0, f"{server.name} exited with {returncode}"
    _assert_each_ran_once_in_its_worker(read_marks(marks_path), served_by)


# --- 7. websockets --------------------------------------------------------------------------------


def test_websocket_cleanups_run_once_whichever_side_closes_and_never_delay_the_close(
    server: ServerProcess, marks_path: Path
) -> None:
    """The client closes one websocket, the app closes the other; each cleanup (1 s) runs
    once, after the close, and the client has its side of the closing handshake at once."""
    with RawWebSocket(server.port, f"/ws?id=client-closes&sleep={CLEANUP}") as ws:
        ws.send_text("hello")
        assert ws.receive() == ("text", "echo hello")
        began = time.monotonic()
        answer = ws.close(1000, timeout=CLEANUP + 1)
        client_close_took = time.monotonic() - began
        client_closed_at = time.time()
    with RawWebSocket(server.port, f"/ws?id=server-closes&sleep={CLEANUP}") as ws:
        began = time.monotonic()
        ws.send_text("close")
        assert ws.receive(timeout=CLEANUP + 1) == ("close", 4000)
        server_close_took = time.monotonic() - began
        server_closed_at = time.time()

    marks = wait_for_marks(marks_path, ended("client-closes", "server-closes"), timeout=CLEANUP + 3)
    client, server_side = the_end(marks, "client-closes"), the_end(marks, "server-closes")
    assert client["outcome"]["client_disconnected"] is True, client
    assert client["outcome"]["response_complete"] is True, client
    assert marks_of(marks, "ws-disconnect", "client-closes"), marks
    assert server_side["outcome"]["client_disconnected"] is False, server_side
    assert server_side["outcome"]["response_complete"] is True, server_side
    for end in (client, server_side):
        assert end["outcome"]["exception"] is None, end
        assert end["outcome"]["status"] is None, end
        assert len(marks_of(marks, "start", end["id"])) == 1, marks
    assert server_close_took < PROMPT, f"the app's close took {server_close_took:.3f} s"
    assert server_closed_at < server_side["t"], (server_closed_at, server_side)
    assert answer == 1000, f"the server did not answer the client's close: {answer}"
    assert client_close_took < PROMPT, (
        f"the server answered the client's close {client_close_took:.3f} s later"
    )
    assert client_closed_at < client["t"], (client_closed_at, client)
