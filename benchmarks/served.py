"""Served benchmark: requests per second of the same hello world behind real servers.

For each server, the four apps of :mod:`benchmarks.served_apps` (bare, behind the minimal
send-watching middleware, one async cleanup per request, a ``BackgroundTask`` doing the same
work) are each served by a server subprocess on
127.0.0.1 and a free port: uvicorn with ``--http httptools`` (h11 if httptools is missing, said
in the report), the asyncio loop, one worker, no access log; hypercorn on asyncio, one worker,
no access log; both at log level warning. A server is ready once ``GET /`` answers 200.

The four servers of a kind run side by side for all the rounds (``--served-restart`` starts
and stops them every round instead); each is warmed up, then every round loads each app once,
in a rotating order, for the same number of seconds with the same load generator. The ratios
are taken round by round; the report gives their median and spread. It also counts the CPU time
the server's processes spent during each run (``/proc``), and gives the same ratios of requests
per server CPU-second: on a machine shared with other work, these move less than requests per
second do, as they do not count the time the server waited for a core.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

from .loadgen import HOST, LoadResult, LoadTool
from .ratios import Ratio
from .served_apps import APPS, FLOOR, MODULE

SERVERS = ("uvicorn", "hypercorn")
#: (scenario, anchor, bar): the scenario's requests per second are at least `bar` × the anchor's
#: (SPEC 5: on Python 3.12+, with eager task start; on 3.11 a floor beside the bare app).
TARGETS: list[tuple[str, str, float]] = (
    [("1 async cleanup", "bare", 0.95), ("1 async cleanup", "BackgroundTask, 1 async", 0.97)]
    if sys.version_info >= (3, 12)
    else [("1 async cleanup", "bare", 0.85)]
)
#: The same bars for the floor (benchmarks.scenarios.FloorMiddleware): whether any code could.
FLOORS = [(FLOOR, anchor, bar) for _, anchor, bar in TARGETS]
REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class ServedSettings:
    """How long and how often each app is loaded."""

    rounds: int
    seconds: int
    warmup: int
    #: Start and stop the servers every round instead of keeping them for all the rounds.
    restart: bool = False


class Running(NamedTuple):
    """A server that answers: its port, and its process group (the server and its workers)."""

    port: int
    group: int


@dataclass(frozen=True)
class Sample:
    """One app's load run in one round."""

    load: LoadResult
    seconds: int
    #: CPU seconds (user and system) that the server's processes spent during the run.
    server_cpu: float

    @property
    def per_cpu_second(self) -> float:
        """Requests served per CPU-second of the server's processes (NaN without ``/proc``)."""
        requests = self.load.requests_per_second * self.seconds
        return requests / self.server_cpu if self.server_cpu > 0 else math.nan


def uvicorn_http() -> str:
    """uvicorn's HTTP implementation: httptools if it is installed (``make bench``), else h11."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


def server_description(server: str) -> str:
    """The server, its version and how it is run, for the report."""
    if server == "uvicorn":
        http = uvicorn_http()
        missing = "" if http == "httptools" else "; no httptools: `make bench` installs it"
        return (
            f"uvicorn {version('uvicorn')}, --http {http} ({http} {version(http)}{missing}), "
            "asyncio loop, 1 worker, no access log"
        )
    return f"hypercorn {version('hypercorn')}, asyncio worker, 1 worker, no access log"


def server_command(server: str, attr: str, port: int) -> list[str]:
    """The command that serves ``benchmarks.served_apps:attr`` with ``server`` on ``port``."""
    app = f"{MODULE}:{attr}"
    if server == "uvicorn":
        return [
            *(sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)),
            *("--http", uvicorn_http(), "--loop", "asyncio", "--workers", "1"),
            *("--no-access-log", "--log-level", "warning"),
        ]
    if server == "hypercorn":
        # hypercorn logs no access unless --access-logfile is given.
        return [
            *(sys.executable, "-m", "hypercorn", app, "--bind", f"{HOST}:{port}"),
            *("--worker-class", "asyncio", "--workers", "1", "--log-level", "warning"),
        ]
    raise ValueError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def answers(port: int) -> bool:
    """True if ``GET /`` on ``port`` answers 200 within a second."""
    conn = http.client.HTTPConnection(HOST, port, timeout=1.0)
    try:
        conn.request("GET", "/")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    """Poll ``port`` until the server answers, it exits, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if answers(port):
            return True
        time.sleep(0.05)
    return False


