"""Faulty cleanups are isolated, and the log keeps request secrets out (SPEC 2.4, 2.6, 3), on
real servers.

A cleanup that raises, one that hangs past its timeout, one that blocks its worker thread past
it, and one that registers another cleanup once the phase has started must not affect the other
cleanups of the request, other requests, or the next request on the same connection (Puma's
issue 2856: an error after a response leaking into the next response on the connection). The
servers run the middleware with ``timeout=0.3`` (``ASGI_CLEANUP_TIMEOUT``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from servers import RawHTTPConnection, RawResponse, ServerProcess, marks_of, wait_for_marks

pytestmark = pytest.mark.real_server

PROMPT = 0.5
TIMEOUT = 0.3
BLOCK = 1.0  # how long the blocking cleanup holds its thread (abandoned at TIMEOUT)
#: What the middleware's log records start with in the server's log (server_apps.LOG_PREFIX).
LOG_PREFIX = "[asgi_cleanup log]"
#: In the message of every exception the cleanups of server_apps raise (CLEANUP_ERROR_TEXT).
CLEANUP_ERROR_TEXT = "CLEANUP-FAILURE-TEXT"

Marks = list[dict[str, Any]]

#: /faulty registers, in this order: a well-behaved cleanup at every even idx (idx 0, 4, 8
#: sync, 2 and 6 async), and between them the faulty ones:
FAULTY = {1: "raise", 3: "hang", 5: "block", 7: "late"}
WELL_BEHAVED = (0, 2, 4, 6, 8)


def start_isolation_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    return start_server(env={"ASGI_CLEANUP_TIMEOUT": str(TIMEOUT)})


def cleanup_log_records(server: ServerProcess) -> list[dict[str, Any]]:
    """The middleware's log records in the server's log, decoded."""
    return [
        json.loads(line.split(LOG_PREFIX, 1)[1])
        for line in server.log_text().splitlines()
        if LOG_PREFIX in line
    ]


def assert_clean_ok(response: RawResponse, what: str) -> None:
    assert response.status == 200, f"{what}: {response}"
    assert response.complete, f"{what}: {response}"
    assert response.body == b"ok", f"{what}: {response}"
    assert response.elapsed < PROMPT, f"{what}: took {response.elapsed:.3f} s"
    assert CLEANUP_ERROR_TEXT.encode() not in response.body, response


def test_faulty_cleanups_affect_no_other_cleanup_request_or_next_request(
    start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    server = start_isolation_server(start_server)

    def neighbour(i: int) -> RawResponse:
        with RawHTTPConnection(server.port) as conn:
            return conn.get(f"/slow?id=neighbour{i}&n=2&mix=1&sleep=0.05")

    with ThreadPoolExecutor(max_workers=3) as pool:
        neighbours = [pool.submit(neighbour, i) for i in range(3)]
        with RawHTTPConnection(server.port) as conn:
            faulty = conn.get(f"/faulty?id=faulty&block={BLOCK}")
            # The next request on the same connection, while the faulty phase runs.
            follow = conn.get("/slow?id=next&n=2&mix=1&sleep=0.05")
            after = conn.get("/health")
    assert_clean_ok(faulty, "the faulty request")
    assert_clean_ok(follow, "the next request on its connection")
    assert_clean_ok(after, "the request after that")
    for i, future in enumerate(neighbours):
        assert_clean_ok(future.result(), f"concurrent request {i}")

    others = ["next", *(f"neighbour{i}" for i in range(3))]

    def settled(marks: Marks) -> bool:
        ends = Counter(m["id"] for m in marks_of(marks, "end"))
        return ends["faulty"] == len(FAULTY) + len(WELL_BEHAVED) and all(
            ends[rid] == 2 for rid in others
        )

    marks = wait_for_marks(marks_path, settled, timeout=BLOCK + 4)

    def one(event: str, rid: str, idx: int) -> dict[str, Any]:
        found = [m for m in marks_of(marks, event, rid) if m["idx"] == idx]
        assert len(found) == 1, f"{event} of {rid}[{idx}]: {found}; all: {marks}"
        return found[0]

    # The faulty request: every cleanup started and ended once, in LIFO order.
    starts = [one("start", "faulty", idx) for idx in range(9)]
    ends = [one("end", "faulty", idx) for idx in range(9)]
    order = [m["idx"] for m in sorted(starts, key=lambda m: m["t"])]
    assert order == list(range(8, -1, -1)), f"not LIFO: {order}"
    for idx in WELL_BEHAVED:
        outcome = ends[idx]["outcome"]
        assert outcome["status"] == 200, ends[idx]
        assert outcome["exception"] is None, ends[idx]
    hang = ends[3]
    assert hang["cancelled"] is True, hang
    assert TIMEOUT - 0.05 <= hang["t"] - starts[3]["t"] < TIMEOUT + 0.5, (starts[3], hang)
    block = ends[5]
    assert block["t"] - starts[5]["t"] >= BLOCK - 0.05, (starts[5], block)
    # The phase went on after abandoning the blocked thread, long before it returned.
    assert starts[4]["t"] - starts[5]["t"] < TIMEOUT + 0.5, (starts[5], starts[4])
    assert starts[4]["t"] < block["t"], (starts[4], block)
    assert not marks_of(marks, "late-ran"), "a cleanup registered late ran"

    # Other requests and the next one on the connection: each cleanup once, untouched.
    for rid in others:
        for idx in (0, 1):
            end = one("end", rid, idx)
            assert end["outcome"]["exception"] is None, end
            assert end["outcome"]["status"] == 200, end
        one("start", rid, 0)
    assert follow.ended_at < ends[0]["t"], "the next request waited for the faulty phase"

    # Each fault was logged once, at its level, and nothing else went wrong.
    records = cleanup_log_records(server)
    problems = [r for r in records if r["level"] in ("WARNING", "ERROR", "CRITICAL")]
    messages = [r["message"] for r in problems]
    assert len(problems) == 4, messages
    assert any("raising_cleanup failed for GET /faulty" in m for m in messages), messages
    assert any("hanging_cleanup timed out" in m for m in messages), messages
    assert any("blocking_cleanup timed out" in m for m in messages), messages
    assert any("registered after cleanups started" in m for m in messages), messages
    failed = next(r for r in problems if "raising_cleanup failed" in r["message"])
    assert CLEANUP_ERROR_TEXT in (failed["exc"] or ""), failed


SECRETS = {
    "header": "header-secret-5b1f9e",
    "cookie": "cookie-secret-a83c07",
    "query": "query-secret-c2d6e4",
    "authorization": "authorization-secret-97f0aa",
}


def test_cleanup_log_lines_carry_no_header_cookie_or_query_values(
    start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """A request with secrets in a header, a cookie, the Authorization header and the query
    string, whose cleanups fail, time out and register late: the middleware's log lines (the
    traceback included) name the cleanup and the method and path, and none of the secrets; no
    line of the server's log has a header or cookie secret, and the query secret appears only
    in the server's own access log lines."""
    server = start_isolation_server(start_server)
    with RawHTTPConnection(server.port) as conn:
        response = conn.request(
            "GET",
            f"/faulty?id=secret&faults=raise,hang,late&token={SECRETS['query']}",
            headers=[
                ("X-Api-Key", SECRETS["header"]),
                ("Cookie", f"session={SECRETS['cookie']}; theme=dark"),
                ("Authorization", f"Bearer {SECRETS['authorization']}"),
            ],
        )
    assert_clean_ok(response, "the request with secrets")
    for secret in SECRETS.values():
        assert secret.encode() not in response.body, response

    wait_for_marks(marks_path, lambda m: len(marks_of(m, "end", "secret")) == 7, timeout=3.0)
    # The server's own shutdown flushes everything it logs.
    server.shutdown(timeout=10.0)

    records = cleanup_log_records(server)
    problems = [r for r in records if r["level"] in ("WARNING", "ERROR")]
    assert len(problems) == 3, records
    for record in problems:
        text = json.dumps(record)
        assert "GET /faulty" in text or "registered after" in text, record
        for where, secret in SECRETS.items():
            assert secret not in text, f"the {where} secret is in a cleanup log line: {record}"
    for line in server.log_text().splitlines():
        for where in ("header", "cookie", "authorization"):
            assert SECRETS[where] not in line, f"the {where} secret is in the log: {line}"
        if SECRETS["query"] in line:
            assert LOG_PREFIX not in line, line
            assert "/faulty" in line, f"not an access log line: {line}"


