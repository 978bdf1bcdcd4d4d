"""Run real ASGI servers (uvicorn, hypercorn) as subprocesses for the real-server tests.

A :class:`ServerProcess` serves an app (by default ``server_apps:app``) on 127.0.0.1 with a
free ephemeral port, writes the server's stdout and stderr to a log file, is ready once
``GET /health`` answers, and is stopped with SIGINT, then killed after a bound. Every wait here
has a deadline, so nothing can hang a test.

:class:`RawHTTPConnection` is a minimal HTTP/1.1 client on one raw socket (h11 parses), so that
a test can prove that two requests went over the *same* keep-alive connection, and see exactly
when the server closes it. :func:`read_marks` and :func:`wait_for_marks` read the JSON lines
that the cleanups of ``server_apps`` write.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import h11

HOST = "127.0.0.1"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent

#: The servers the real-server tests run on: uvicorn (asyncio), hypercorn on asyncio and on trio.
SERVER_KINDS: tuple[str, ...] = ("uvicorn", "hypercorn-asyncio", "hypercorn-trio")

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
KILL_TIMEOUT = 5.0


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
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``app`` ("module:attr") with server ``kind`` on ``port``.

    ``graceful_timeout`` is how long the server lets request tasks run after a shutdown signal
    before it cancels them (uvicorn ``--timeout-graceful-shutdown``, default: wait for ever;
    hypercorn ``--graceful-timeout``, default 3 s).
    """
    if kind == "uvicorn":
        cmd = [sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)]
        cmd += ["--lifespan", "on", "--loop", "asyncio"]
        if graceful_timeout is not None:
            cmd += ["--timeout-graceful-shutdown", _seconds(graceful_timeout)]
    elif kind in ("hypercorn-asyncio", "hypercorn-trio"):
        worker_class = kind.removeprefix("hypercorn-")
        cmd = [sys.executable, "-m", "hypercorn", app, "--bind", f"{HOST}:{port}"]
        cmd += ["--worker-class", worker_class, "--access-logfile", "-", "--error-logfile", "-"]
        if graceful_timeout is not None:
            cmd += ["--graceful-timeout", _seconds(graceful_timeout)]
    else:
        raise ValueError(f"unknown server kind {kind!r}; known: {', '.join(SERVER_KINDS)}")
    return [*cmd, *extra_args]


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
                extra_args=self.extra_args,
            )
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
            self._log_file.flush()
            self.proc = subprocess.Popen(
                cmd,
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
            # also holds hypercorn's worker process, which would outlive a killed parent.
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

    def local_address(self) -> tuple[str, int]:
        address: tuple[str, int] = self.sock.getsockname()
        return address

    def get(self, target: str, timeout: float | None = None) -> RawResponse:
        """Send ``GET target`` on this connection and read the response.

        Raises :class:`ConnectionClosedError` if the server closed the connection (or reset
        it) before the response began; returns a response with ``complete=False`` if it was
        cut after it began.
        """
        timeout = self.timeout if timeout is None else timeout
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("Host", f"{self.host}:{self.port}"), ("User-Agent", "asgi-cleanup-tests")],
        )
        started = time.monotonic()
        deadline = started + timeout
        try:
            self.sock.sendall(self.h11.send(request) + (self.h11.send(h11.EndOfMessage()) or b""))
        except OSError as exc:
            raise ConnectionClosedError(f"send failed: {exc!r}") from exc
        self.requests += 1
        response: h11.Response | None = None
        body = bytearray()
        complete = False
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                break  # EOF in the middle of the response
            if event is h11.NEED_DATA:
                data = self._recv(deadline)
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
                f"no response to GET {target} within {ended - started:.3f} s (connection closed)"
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
        request = h11.Request(
            method="GET", target=target, headers=[("Host", f"{self.host}:{self.port}")]
        )
        self.sock.sendall(self.h11.send(request) + (self.h11.send(h11.EndOfMessage()) or b""))
        self.requests += 1
        received = bytearray()
        while marker not in received:
            data = self._recv(deadline)
            if not data:
                raise ConnectionClosedError(f"closed before {marker!r}; got {bytes(received)!r}")
            received += data
        return bytes(received)

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
