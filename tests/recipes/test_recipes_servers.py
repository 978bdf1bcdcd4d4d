"""Each real server serves one recipe from examples/recipes as its page in docs/recipes says,
and the recipe's cleanups run after each response with the outcome the framework gives.

uvicorn serves FastAPI, hypercorn serves Quart (asyncio) and Starlette (trio), granian serves
Litestar, daphne serves Django. The servers run as subprocesses on 127.0.0.1 with the examples'
directory as working directory; every wait has a deadline.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import with_default_signals

pytestmark = pytest.mark.real_server

HOST = "127.0.0.1"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"
REPO_ROOT = EXAMPLES.parents[1]
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

# Root logger at INFO on stderr, so that the examples' cleanup records reach the server log.
# The handler names are granian's, which merges this into its own config.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s: %(message)s"}},
    "handlers": {
        name: {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}
        for name in ("console", "access")
    },
    "root": {"level": "INFO", "handlers": ["console"]},
}


@dataclass(frozen=True)
class Case:
    server: str
    target: str
    #: What the cleanups see of GET /error: "status 500, exception ..." as logged.
    error_outcome: str

    def command(self, port: int, log_config: Path) -> list[str]:
        python = [sys.executable, "-m"]
        if self.server == "uvicorn":
            return [*python, "uvicorn", self.target, "--host", HOST, "--port", str(port),
                    "--lifespan", "on", "--log-config", str(log_config)]  # fmt: skip
        if self.server.startswith("hypercorn"):
            worker = "trio" if self.server == "hypercorn-trio" else "asyncio"
            return [*python, "hypercorn", self.target, "--bind", f"{HOST}:{port}",
                    "--worker-class", worker, "--log-config", f"json:{log_config}"]  # fmt: skip
        if self.server == "granian":
            return [*python, "granian", "--interface", "asgi", "--host", HOST,
                    "--port", str(port), "--log-config", str(log_config), self.target]  # fmt: skip
        if self.server == "daphne":  # logs at INFO on stderr by default
            return [*python, "daphne", "-b", HOST, "-p", str(port), self.target]
        raise ValueError(self.server)


CASES = [
    Case("uvicorn", "fastapi_app:app", "status 500, exception RuntimeError('the endpoint failed')"),
    Case("hypercorn", "quart_app:app", "status 500, exception None"),
    Case(
        "hypercorn-trio",
        "starlette_app:app",
        "status 500, exception RuntimeError('the endpoint failed')",
    ),
    Case("granian", "litestar_app:app", "status 500, exception None"),
    Case("daphne", "django_project.asgi:application", "status 500, exception None"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5.0)
    try:
        conn.request("GET", path)
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
def serving(case: Case, tmp_path: Path) -> Iterator[Server]:
    """Start ``case``'s server, wait until it answers HTTP, stop it (SIGINT, then kill) after."""
    log_config = tmp_path / "logging.json"
    log_config.write_text(json.dumps(LOG_CONFIG), encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), str(REPO_ROOT)])}
    env["PYTHONUNBUFFERED"] = "1"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            with_default_signals(case.command(port, log_config)),
            cwd=EXAMPLES,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a kill can take the whole group (granian's worker too)
        )
    server = Server(proc, port, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            assert proc.poll() is None, f"{case.server} exited early:\n{server.log()}"
            with contextlib.suppress(OSError, http.client.HTTPException):
                get(port, "/ready")  # any answer (a 404) means it serves
                break
            assert time.monotonic() < deadline, f"{case.server} not ready:\n{server.log()}"
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


def cleanup_lines(log: str, status: int, path: str) -> list[str]:
    """The cleanup records of the request to ``path`` that ended with ``status``, in order."""
    lines = []
    for line in log.splitlines():
        for kind in ("dynamic cleanup: ", "directive cleanup: "):
            if kind in line:
                text = kind + line.split(kind, 1)[1]
                directive_of_path = f" {path} ended with " in text
                if f"status {status}," in text and (
                    kind.startswith("dynamic") or directive_of_path
                ):
                    lines.append(text)
    return lines


@pytest.mark.parametrize("case", CASES, ids=[case.server for case in CASES])
def test_real_server_serves_the_recipe_and_its_cleanups_run_after_each_response(
    case: Case, tmp_path: Path
) -> None:
    with serving(case, tmp_path) as server:
        status, body = get(server.port, "/")
        error_status, _ = get(server.port, "/error")

        assert (status, error_status) == (200, 500)
        assert body.startswith(b"hello") or body == b'{"hello":"fastapi"}'

        def both_done(log: str) -> bool:
            return (
                len(cleanup_lines(log, 200, "/")) >= 2
                and len(cleanup_lines(log, 500, "/error")) >= 2
            )

        log = server.wait_for(both_done, timeout=5.0)
        server.proc.send_signal(signal.SIGINT)
        exit_code = server.proc.wait(timeout=STOP_TIMEOUT)

    ok, failed = cleanup_lines(log, 200, "/"), cleanup_lines(log, 500, "/error")
    assert [line.split(":")[0] for line in ok] == ["dynamic cleanup", "directive cleanup"], log
    assert "status 200, exception None" in ok[0]
    assert "status 200, exception None, response complete, client stayed" in ok[1]
    assert [line.split(":")[0] for line in failed] == ["dynamic cleanup", "directive cleanup"], log
    assert case.error_outcome in failed[0]
    assert f"{case.error_outcome}, response complete, client stayed" in failed[1]
    assert exit_code == 0, log
