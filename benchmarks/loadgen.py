"""Load generators for the served benchmark: wrk, or a fallback written in Python.

:func:`find_load_tool` takes wrk from ``PATH``; if it is missing and this process runs as root
where ``apt-get`` exists, it installs Debian's ``wrk`` package first (and says so). Otherwise,
or with ``--load-tool python``, it falls back to :class:`PythonLoad`: processes that each keep
some HTTP/1.1 keep-alive connections busy on raw sockets, one request in flight per connection,
as wrk does. Both send ``GET /`` to 127.0.0.1 for a fixed number of seconds and report the
completed responses per second.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import selectors
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import Protocol

HOST = "127.0.0.1"
APT_TIMEOUT = 300.0
#: How long past its duration a load run may take before it is given up (connecting, reports).
RUN_GRACE = 30.0


@dataclass(frozen=True)
class LoadResult:
    """One load run against one server."""

    requests_per_second: float
    #: Responses other than 200, and connections that failed (refused, reset, timed out).
    errors: int


class LoadTool(Protocol):
    """Something that loads ``http://127.0.0.1:PORT/`` for a number of seconds."""

    @property
    def description(self) -> str:
        """The tool, its version and its settings, for the report."""
        ...

    def run(self, port: int, seconds: int) -> LoadResult:
        """Load the server on ``port`` for ``seconds`` seconds; what it sustained."""
        ...


@dataclass(frozen=True)
class Wrk:
    """wrk with one thread (the other core is the server's) and ``connections`` connections."""

    path: str
    version: str
    connections: int

    @property
    def description(self) -> str:
        return f"{self.version} ({self.path}), 1 thread, {self.connections} connections"

    def run(self, port: int, seconds: int) -> LoadResult:
        cmd = [self.path, "-t1", f"-c{self.connections}", f"-d{seconds}s", "--timeout", "5s"]
        result = subprocess.run(
            [*cmd, f"http://{HOST}:{port}/"],
            capture_output=True,
            text=True,
            timeout=seconds + RUN_GRACE,
            check=True,
        )
        return parse_wrk(result.stdout)


def parse_wrk(output: str) -> LoadResult:
    """Requests per second and errors (non-2xx/3xx responses, socket errors) of wrk's report."""
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{output}")
    errors = 0
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    if non_2xx:
        errors += int(non_2xx.group(1))
    sockets = re.search(r"Socket errors:(.*)", output)
    if sockets:
        errors += sum(int(n) for n in re.findall(r"\d+", sockets.group(1)))
    return LoadResult(float(rate.group(1)), errors)


def wrk_version(path: str) -> str:
    """wrk's first line of ``wrk -v`` ("wrk 4.1.0 [epoll] ..."), up to its copyright."""
    result = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10.0)
    first = (result.stdout or result.stderr).strip().splitlines()[0]
    return first.split(" Copyright")[0]


