"""Instructions and estimated cycles per request behind uvicorn, under callgrind.

Requests per second behind a server swing by a third from round to round on a shared
machine, more than the differences being measured. This part counts instead: uvicorn serves
each app of :mod:`benchmarks.served_apps` under ``valgrind --tool=callgrind`` (as in
:mod:`benchmarks.instructions`), while this process sends it ``small`` and, in another run,
``large`` requests one after another on one keep-alive connection; the difference of the two
totals per extra request is what the server process spends on one, parsing and event loop
included. The ratio of two apps' cycle estimates is the inverse of their throughput ratio for
a server that has a core to itself.

uvicorn only: it serves in one process with ``--workers 1`` (hypercorn adds a supervisor).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from functools import partial

from .instructions import Counts, available, environment, in_parallel, valgrind
from .loadgen import HOST
from .served import REPO_ROOT, free_port, server_command, uvicorn_http
from .served_apps import APPS

#: (scenario, anchor, bar): the scenario's throughput is at least `bar` × the anchor's.
TARGETS: list[tuple[str, str, float]] = [
    ("1 async cleanup", "bare", 0.97),
    ("1 async cleanup", "BackgroundTask, 1 async", 1.00),
]
WARMUP = 100
START_TIMEOUT = 120.0  # uvicorn's imports under callgrind take a while
REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: asgi-cleanup-benchmark\r\n\r\n".encode()


def connect(port: int, deadline: float) -> socket.socket:
    """One connection, once the server listens: a refused attempt never reaches the app, so
    every run's server sees the same traffic."""
    while True:
        try:
            return socket.create_connection((HOST, port), timeout=30.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def exchange(sock: socket.socket, requests: int) -> None:
    """Send ``requests`` GETs one after another, reading each whole response."""
    buffer = b""
    for _ in range(requests):
        sock.sendall(REQUEST)
        while True:
            head, found, rest = buffer.partition(b"\r\n\r\n")
            if found:
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) >= length:
                    buffer = rest[length:]
                    break
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed the connection")
            buffer += chunk


def count(attr: str, requests: int) -> Counts:
    """What uvicorn serving ``served_apps.attr`` executed for a warm-up and ``requests``."""
    port = free_port()
    command = [*server_command("uvicorn", attr, port), "--lifespan", "off"]
    proc = subprocess.Popen(
        valgrind(command),
        cwd=REPO_ROOT,
        env={**environment(), "PYTHONPATH": str(REPO_ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with connect(port, time.monotonic() + START_TIMEOUT) as sock:
            exchange(sock, WARMUP + requests)
        proc.send_signal(signal.SIGINT)  # uvicorn shuts down, callgrind prints its totals
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Counts.parse(stderr)


def run(small: int, large: int, emit: Callable[[str], None]) -> None:
    """Print the counts per request of each served app, and the target ratios."""
    emit(f"\n# Served under callgrind, uvicorn: {small} and {large} requests\n")
    if not available():
        emit("skipped: valgrind is not installed (Debian: apt-get install valgrind)")
        return
    emit(
        f"uvicorn --http {uvicorn_http()} --loop asyncio --workers 1, one keep-alive "
        f"connection, requests one at a time after {WARMUP} to warm up\n"
    )
    jobs = [partial(count, attr, n) for attr in APPS.values() for n in (small, large)]
    totals = iter(in_parallel(jobs))
    counts = {name: next(totals).per_request(next(totals), large - small) for name in APPS}
    emit("| app | instructions/request | estimated cycles/request | × bare, cycles |")
    emit("|---|---:|---:|---:|")
    for name, value in counts.items():
        emit(
            f"| {name} | {value.instructions:,.0f} | {value.cycles:,.0f} "
            f"| {value.cycles / counts['bare'].cycles:.3f} |"
        )
    emit("\n| scenario | anchor | × anchor, throughput by estimated cycles | bar | met |")
    emit("|---|---|---:|---|---|")
    for name, anchor, bar in TARGETS:
        ratio = counts[anchor].cycles / counts[name].cycles
        emit(
            f"| {name} | {anchor} | {ratio:.3f} | ≥ {bar:.2f} | {'yes' if ratio >= bar else 'no'} |"
        )
