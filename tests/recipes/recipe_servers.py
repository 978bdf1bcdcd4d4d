"""Serving the recipe apps with real servers, as subprocesses on 127.0.0.1, for
``test_recipes_servers.py`` and ``test_recipes_commands.py``. Every wait has a deadline."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from servers import HOST, with_default_signals

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while not predicate(text := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return text


@contextlib.contextmanager
def serving(
    argv: Sequence[str], port: int, *, cwd: Path, env: Mapping[str, str], log_path: Path
) -> Iterator[Server]:
    """Run ``argv`` (a server on ``port``) with default signal dispositions, wait until it
    answers HTTP, stop it (SIGINT, then kill its process group) after."""
    name = " ".join(argv)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            with_default_signals(argv),
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill can take the whole group (granian's worker too)
        )
    server = Server(proc, port, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert proc.poll() is None, f"{name} exited early:\n{server.log()}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                get(port, "/ready")  # any answer (a 404) means it serves
                break
            assert time.monotonic() < deadline, f"{name} not ready:\n{server.log()}"
            time.sleep(0.05)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
