"""Soak and fault run against real servers: ``python -m benchmarks.soak [--server ...]``.

Serves ``tests/server_apps.py`` (the app of the real-server tests) with each server through the
harness of ``tests/servers.py``, and drives ``--requests`` requests (20,000 by default) at it
over ``--concurrency`` keep-alive connections (32), after a warm-up of ``--warmup`` requests
(1,000), with a fixed mix of normal requests, app errors, slow cleanups, cleanups that hang or
block their thread past their timeout (for a finite time), failing cleanups, cleanups that
register more cleanups too late, client disconnects (before the body, during an upload,
mid-stream), cancellations by a request deadline outside the middleware (and, on daphne, its
own ``--application-close-timeout`` of 1 s cancelling long phases), and websockets closed by
either side. Every cleanup marks its registration, its start and its end.

Then it checks, and prints in a table:

- lost: cleanups registered that never started or never ended (0);
- duplicated: cleanups that started or ended more than once or without a registration, or a
  late registration that ran (0);
- error text: bytes of cleanup error text in any response (0);
- unexpected: responses other than the mix expects (0);
- RSS: the server's resident memory (``VmRSS`` of all its processes, from ``/proc``) after the
  run, within 10% of its level after the warm-up.

The exit status is 1 if any check fails. The middleware runs with ``timeout=1`` and
``thread_limit=16`` (``ASGI_CLEANUP_TIMEOUT``, ``ASGI_CLEANUP_THREAD_LIMIT``). ``--bare`` serves
the same mix without the middleware, as a baseline for the server's own memory use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS_DIR = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

from servers import (  # noqa: E402 - tests/ is not a package: it joins the path above
    ConnectionClosedError,
    RawHTTPConnection,
    RawWebSocket,
    ServerProcess,
)

#: ``--server`` names: the four servers (hypercorn on asyncio), hypercorn on trio, and all.
SERVERS = {
    "uvicorn": "uvicorn",
    "hypercorn": "hypercorn-asyncio",
    "hypercorn-trio": "hypercorn-trio",
    "granian": "granian",
    "daphne": "daphne",
}
CLEANUP_TIMEOUT = 1.0
THREAD_LIMIT = 16
RSS_TOLERANCE = 0.10
#: In every exception message of the app's failing cleanups (server_apps.CLEANUP_ERROR_TEXT).
ERROR_TEXT = b"CLEANUP-FAILURE-TEXT"
#: A blocking cleanup holds a worker thread this long, past its timeout; at most one starts
#: every BLOCK_SPACING seconds, so that blocked threads hold at most 2 of THREAD_LIMIT. (The
#: mix keeps the sync cleanups' load at a few threads at any rate: once every thread is taken,
#: a sync cleanup that cannot start within its timeout is skipped, as SPEC 2.6 says, and this
#: run would count it as lost.)
BLOCK_SECONDS = 1.5
BLOCK_SPACING = 0.75
HANG_SECONDS = 2.0
UPLOAD_SIZE = 8 << 20
UPLOAD_SENT = 1 << 20

#: The mix: (kind, weight). Each kind is a function of the driver below.
MIX: tuple[tuple[str, int], ...] = (
    ("ok", 340),  # a sync and an async cleanup, instant
    ("slow", 80),  # two async cleanups, 0.1 s each
    ("slow-sync", 40),  # a sync cleanup, 0.05 s
    ("long-phase", 20),  # four async cleanups of 0.4 s: a 1.6 s phase (daphne cancels it at 1 s)
    ("app-error", 70),  # the app raises before its response
    ("error-after-response", 40),  # ... after a complete response
    ("error-after-start", 20),  # ... after starting it
    ("failing", 80),  # a cleanup raises
    ("hang", 30),  # an async cleanup awaits 2 s, past its timeout (1 s)
    ("block", 10),  # a sync cleanup blocks its thread 1.5 s, past its timeout
    ("late", 20),  # a cleanup registers another once the phase has started
    ("cancelled", 30),  # a deadline outside the middleware cancels the app call
    ("disconnect-mid-stream", 30),
    ("disconnect-before-body", 20),
    ("disconnect-during-upload", 10),
    ("websocket-client-closes", 10),
    ("websocket-server-closes", 10),
)


#: Kinds left out of the mix on a server, and why.
LEFT_OUT = {
    "daphne": {
        "error-after-start": (
            "an app that raises after starting its response kills daphne's application checker "
            "(ValueError in handle_exception): from then on daphne sends no 500 for app errors, "
            "cancels nothing and reaps no finished connection, with or without the middleware"
        )
    }
}


class Unexpected(Exception):
    """A response other than the mix expects."""


@dataclass
class Tally:
    """What the client saw, shared by the driver threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    kinds: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    error_text_bytes: int = 0
    next_block: float = 0.0

    def saw(self, kind: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        found = body.count(ERROR_TEXT) * len(ERROR_TEXT)
        for value in (headers or {}).values():
            found += value.encode().count(ERROR_TEXT) * len(ERROR_TEXT)
        with self.lock:
            self.kinds[kind] += 1
            self.error_text_bytes += found

    def wrong(self, what: str) -> None:
        with self.lock:
            self.unexpected.append(what)

    def may_block(self) -> bool:
        with self.lock:
            now = time.monotonic()
            if now < self.next_block:
                return False
            self.next_block = now + BLOCK_SPACING
            return True


class Driver:
    """One client thread: a keep-alive connection, reopened whenever a request ends it."""

    def __init__(self, server: ServerProcess, tally: Tally) -> None:
        self.server = server
        self.tally = tally
        self.conn: RawHTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def connection(self) -> RawHTTPConnection:
        if self.conn is None:
            self.conn = RawHTTPConnection(self.server.port, timeout=10.0)
        return self.conn

    def fresh(self) -> RawHTTPConnection:
        """A connection of its own for a request that ends it (disconnects)."""
        return RawHTTPConnection(self.server.port, timeout=10.0)

    def get(self, target: str, **kwargs: Any) -> Any:
        conn = self.connection()
        try:
            response = conn.get(target, **kwargs)
        except (ConnectionClosedError, TimeoutError, OSError):
            self.close()
            raise
        if response.server_closes or not response.complete:
            self.close()
        return response

    def run(self, rid: str, kind: str) -> None:
        try:
            getattr(self, "do_" + kind.replace("-", "_"))(rid, kind)
        except Unexpected as exc:
            self.tally.wrong(f"{rid} {kind}: {exc}")
        except (ConnectionClosedError, TimeoutError, OSError) as exc:
            self.close()
            self.tally.wrong(f"{rid} {kind}: {exc!r}")

    def expect(self, kind: str, response: Any, status: int, body: bytes | None = b"ok") -> None:
        self.tally.saw(kind, response.body, response.headers)
        if response.status != status or (body is not None and response.body != body):
            raise Unexpected(f"{response.status} {response.body[:80]!r}")

    def do_ok(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/slow?id={rid}&n=2&mix=1&sleep=0"), 200)

    def do_slow(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/slow?id={rid}&n=2&sleep=0.1"), 200)

    def do_slow_sync(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/slow-sync?id={rid}&sleep=0.05"), 200)

    def do_long_phase(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/slow?id={rid}&n=4&sleep=0.4"), 200)

    def do_app_error(self, rid: str, kind: str) -> None:
        response = self.get(f"/error?id={rid}&sleep=0.05")
        # Some servers close the connection after an app error, not always saying so.
        self.close()
        self.expect(kind, response, 500, body=None)

    def do_error_after_response(self, rid: str, kind: str) -> None:
        response = self.get(f"/error-after-response?id={rid}&sleep=0.05")
        self.close()
        self.expect(kind, response, 200)

    def do_error_after_start(self, rid: str, kind: str) -> None:
        # Servers cut the response at once (daphne, left out, would leave it open): the
        # client takes what came within 0.5 s and leaves.
        conn = self.fresh()
        try:
            response = conn.get(f"/error-after-start?id={rid}&sleep=0.05", 0.5, partial_ok=True)
        except ConnectionClosedError:
            # Cut before even its head went out (granian, now and then): as good as cut.
            self.tally.saw(kind, b"")
            return
        finally:
            conn.abort()
        self.expect(kind, response, 200, body=b"partial")
        if response.complete:
            raise Unexpected("a response cut by an app error looks complete")

    def do_failing(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/faulty?id={rid}&faults=raise"), 200)

    def do_hang(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/faulty?id={rid}&faults=hang&hang={HANG_SECONDS}"), 200)

    def do_block(self, rid: str, kind: str) -> None:
        if not self.tally.may_block():
            self.do_hang(rid, "hang")
            return
        target = f"/faulty?id={rid}&faults=block&block={BLOCK_SECONDS}"
        self.expect(kind, self.get(target), 200)

    def do_late(self, rid: str, kind: str) -> None:
        self.expect(kind, self.get(f"/faulty?id={rid}&faults=late"), 200)

    def do_cancelled(self, rid: str, kind: str) -> None:
        target = f"/slow?id={rid}&n=2&mix=1&sleep=0.05&hold=1&cancel_after=0.05"
        self.expect(kind, self.get(target), 504, body=b"deadline")

    def do_disconnect_mid_stream(self, rid: str, kind: str) -> None:
        conn = self.fresh()
        try:
            head = conn.get_until(f"/stream?id={rid}&chunks=20&interval=0.05", b"chunk 1\n")
        finally:
            conn.close()
        self.tally.saw(kind, head)
        if not head.startswith(b"HTTP/1.1 200"):
            raise Unexpected(repr(head[:80]))

    def do_disconnect_before_body(self, rid: str, kind: str) -> None:
        conn = self.fresh()
        try:
            conn.sock.sendall(conn.send_head("POST", f"/upload?id={rid}", length=100_000))
            time.sleep(0.01)
        finally:
            conn.close()
        self.tally.saw(kind, b"")

    def do_disconnect_during_upload(self, rid: str, kind: str) -> None:
        conn = self.fresh()
        chunk = b"u" * (64 << 10)
        try:
            conn.sock.sendall(conn.send_head("POST", f"/upload?id={rid}", length=UPLOAD_SIZE))
            for _ in range(UPLOAD_SENT // len(chunk)):
                conn.sock.sendall(chunk)
        finally:
            conn.abort()
        self.tally.saw(kind, b"")

    def do_websocket_client_closes(self, rid: str, kind: str) -> None:
        with RawWebSocket(self.server.port, f"/ws?id={rid}", timeout=10.0) as ws:
            ws.send_text("hi")
            got = ws.receive()
            ws.close(1000)
        self.tally.saw(kind, str(got).encode())
        if got != ("text", "echo hi"):
            raise Unexpected(repr(got))

    def do_websocket_server_closes(self, rid: str, kind: str) -> None:
        with RawWebSocket(self.server.port, f"/ws?id={rid}", timeout=10.0) as ws:
            ws.send_text("close")
            got = ws.receive()
        self.tally.saw(kind, str(got).encode())
        if got != ("close", 4000):
            raise Unexpected(repr(got))


def plan(count: int, seed: int, prefix: str, server: str) -> list[tuple[str, str]]:
    """``count`` (request id, kind) pairs drawn from :data:`MIX` (less what ``server`` leaves
    out), the same for the same seed."""
    rng = random.Random(seed)
    mix = [(kind, weight) for kind, weight in MIX if kind not in LEFT_OUT.get(server, {})]
    kinds = [kind for kind, _ in mix]
    weights = [weight for _, weight in mix]
    return [(f"{prefix}{i}", kind) for i, kind in enumerate(rng.choices(kinds, weights, k=count))]


def drive(
    server: ServerProcess,
    requests: list[tuple[str, str]],
    concurrency: int,
    tally: Tally | None = None,
) -> Tally:
    """Send every request, ``concurrency`` at a time; what the client saw (added to ``tally``)."""
    tally = Tally() if tally is None else tally
    lock = threading.Lock()
    todo: Iterator[tuple[str, str]] = iter(requests)

    def worker() -> None:
        driver = Driver(server, tally)
        try:
            while True:
                with lock:
                    item = next(todo, None)
                if item is None:
                    return
                driver.run(*item)
        finally:
            driver.close()

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return tally


class Marks:
    """The marks file, read incrementally: registrations, starts and ends by (id, idx)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.reg: Counter[tuple[str, int]] = Counter()
        self.start: Counter[tuple[str, int]] = Counter()
        self.end: Counter[tuple[str, int]] = Counter()
        self.late_ran = 0
        #: Well-behaved (async) cleanups cut by their timeout: the event loop lagged that much.
        self.cut = 0

    def update(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        for line in complete.splitlines():
            mark = json.loads(line)
            event = mark["event"]
            if event == "late-ran":
                self.late_ran += 1
            elif event in ("reg", "start", "end"):
                getattr(self, event)[(mark["id"], mark["idx"])] += 1
                if event == "end" and mark.get("cancelled") and mark.get("kind") == "async":
                    self.cut += 1

    def settled(self) -> bool:
        return set(self.reg) <= set(self.end)

    def wait_settled(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            self.update()
            if self.settled():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def lost(self) -> int:
        return sum(1 for key in self.reg if not self.start[key] or not self.end[key])

    def duplicated(self) -> int:
        keys = set(self.reg) | set(self.start) | set(self.end)
        return sum(
            1 for k in keys if self.reg[k] > 1 or self.start[k] > 1 or self.end[k] > 1
        ) + sum(1 for k in set(self.start) | set(self.end) if not self.reg[k])


@dataclass
class Result:
    server: str
    requests: int
    warmup: int
    seconds: float
    registered: int
    lost: int
    duplicated: int
    late_ran: int
    cut: int
    error_text_bytes: int
    unexpected: list[str]
    rss_warm: int
    rss_end: int
    rss_trend: list[int]
    kinds: Counter[str]
    log: Path

    @property
    def growth(self) -> float:
        return self.rss_end / self.rss_warm - 1 if self.rss_warm else float("inf")

    @property
    def failures(self) -> list[str]:
        checks = [
            (self.lost == 0, f"{self.lost} cleanups lost"),
            (self.duplicated == 0, f"{self.duplicated} cleanups duplicated"),
            (self.late_ran == 0, f"{self.late_ran} late registrations ran"),
            (self.error_text_bytes == 0, f"{self.error_text_bytes} bytes of error text"),
            (not self.unexpected, f"{len(self.unexpected)} unexpected responses"),
            (self.growth <= RSS_TOLERANCE, f"RSS grew {self.growth:.1%}"),
        ]
        return [what for ok, what in checks if not ok]


def soak(
    kind: str,
    requests: int,
    warmup: int,
    concurrency: int,
    seed: int,
    workdir: Path,
    bare: bool = False,
) -> Result:
    marks_path = workdir / f"marks-{kind}.jsonl"
    extra = ["--application-close-timeout", "1"] if kind == "daphne" else []
    env = {
        "ASGI_CLEANUP_MARKS": str(marks_path),
        "ASGI_CLEANUP_TIMEOUT": str(CLEANUP_TIMEOUT),
        "ASGI_CLEANUP_THREAD_LIMIT": str(THREAD_LIMIT),
    }
    if bare:
        env["ASGI_CLEANUP_BYPASS"] = "1"
    server = ServerProcess(
        kind=kind, log_path=workdir / f"server-{kind}.log", env=env, extra_args=extra
    )
    marks = Marks(marks_path)
    server.start()
    try:
        drive(server, plan(warmup, seed, "warm", kind), concurrency)
        marks.wait_settled(30.0)
        rss_warm = sum(server.rss_kib().values())
        requests_plan = plan(requests, seed + 1, "r", kind)
        quarters = [requests_plan[i * requests // 4 : (i + 1) * requests // 4] for i in range(4)]
        began = time.monotonic()
        tally = Tally()
        rss_trend = []
        for quarter in quarters:
            drive(server, quarter, concurrency, tally)
            rss_trend.append(sum(server.rss_kib().values()))
        seconds = time.monotonic() - began
        marks.wait_settled(30.0)
        rss_end = sum(server.rss_kib().values())
    finally:
        server.stop(timeout=30.0)
    marks.update()
    return Result(
        server=kind,
        requests=requests,
        warmup=warmup,
        seconds=seconds,
        registered=len(marks.reg),
        lost=marks.lost(),
        duplicated=marks.duplicated(),
        late_ran=marks.late_ran,
        cut=marks.cut,
        error_text_bytes=tally.error_text_bytes,
        unexpected=tally.unexpected,
        rss_warm=rss_warm,
        rss_end=rss_end,
        rss_trend=rss_trend,
        kinds=tally.kinds,
        log=server.log_path,
    )


def table(results: list[Result]) -> list[str]:
    lines = [
        "| server | requests | s | req/s | cleanups | lost | duplicated | error text bytes "
        "| unexpected | RSS after warm-up | RSS after run | growth | result |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = "pass" if not r.failures else "FAIL: " + "; ".join(r.failures)
        lines.append(
            f"| {r.server} | {r.requests} | {r.seconds:.1f} | {r.requests / r.seconds:.0f} "
            f"| {r.registered} | {r.lost} | {r.duplicated + r.late_ran} "
            f"| {r.error_text_bytes} | {len(r.unexpected)} | {r.rss_warm / 1024:.1f} MiB "
            f"| {r.rss_end / 1024:.1f} MiB | {r.growth:+.1%} | {verdict} |"
        )
    return lines


def main(argv: list[str] | None = None, out: Callable[[str], Any] = print) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server", choices=[*SERVERS, "all"], action="append")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the marks and server logs here")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="serve the same mix without the middleware: a baseline for the server's memory",
    )
    args = parser.parse_args(argv)
    names = args.server or ["uvicorn"]
    kinds = list(SERVERS.values()) if "all" in names else [SERVERS[n] for n in names]

    workdir = Path(tempfile.mkdtemp(prefix="asgi-cleanup-soak-"))
    results = []
    try:
        for kind in kinds:
            out(f"# {kind}: {args.warmup} warm-up requests, then {args.requests} ...")
            for left_out, why in LEFT_OUT.get(kind, {}).items():
                out(f"  left out: {left_out}: {why}")
            result = soak(
                kind, args.requests, args.warmup, args.concurrency, args.seed, workdir, args.bare
            )
            results.append(result)
            mix = ", ".join(f"{k} {n}" for k, n in sorted(result.kinds.items()))
            out(f"  {result.seconds:.1f} s; mix: {mix}")
            trend = " → ".join(f"{kib / 1024:.1f}" for kib in [result.rss_warm, *result.rss_trend])
            out(f"  RSS (MiB) after the warm-up, then after each quarter of the run: {trend}")
            out(f"  well-behaved cleanups cut by their timeout (event loop lag): {result.cut}")
            for what in result.unexpected[:10]:
                out(f"  unexpected: {what}")
        out("")
        for line in table(results):
            out(line)
    finally:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.iterdir():
                shutil.copy2(path, args.keep / path.name)
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    failed = [r for r in results if r.failures]
    for r in failed:
        out(f"{r.server}: {'; '.join(r.failures)} (server log: --keep to see it)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