def test_no_traceback_local_of_a_logged_failure_holds_a_secret(
    start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """The same request, with an ``on_error`` hook that fails too, and a formatter that
    renders every local of every traceback frame (as Sentry's default
    ``include_local_variables`` records them): none of the secrets is there."""
    server = start_server(
        env={
            "ASGI_CLEANUP_TIMEOUT": str(TIMEOUT),
            "ASGI_CLEANUP_ON_ERROR": "raise",
            "ASGI_CLEANUP_LOG_LOCALS": "1",
        }
    )
    with RawHTTPConnection(server.port) as conn:
        response = conn.request(
            "GET",
            f"/faulty?id=locals&faults=raise,hang&token={SECRETS['query']}",
            headers=[
                ("Cookie", f"session={SECRETS['cookie']}"),
                ("Authorization", f"Bearer {SECRETS['authorization']}"),
            ],
        )
    assert_clean_ok(response, "the request with secrets")
    wait_for_marks(marks_path, lambda m: len(marks_of(m, "end", "locals")) == 6, timeout=3.0)
    server.shutdown(timeout=10.0)

    records = [r for r in cleanup_log_records(server) if r.get("locals")]
    # The raising and the hanging cleanup, and the failing on_error hook for each.
    assert len(records) == 4, records
    for record in records:
        text = json.dumps(record["locals"])
        for where, secret in SECRETS.items():
            assert secret not in text, f"the {where} secret is in a traceback local: {record}"


def test_a_cleanup_that_raises_when_looked_at_is_logged_and_keeps_the_connection(
    start_server: Callable[..., ServerProcess], marks_path: Path
) -> None:
    """An unbound werkzeug ``LocalProxy`` as a cleanup (its every attribute raises): the
    failure is logged under a fallback name, the cleanup registered before it still runs, and
    a follow-up request on the same keep-alive connection is served (uvicorn cuts the
    connection when an exception reaches it from the app call)."""
    server = start_isolation_server(start_server)
    with RawHTTPConnection(server.port) as conn:
        first = conn.get("/odd-callable?id=odd")
        assert_clean_ok(first, "the request with the odd cleanup")
        wait_for_marks(marks_path, lambda m: bool(marks_of(m, "end", "odd")), timeout=3.0)
        follow_up = conn.get("/health")
    assert follow_up.status == 200, follow_up
    assert follow_up.complete, follow_up
    server.shutdown(timeout=10.0)
    failures = [r for r in cleanup_log_records(server) if r["level"] == "ERROR"]
    assert len(failures) == 1, failures
    assert "working outside of request context" in (failures[0]["exc"] or ""), failures