def group_cpu_seconds(group: int) -> float:
    """CPU time (user and system) used so far by the living processes of process group ``group``.

    From ``/proc/PID/stat`` (Linux); 0.0 where there is no ``/proc``.
    """
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ... utime stime ...": comm may hold spaces.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == group:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load(tool: LoadTool, server: Running, seconds: int) -> Sample:
    """Load ``server`` for ``seconds`` seconds, counting the CPU time the server spends."""
    cpu_before = group_cpu_seconds(server.group)
    result = tool.run(server.port, seconds)
    return Sample(result, seconds, group_cpu_seconds(server.group) - cpu_before)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then after :data:`STOP_TIMEOUT` kill the server's process group (its workers)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def serving(server: str, attr: str, log_dir: Path) -> Iterator[Running]:
    """Serve ``served_apps.attr`` with ``server`` until the block ends."""
    log_path = log_dir / f"{server}-{attr}.log"
    for _attempt in range(3):  # the free port may be taken before the server binds it
        port = free_port()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                server_command(server, attr, port),
                cwd=REPO_ROOT,
                env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, for the kill in stop()
            )
        try:
            if wait_ready(proc, port, READY_TIMEOUT):
                yield Running(port, proc.pid)  # the group's leader (start_new_session)
                return
        finally:
            stop(proc)
        log_text = log_path.read_text(errors="replace")
        if "address already in use" not in log_text.lower():
            break
    raise RuntimeError(f"{server} serving {attr} was not ready; its log:\n{log_text[-4000:]}")


def rotated(names: list[str], index: int) -> list[str]:
    """``names`` starting at position ``index`` (modulo), so each app leads in turn."""
    shift = index % len(names)
    return names[shift:] + names[:shift]


def measure(
    server: str, tool: LoadTool, settings: ServedSettings, log_dir: Path
) -> dict[str, list[Sample]]:
    """Scenario name -> one sample per round, rounds interleaved and rotated."""
    names = list(APPS)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    if settings.restart:
        for index in range(settings.rounds):
            for name in rotated(names, index):
                with serving(server, APPS[name], log_dir) as running:
                    tool.run(running.port, settings.warmup)
                    samples[name].append(load(tool, running, settings.seconds))
        return samples
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(serving(server, APPS[name], log_dir)) for name in names
        }
        for name in names:
            tool.run(servers[name].port, settings.warmup)
        for index in range(settings.rounds):
            for name in rotated(names, index):
                samples[name].append(load(tool, servers[name], settings.seconds))
    return samples


def throughput_table(samples: dict[str, list[Sample]]) -> list[str]:
    """Requests per second of each app (median and spread over the rounds), per server
    CPU-second (median), and errors."""
    rounds = len(next(iter(samples.values())))
    lines = [
        f"| app | requests/s (median of {rounds} rounds) | spread "
        "| requests per server CPU-second (median) | errors |",
        "|---|---:|---|---:|---:|",
    ]
    for name, runs in samples.items():
        rates = [run.load.requests_per_second for run in runs]
        per_cpu = statistics.median(run.per_cpu_second for run in runs)
        errors = sum(run.load.errors for run in runs)
        lines.append(
            f"| {name} | {statistics.median(rates):.0f} | {min(rates):.0f}–{max(rates):.0f} "
            f"| {per_cpu:.0f} | {errors} |"
        )
    return lines


def ratios(
    samples: dict[str, list[Sample]], per_cpu: bool = False, targets: list[Any] = TARGETS
) -> list[Ratio]:
    """The served targets (or ``targets``), as ratios of requests per second (or per server
    CPU-second)."""
    values = {
        name: [run.per_cpu_second if per_cpu else run.load.requests_per_second for run in runs]
        for name, runs in samples.items()
    }
    return [Ratio.of(values, name, anchor, bar, at_least=True) for name, anchor, bar in targets]


def ratio_table(measured: list[Ratio], per_cpu: list[Ratio]) -> list[str]:
    """The targets: median ratio of requests per second, spread, bar, whether it is met; and
    the same ratio of requests per server CPU-second, which other load on the machine spares."""
    rounds = len(measured[0].per_round)
    lines = [
        "| scenario | anchor | × anchor, requests/s (median of rounds) "
        f"| spread over {rounds} rounds | bar | met "
        "| × anchor, requests per server CPU-second (median, spread) |",
        "|---|---|---:|---|---:|---|---|",
    ]
    for r, c in zip(measured, per_cpu, strict=True):
        lines.append(
            f"| {r.scenario} | {r.anchor} | {r.median:.3f} | {r.low:.3f}–{r.high:.3f} "
            f"| {r.bar_text} | {'yes' if r.met else 'no'} "
            f"| {c.median:.3f} ({c.low:.3f}–{c.high:.3f}) |"
        )
    return lines


def run(
    servers: list[str], tool: LoadTool, settings: ServedSettings, out: Callable[[str], object]
) -> dict[str, list[Ratio]]:
    """Measure and print every server's tables; server -> its target ratios (for the chart)."""
    measured: dict[str, list[Ratio]] = {}
    with tempfile.TemporaryDirectory(prefix="asgi-cleanup-bench-") as log_dir:
        for server in servers:
            samples = measure(server, tool, settings, Path(log_dir))
            measured[server] = ratios(samples)
            out(f"\n## {server}\n\n{server_description(server)}\n")
            out("\n".join(throughput_table(samples)))
            out("")
            out("\n".join(ratio_table(measured[server], ratios(samples, per_cpu=True))))
            floors = ratios(samples, targets=FLOORS), ratios(samples, True, FLOORS)
            out("\nThe floor: the contract's own mechanics without this package's code.\n")
            out("\n".join(ratio_table(*floors)))
    return measured
