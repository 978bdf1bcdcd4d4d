"""Run real ASGI servers (uvicorn, hypercorn, granian, daphne) as subprocesses for the real-server
tests and the soak tool (``benchmarks/soak.py``).

A :class:`ServerProcess` serves an app (by default ``server_apps:app``) on 127.0.0.1 with a
free ephemeral port, writes the server's stdout and stderr to a log file, is ready once
``GET /health`` answers, and is stopped with SIGINT, then killed after a bound. Every wait here
has a deadline, so nothing can hang a test.

:data:`LIMITS` says which cases a server cannot run, and why, as facts about the server that hold
on any machine; the tests skip with that reason.

:class:`RawHTTPConnection` is a minimal HTTP/1.1 client on one raw socket (h11 parses), so that
a test can prove that two requests went over the *same* keep-alive connection, pipeline
requests, walk away at any point of a request, and see exactly when the server closes the
connection. :class:`RawWebSocket` is the same for websockets (wsproto). :func:`read_marks` and
:func:`wait_for_marks` read the JSON lines that the cleanups of ``server_apps`` write;
:func:`process_tree` and :func:`rss_kib` read a server's processes and memory from ``/proc``.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import h11
import wsproto
import wsproto.events as ws_events

HOST = "127.0.0.1"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

#: The servers the real-server tests run on: uvicorn (asyncio), hypercorn on asyncio and on
#: trio, granian (ASGI interface, asyncio loop) and daphne (Twisted on asyncio).
SERVER_KINDS: tuple[str, ...] = (
    "uvicorn",
    "hypercorn-asyncio",
    "hypercorn-trio",
    "granian",
    "daphne",
)

#: What a server cannot do, as a fact about the server: (kind, capability) -> why not.
LIMITS: dict[tuple[str, str], str] = {
    ("daphne", "lifespan"): "daphne has no lifespan, so nothing can hold its shutdown",
    ("daphne", "workers"): "daphne has no --workers option: one process serves every connection",
    **{
        (kind, "workers-shutdown"): (
            "hypercorn --workers N terminates every worker still shutting down as soon as the "
            "first one has exited (SIGTERM, which its workers do not handle), so cleanups still "
            "running in the others are lost (test_real_server_facts.py proves it)"
        )
        for kind in ("hypercorn-asyncio", "hypercorn-trio")
    },
    ("daphne", "workers-shutdown"): "daphne has no --workers option",
    ("daphne", "streamed-body"): (
        "daphne reads the whole request body before it calls the app, so a client that leaves "
        "before or during the body never reaches the app (nothing is registered, nothing runs)"
    ),
    ("daphne", "graceful-timeout"): (
        "daphne has no graceful-shutdown timeout: at a signal it cancels every app task at once"
    ),
    ("granian", "graceful-timeout"): (
        "granian has no graceful-shutdown timeout that cancels request tasks: at a signal it "
        "runs the lifespan shutdown, then drops the request tasks left without cancelling them"
    ),
    **{
        (kind, "close-timeout"): (
            f"{kind} cancels a request task only at shutdown, after its graceful timeout; only "
            "daphne has a timeout (--application-close-timeout) that cancels one while it serves"
        )
        for kind in ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")
    },
    ("granian", "close-timeout"): (
        "granian never cancels a request task (at shutdown it drops those left); only daphne "
        "has a timeout (--application-close-timeout) that cancels one while it serves"
    ),
}

#: How long after an app raised a server may take to send its own 500 or cut the response:
#: daphne reports an app's exception from a check that runs once a second.
APP_ERROR_DELAY: dict[str, float] = {"daphne": 1.0}

#: What a server does with a response the app started and then raised: "cut" it (close the
#: connection at once), or leave it "open", unfinished, with the connection (daphne: the check
#: that would answer fails on it and is never run again; see test_real_server_facts.py).
STARTED_RESPONSE_ON_APP_ERROR: dict[str, str] = {"daphne": "open"}

READY_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0


def limit(kind: str, capability: str) -> str | None:
    """Why server ``kind`` cannot run cases that need ``capability``, or None if it can."""
    return LIMITS.get((kind, capability))


def require(kind: str, capability: str) -> None:
    """Skip the calling test, with the reason, if server ``kind`` lacks ``capability``."""
    why = limit(kind, capability)
    if why is not None:
        import pytest

        pytest.skip(why)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def server_command(
    kind: str,
    app: str,
    port: int,
    *,
    graceful_timeout: float | None = None,
    workers: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``app`` ("module:attr") with server ``kind`` on ``port``.

    ``graceful_timeout`` is how long the server lets request tasks run after a shutdown signal
    before it cancels them (uvicorn ``--timeout-graceful-shutdown``, default: wait for ever;
    hypercorn ``--graceful-timeout``, default 3 s); granian and daphne have no such option
    (:data:`LIMITS`). ``workers`` is the number of worker processes (not daphne).
    """
    for capability, wanted in (("graceful-timeout", graceful_timeout), ("workers", workers)):
        why = limit(kind, capability)
        if wanted is not None and why is not None:
            raise ValueError(why)
    if kind == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)]
        cmd += ["--lifespan", "on", "--loop", "asyncio"]
        if graceful_timeout is not None:
            cmd += ["--timeout-graceful-shutdown", _seconds(graceful_timeout)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
    elif kind in ("hypercorn-asyncio", "hypercorn-trio"):
        worker_class = kind.removeprefix("hypercorn-")
        cmd = [sys.executable, "-m", "hypercorn", app, "--bind", f"{HOST}:{port}"]
        cmd += ["--worker-class", worker_class, "--access-logfile", "-", "--error-logfile", "-"]
        if graceful_timeout is not None:
            cmd += ["--graceful-timeout", _seconds(graceful_timeout)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
    elif kind == "granian":
        # The ASGI interface runs the lifespan protocol; "asginl" would not.
        cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--loop", "asyncio"]
        cmd += ["--host", HOST, "--port", str(port)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += [*extra_args, app]
        return cmd
    elif kind == "daphne":
        cmd = [sys.executable, "-m", "daphne", "--bind", HOST, "--port", str(port)]
        cmd += [*extra_args, app]
        return cmd
    else:
        raise ValueError(f"unknown server kind {kind!r}; known: {', '.join(SERVER_KINDS)}")
    return [*cmd, *extra_args]


#: Run as ``python -c EXEC_WITH_DEFAULT_SIGNALS PROGRAM ARG...``: every signal back to its
#: default disposition and none blocked, then ``exec`` PROGRAM in the same process (same pid).
#: Ignored signals survive ``fork`` and ``exec``, so a suite started with SIGINT ignored (``make
#: test &`` from a script) would start servers that ignore the SIGINT meant to stop them:
#: Python keeps SIGINT ignored at startup, and daphne (Twisted) then installs no handler.
#: ``Popen(restore_signals=True)`` resets only SIGPIPE, SIGXFZ and SIGXFSZ, and ``preexec_fn``
#: is unsafe with the threads a test process has.
EXEC_WITH_DEFAULT_SIGNALS = """\
import os, signal, sys
for sig in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):  # signals the kernel or Python keep for themselves
        pass
signal.pthread_sigmask(signal.SIG_SETMASK, ())
os.execv(sys.argv[1], sys.argv[1:])
"""


def with_default_signals(cmd: Sequence[str]) -> list[str]:
    """``cmd`` (whose first item is an executable's path) run with default signal dispositions."""
    return [sys.executable, "-c", EXEC_WITH_DEFAULT_SIGNALS, *cmd]


def _seconds(value: float) -> str:
    # uvicorn's --timeout-graceful-shutdown is an int option.
    return str(int(value)) if float(value).is_integer() else str(value)


class ServerError(AssertionError):
    """A server did not start or stop as expected; the message ends with its log."""


@dataclass
class ServerProcess:
    """One server subprocess. Use :meth:`start`, then :meth:`stop` (the fixtures do both)."""

    kind: str
    log_path: Path
    app: str = "server_apps:app"
    env: dict[str, str] = field(default_factory=dict)
    graceful_timeout: float | None = None
    workers: int | None = None
    extra_args: Sequence[str] = ()
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    _log_file: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return f"{self.kind} on {HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self, ready_timeout: float = READY_TIMEOUT) -> ServerProcess:
        """Start the server and wait until it answers ``GET /health`` (or fail with its log)."""
        assert self.proc is None, "server already started"
        exited: int | None = None
        for _attempt in range(3):  # the port may be taken between free_port() and bind
            self.port = free_port()
            cmd = server_command(
                self.kind,
                self.app,
                self.port,
                graceful_timeout=self.graceful_timeout,
                workers=self.workers,
                extra_args=self.extra_args,
            )
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
            self._log_file.flush()
            self.proc = subprocess.Popen(
                with_default_signals(cmd),
                cwd=REPO_ROOT,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals only; a kill can take the whole group
            )
            if self._wait_ready(ready_timeout):
                return self
            exited = self.proc.poll()
            address_in_use = "address already in use" in self.log_text().lower()
            self._terminate()
            if not address_in_use:
                break
            self.proc = None
        if exited is None:
            why = f"was not ready within {ready_timeout} s"
        else:
            why = f"exited with {exited} before it was ready"
        raise ServerError(f"{self.name} {why}" + self._tail())

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO_ROOT), str(TESTS_DIR)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.update(self.env)
        return env

    def _wait_ready(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
                try:
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        return True
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` (e.g. ``signal.SIGINT``, ``signal.SIGTERM``) to the server process."""
        assert self.proc is not None, "server not started"
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the server to exit; its return code.

        Raises :class:`ServerError` (with the log) if it is still running then.
        """
        assert self.proc is not None, "server not started"
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ServerError(
                f"{self.name} still running after {timeout} s" + self._tail()
            ) from None

    def shutdown(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit; the return code (``ServerError`` on timeout)."""
        self.send_signal(sig)
        return self.wait_exit(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop the server however it is: SIGINT, wait up to ``timeout``, then kill its group.

        Never raises for a slow server; closes the log file. The return code, or None if the
        server was never started.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._note(f"not stopped {timeout} s after SIGINT: killing its process group")
                self._terminate()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return self.proc.returncode

    def _terminate(self) -> None:
        """Kill the server's process group now and reap it (bounded)."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            # Not reaped yet, so its pid (the group's id) cannot have been reused. The group
            # also holds the servers' worker processes, which would outlive a killed parent.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=KILL_TIMEOUT)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as f:
            f.write(f"[test harness] {text}\n".encode())

    def log_text(self) -> str:
        """The server's output so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def _tail(self, chars: int = 6000) -> str:
        text = self.log_text()
        if len(text) > chars:
            text = "...\n" + text[-chars:]
        return f"\n--- {self.name} log ({self.log_path}) ---\n{text}"

    def processes(self) -> list[int]:
        """The pids of the server process and all its descendants (workers), parent first."""
        return process_tree(self.pid)

    def rss_kib(self) -> dict[int, int]:
        """Resident memory (``VmRSS``, KiB) of each process of the server, by pid."""
        sizes = {pid: rss_kib(pid) for pid in self.processes()}
        return {pid: size for pid, size in sizes.items() if size is not None}


# --- processes and memory, from /proc ----------------------------------------------------------


def _parent_pids() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def process_tree(pid: int) -> list[int]:
    """``pid`` and its living descendants, breadth first (Linux ``/proc``)."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_pids().items():
        children.setdefault(parent, []).append(child)
    tree, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        tree.append(current)
        queue.extend(sorted(children.get(current, [])))
    return tree


def rss_kib(pid: int) -> int | None:
    """``VmRSS`` of process ``pid`` in KiB (``/proc/<pid>/status``), None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


# --- reading what the cleanups did ------------------------------------------------------------


def read_marks(path: Path) -> list[dict[str, Any]]:
    """All marks written so far (a partly written last line is ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    marks = []
    for line in text.splitlines():
        try:
            marks.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return marks


def wait_for_marks(
    path: Path,
    predicate: Callable[[list[dict[str, Any]]], bool],
    timeout: float,
    interval: float = 0.02,
) -> list[dict[str, Any]]:
    """Poll the marks file until ``predicate(marks)`` holds or ``timeout`` passes.

    Returns the marks either way; the caller asserts on them.
    """
    deadline = time.monotonic() + timeout
    while True:
        marks = read_marks(path)
        if predicate(marks) or time.monotonic() >= deadline:
            return marks
        time.sleep(interval)


def marks_of(
    marks: list[dict[str, Any]], event: str, rid: str | None = None
) -> list[dict[str, Any]]:
    """The marks of one ``event`` ("start", "end", ...), for one request id if given."""
    return [m for m in marks if m["event"] == event and (rid is None or m["id"] == rid)]


# --- a raw HTTP/1.1 client ----------------------------------------------------------------------


class ConnectionClosedError(ConnectionError):
    """The server closed the connection before a response began."""


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    #: True if the whole response (h11's EndOfMessage) arrived; False if the server cut it.
    complete: bool
    #: seconds from sending the request to the end of the response (complete or cut).
    elapsed: float
    #: ``time.time()`` when the response ended, comparable with the marks' ``t``.
    ended_at: float
    #: True if the server said it will close the connection (``Connection: close``).
    server_closes: bool


Headers = Iterable[tuple[str, str]]


class RawHTTPConnection:
    """One HTTP/1.1 keep-alive connection on a raw socket; every read has a deadline."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.requests = 0

    def __enter__(self) -> RawHTTPConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def abort(self) -> None:
        """Close with a TCP reset (SO_LINGER 0), as a client that crashes or times out does."""
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        self.sock.close()

    def local_address(self) -> tuple[str, int]:
        address: tuple[str, int] = self.sock.getsockname()
        return address

    def _request(self, method: str, target: str, headers: Headers, length: int | None) -> Any:
        all_headers = [("Host", f"{self.host}:{self.port}"), ("User-Agent", "asgi-cleanup-tests")]
        if length is not None:
            all_headers.append(("Content-Length", str(length)))
        return h11.Request(method=method, target=target, headers=[*all_headers, *headers])

    def get(
        self, target: str, timeout: float | None = None, *, partial_ok: bool = False
    ) -> RawResponse:
        """Send ``GET target`` on this connection and read the response (see :meth:`request`)."""
        return self.request("GET", target, timeout=timeout, partial_ok=partial_ok)

    def request(
        self,
        method: str,
        target: str,
        *,
        headers: Headers = (),
        body: bytes = b"",
        timeout: float | None = None,
        partial_ok: bool = False,
    ) -> RawResponse:
        """Send a request on this connection and read the response.

        Raises :class:`ConnectionClosedError` if the server closed the connection (or reset
        it) before the response began; returns a response with ``complete=False`` if it was
        cut after it began. A response still unfinished after ``timeout`` raises
        ``TimeoutError``, or with ``partial_ok`` is returned with ``complete=False``.
        """
        timeout = self.timeout if timeout is None else timeout
        self._next_cycle()
        length = len(body) if body or method not in ("GET", "HEAD") else None
        started = time.monotonic()
        data = self.h11.send(self._request(method, target, headers, length)) or b""
        if body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionClosedError(f"send failed: {exc!r}") from exc
        self.requests += 1
        return self._read_response(f"{method} {target}", started, started + timeout, partial_ok)

    def pipeline(self, targets: Sequence[str], timeout: float | None = None) -> list[RawResponse]:
        """Send ``GET`` for every target in one write, before any response; read them all.

        Each response's ``elapsed`` runs from that single write.
        """
        timeout = self.timeout if timeout is None else timeout
        self._next_cycle()
        data = b""
        for target in targets:
            # A throwaway h11 connection renders each request: ours allows one at a time.
            renderer = h11.Connection(our_role=h11.CLIENT)
            data += renderer.send(self._request("GET", target, (), None)) or b""
            data += renderer.send(h11.EndOfMessage()) or b""
        started = time.monotonic()
        self.sock.sendall(data)
        self.requests += len(targets)
        responses = []
        for i, target in enumerate(targets):
            if i:
                self._next_cycle()
            # Our h11 has to believe it sent this request to parse the answer to it.
            self.h11.send(self._request("GET", target, (), None))
            self.h11.send(h11.EndOfMessage())
            responses.append(self._read_response(f"GET {target}", started, started + timeout))
        return responses

    def _next_cycle(self) -> None:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()

    def _read_response(
        self, what: str, started: float, deadline: float, partial_ok: bool = False
    ) -> RawResponse:
        response: h11.Response | None = None
        body = bytearray()
        complete = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                break  # EOF in the middle of the response
            if event is h11.NEED_DATA:
                try:
                    data = self._recv(deadline)
                except TimeoutError:
                    if partial_ok and response is not None:
                        break
                    raise
                if data is None:
                    break
                self.h11.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                complete = True
                break
            elif isinstance(event, h11.ConnectionClosed):
                break
        ended = time.monotonic()
        if response is None:
            raise ConnectionClosedError(
                f"no response to {what} within {ended - started:.3f} s (connection closed)"
            )
        return RawResponse(
            status=response.status_code,
            headers={k.decode().lower(): v.decode() for k, v in response.headers},
            body=bytes(body),
            complete=complete,
            elapsed=ended - started,
            ended_at=time.time(),
            server_closes=self.h11.their_state is h11.MUST_CLOSE or not complete,
        )

    def get_until(self, target: str, marker: bytes, timeout: float | None = None) -> bytes:
        """Send ``GET target`` and read raw bytes until ``marker`` has arrived; leave the rest.

        For a streaming response that the test then walks away from (``close()``). The bytes
        read so far; ``TimeoutError`` if ``marker`` does not arrive in time.
        """
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self.sock.sendall(self.send_head("GET", target))
        received = bytearray()
        while marker not in received:
            data = self._recv(deadline)
            if not data:
                raise ConnectionClosedError(f"closed before {marker!r}; got {bytes(received)!r}")
            received += data
        return bytes(received)

    def send_head(
        self, method: str, target: str, *, headers: Headers = (), length: int | None = None
    ) -> bytes:
        """The bytes of a request's head (with ``Content-Length: length`` if given), and, for a
        request without a body, its end: for a test that sends the body itself, or not."""
        self._next_cycle()
        data = self.h11.send(self._request(method, target, headers, length)) or b""
        if not length:
            data += self.h11.send(h11.EndOfMessage()) or b""
        self.requests += 1
        return data

    def _recv(self, deadline: float) -> bytes | None:
        """Bytes from the socket; b"" on EOF (passed to h11); None on reset or deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("response not complete before the deadline")
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return None
        except TimeoutError:
            raise TimeoutError("response not complete before the deadline") from None

    def wait_closed(self, timeout: float) -> bool:
        """True if the server closes (or resets) the connection within ``timeout`` seconds.

        Any bytes the server sends meanwhile are unexpected and fail the wait with
        ``AssertionError``.
        """
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        assert data == b"", f"unexpected bytes from the server: {data[:200]!r}"
        return True


# --- a raw websocket client ---------------------------------------------------------------------


class RawWebSocket:
    """One websocket connection on a raw socket (wsproto); every read has a deadline.

    ``events`` collects what the server sent: ``("text", str)``, ``("close", code)``.
    """

    def __init__(self, port: int, target: str, host: str = HOST, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.events: list[tuple[str, Any]] = []
        self.closed_by_server = False
        self.sock.sendall(self.ws.send(ws_events.Request(host=f"{host}:{port}", target=target)))
        deadline = time.monotonic() + timeout
        while True:
            for event in self._events(deadline):
                if isinstance(event, ws_events.AcceptConnection):
                    return
                if isinstance(event, ws_events.RejectConnection):
                    raise ConnectionError(f"websocket to {target} rejected: {event}")

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.sock.close()

    def _events(self, deadline: float) -> list[ws_events.Event]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no websocket event before the deadline")
        self.sock.settimeout(remaining)
        try:
            data: bytes | None = self.sock.recv(65536)
        except TimeoutError:
            raise TimeoutError("no websocket event before the deadline") from None
        except ConnectionResetError:
            data = None
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(ws_events.TextMessage(data=text)))

    def receive(self, timeout: float | None = None) -> tuple[str, Any]:
        """The next text message or close from the server, as ``(kind, value)``.

        A close from the server is answered (the closing handshake) and returned as
        ``("close", code)``.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            for event in self._events(deadline):
                if isinstance(event, ws_events.TextMessage):
                    self.events.append(("text", event.data))
                    return self.events[-1]
                if isinstance(event, ws_events.CloseConnection):
                    self.closed_by_server = True
                    with contextlib.suppress(OSError, wsproto.utilities.LocalProtocolError):
                        self.sock.sendall(self.ws.send(event.response()))
                    self.events.append(("close", event.code))
                    return self.events[-1]
                if isinstance(event, ws_events.Ping):
                    self.sock.sendall(self.ws.send(event.response()))

    def close(self, code: int = 1000, timeout: float | None = None) -> int | None:
        """Start the closing handshake; the code of the server's answering close, if any."""
        self.sock.sendall(self.ws.send(ws_events.CloseConnection(code=code)))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with contextlib.suppress(TimeoutError, OSError):
            while True:
                events = self._events(deadline)
                for event in events:
                    if isinstance(event, ws_events.CloseConnection):
                        return event.code
                if not events and self.ws.state is wsproto.connection.ConnectionState.CLOSED:
                    return None
        return None
