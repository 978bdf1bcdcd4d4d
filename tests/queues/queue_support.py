"""Real components of the queue tests: a Redis server, Celery and arq worker processes, and a
TCP proxy that delays what goes through it. Every wait has a deadline; every process is stopped
by its fixture, killed after a bound."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import redis
from servers import HOST, REPO_ROOT, TESTS_DIR, free_port, with_default_signals

QUEUE_TESTS = Path(__file__).resolve().parent
PYTHONPATH = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), str(QUEUE_TESTS)])
ARQ_FUNCTION = "arq_record"
CELERY_TASK = "queue_jobs.record"


@dataclass
class Process:
    """A subprocess with its output in a log file; :meth:`stop` sends SIGINT, then kills."""

    name: str
    cmd: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> Process:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            with_default_signals(self.cmd),
            cwd=QUEUE_TESTS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


class RedisServer:
    """Debian's ``redis-server`` on 127.0.0.1, on a port chosen now (and kept across restarts,
    so a test can take the broker down and bring it back), nothing saved to disk."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is missing: .ci/install-redis installs Debian's"
        cmd = [binary, "--bind", HOST, "--port", str(self.port), "--save", "", "--appendonly"]
        cmd += ["no", "--dir", str(self.workdir), "--protected-mode", "no"]
        self.process = Process("redis", cmd, self.workdir / "redis.log").start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if self.client().ping():
                    return self
            time.sleep(0.05)
        raise AssertionError(f"redis-server not ready in {timeout} s:\n{self.process.log_text()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(signal.SIGTERM)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.port, socket_timeout=5)

    def results(self, tag_prefix: str = "") -> list[dict[str, Any]]:
        """The jobs the workers ran, whose tag starts with ``tag_prefix``."""
        lines = [json.loads(line) for line in self.client().lrange("results", 0, -1)]
        return [line for line in lines if line["tag"].startswith(tag_prefix)]

    def wait_results(
        self, prefix: str, done: Callable[[list[dict[str, Any]]], bool], timeout: float
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.results(prefix)
            if done(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def worker_command(kind: str) -> list[str]:
    if kind == "celery":
        cmd = [sys.executable, "-m", "celery", "-A", "queue_jobs", "worker", "--pool", "solo"]
        return [*cmd, "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    return [sys.executable, "-m", "arq", "queue_jobs.WorkerSettings"]


def start_worker(kind: str, broker: RedisServer, log_path: Path, timeout: float = 30.0) -> Process:
    """A real worker of ``kind``, ready: a probe job it was sent has run."""
    worker = Process(f"{kind} worker", worker_command(kind), log_path)
    worker.env["ASGI_CLEANUP_REDIS_URL"] = broker.url
    worker.start()
    tag = f"probe-{kind}-{time.monotonic_ns()}"
    send_directly(kind, broker, tag)
    found = broker.wait_results(tag, bool, timeout)
    if not found:
        worker.stop()
        raise AssertionError(f"{kind} worker ran no probe job in {timeout} s:\n{worker.log_text()}")
    return worker


def send_directly(kind: str, broker: RedisServer, tag: str) -> None:
    """Enqueue one job without the middleware (the workers' readiness probe)."""
    if kind == "celery":
        from celery import Celery

        app = Celery("probe", broker=broker.url)
        app.send_task(CELERY_TASK, (tag,))
        app.close()
    else:
        import asyncio

        from arq.connections import RedisSettings, create_pool

        async def enqueue() -> None:
            pool = await create_pool(RedisSettings.from_dsn(broker.url))
            await pool.enqueue_job(ARQ_FUNCTION, tag)
            await pool.aclose()

        asyncio.run(enqueue())


class DelayProxy:
    """A TCP proxy on 127.0.0.1 to ``target_port`` that holds each chunk a client sends for
    ``delay`` seconds before passing it on: a broker that is slow to answer every call."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port, self.delay = target_port, delay
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def _accept(self) -> None:
        with self.listener:
            while True:
                try:
                    client, _ = self.listener.accept()
                except OSError:  # closed
                    return
                thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.create_connection((HOST, self.target_port)) as upstream:
            with self._lock:
                self._open.update((client, upstream))
            back = threading.Thread(target=self._pump, args=(upstream, client, 0.0), daemon=True)
            back.start()
            self._pump(client, upstream, self.delay)
            back.join(5)
            with self._lock:
                self._open.difference_update((client, upstream))

    def _pump(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if delay:
                    time.sleep(delay)
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def delay_proxy(target_port: int, delay: float) -> Iterator[DelayProxy]:
    proxy = DelayProxy(target_port, delay)
    try:
        yield proxy
    finally:
        proxy.close()