def install_wrk(out: Callable[[str], object]) -> str | None:
    """Install Debian's wrk with apt-get (root only); its path, or None if that failed."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    out("wrk is not on PATH: installing it with `apt-get install -y wrk`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    # An empty or stale package list needs an update first; try without one.
    for cmd in (install, ["apt-get", "update"], install):
        try:
            done = subprocess.run(cmd, capture_output=True, env=env, timeout=APT_TIMEOUT)
        except subprocess.TimeoutExpired:
            out(f"`{' '.join(cmd)}` took over {APT_TIMEOUT:.0f} s: given up")
            return None
        if cmd is install and done.returncode == 0:
            break
    path = shutil.which("wrk")
    out(f"installed {path}" if path else "apt-get could not install wrk")
    return path


def find_load_tool(choice: str, connections: int, out: Callable[[str], object]) -> LoadTool:
    """The load generator for ``--load-tool`` ``choice`` ("auto", "wrk" or "python").

    "auto" is wrk if it is on PATH or can be installed, else the Python fallback; "wrk" is
    the same without the fallback (``SystemExit`` if there is no wrk).
    """
    if choice != "python":
        path = shutil.which("wrk") or install_wrk(out)
        if path is not None:
            return Wrk(path, wrk_version(path), connections)
        if choice == "wrk":
            raise SystemExit("wrk is not installed and could not be installed (apt-get, root)")
        out("wrk is not available: using the Python load generator instead (slower than wrk)")
    return PythonLoad(processes=max(1, (os.cpu_count() or 2) - 1), connections=connections)


@dataclass(frozen=True)
class PythonLoad:
    """``processes`` processes sharing ``connections`` keep-alive connections between them."""

    processes: int
    connections: int

    @property
    def description(self) -> str:
        return (
            f"Python fallback (benchmarks/loadgen.py), {self.processes} process(es), "
            f"{self.connections} keep-alive connections on raw sockets"
        )

    def run(self, port: int, seconds: int) -> LoadResult:
        """Start the processes, let them connect, start them together, add up their counts."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a process that has threads
        go = ctx.Event()
        pipes: list[Connection] = []
        workers = []
        for index in range(self.processes):
            share = self.connections // self.processes + (index < self.connections % self.processes)
            ours, theirs = ctx.Pipe(duplex=False)
            worker = ctx.Process(target=load_worker, args=(port, share, seconds, go, theirs))
            worker.start()
            theirs.close()
            pipes.append(ours)
            workers.append(worker)
        deadline = time.monotonic() + seconds + RUN_GRACE
        try:
            for pipe in pipes:  # each says "ready" once connected
                receive(pipe, deadline)
            go.set()
            counts = [receive(pipe, deadline) for pipe in pipes]
        except BaseException:
            for worker in workers:
                worker.kill()
            raise
        finally:
            for worker in workers:
                worker.join(timeout=max(0.0, deadline - time.monotonic()))
                if worker.is_alive():
                    worker.kill()
                    worker.join(timeout=5.0)
        return LoadResult(
            sum(done for done, _ in counts) / seconds, sum(errors for _, errors in counts)
        )


def receive(pipe: Connection, deadline: float) -> tuple[int, int]:
    """The next message of a worker, before ``deadline`` (``TimeoutError`` otherwise)."""
    if not pipe.poll(max(0.0, deadline - time.monotonic())):
        raise TimeoutError("a load worker did not report in time")
    try:
        message: tuple[int, int] = pipe.recv()
    except EOFError:
        raise RuntimeError("a load worker exited without a report (its error is above)") from None
    return message


REQUEST = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()


def response_length(buffer: bytearray) -> int:
    """The length of the complete response at the start of ``buffer``, or 0 if incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return 0
    length = re.search(rb"\r\ncontent-length:\s*(\d+)", buffer[:end], re.IGNORECASE)
    if length is None:
        raise RuntimeError("a response without Content-Length: the hello world sends one")
    total = end + 4 + int(length.group(1))
    return total if len(buffer) >= total else 0


def load_worker(port: int, connections: int, seconds: int, go: Event, report: Connection) -> None:
    """One load process: connect, report ready, wait for ``go``, run, report (done, errors)."""
    selector = selectors.DefaultSelector()
    for _ in range(connections):
        sock = socket.create_connection((HOST, port), timeout=5.0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, (sock, bytearray()))
    report.send((0, 0))
    if not go.wait(RUN_GRACE):
        return
    done = errors = 0
    for key in list(selector.get_map().values()):
        errors += not send_request(selector, key.data[0])
    stop = time.monotonic() + seconds
    while (left := stop - time.monotonic()) > 0 and selector.get_map():
        for key, _ in selector.select(timeout=left):
            sock, buffer = key.data
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                errors += 1
                close(selector, sock)
                continue
            buffer += data
            while length := response_length(buffer):
                errors += buffer[9:12] != b"200"
                done += 1
                del buffer[:length]
                if not send_request(selector, sock):
                    errors += 1
                    break
    report.send((done, errors))


def send_request(selector: selectors.BaseSelector, sock: socket.socket) -> bool:
    """Send the next request on ``sock``; on failure close it and return False."""
    try:
        sock.send(REQUEST)
    except OSError:
        close(selector, sock)
        return False
    return True


def close(selector: selectors.BaseSelector, sock: socket.socket) -> None:
    """Stop watching ``sock`` and close it."""
    selector.unregister(sock)
    sock.close()
