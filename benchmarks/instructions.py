"""Instructions per request under callgrind: the in-process ratios, free of the machine's noise.

Time on a shared machine moves with whatever else runs; the instructions a request executes
do not. Each scenario's app serves ``small`` and then ``large`` requests in a process of its
own under ``valgrind --tool=callgrind`` (address-space randomisation off, a fixed hash seed,
so a count repeats to the instruction); the difference of the two totals, divided by the
difference of the requests, is the cost of one request without the start-up. The async
scenarios only: for a sync cleanup, what costs is the wait for a thread, which no
instruction count shows.

Run as ``python -m benchmarks.instructions SCENARIO COUNT`` it is the measured process.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

import anyio

from .scenarios import TARGETS, scenarios

#: The scenarios counted: the async targets and their anchors.
SCENARIOS = [
    "bare",
    "send-watching middleware",
    "nothing registered",
    "directive lookup, no match (20 locations, 5 hosts)",
    "BackgroundTask, 1 async",
    "1 async cleanup",
    "BackgroundTasks, 10 async",
    "10 async cleanups",
]
#: A --quick run's: enough to see that the part works.
QUICK_SCENARIOS = ["bare", "nothing registered"]
WARMUP = 200
_COLLECTED = re.compile(r"Collected : (\d+)")


def available() -> bool:
    return shutil.which("valgrind") is not None


def count(name: str, requests: int, backend: str) -> int:
    """Instructions executed by a process serving ``requests`` (after a warm-up)."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        name,
        str(requests),
        backend,
    ]
    setarch = shutil.which("setarch")
    if setarch is not None:
        command = [setarch, platform.machine(), "-R", *command]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=True,
    )
    found = _COLLECTED.search(result.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count from callgrind:\n{result.stderr[-2000:]}")
    return int(found.group(1))


def per_request(name: str, small: int, large: int, backend: str) -> float:
    return (count(name, large, backend) - count(name, small, backend)) / (large - small)


def run(
    backend: str, small: int, large: int, emit: Callable[[str], None], names: list[str]
) -> None:
    """Print instructions per request of the scenarios ``names``, and the target ratios."""
    emit(f"\n# Instructions per request (callgrind), {backend}: {small} and {large} requests\n")
    if not available():
        emit("skipped: valgrind is not installed (Debian: apt-get install valgrind)")
        return
    counts = {name: per_request(name, small, large, backend) for name in names}
    emit("| scenario | instructions/request | × bare |")
    emit("|---|---:|---:|")
    for name, value in counts.items():
        emit(f"| {name} | {value:,.0f} | {value / counts['bare']:.3f} |")
    targets = [(n, a, bar) for n, a, bar in TARGETS if n in counts and a in counts]
    if not targets:
        return
    emit("\n| scenario | anchor | ratio | bar | met |")
    emit("|---|---|---:|---:|---|")
    for name, anchor, bar in targets:
        ratio = counts[name] / counts[anchor]
        met = "yes" if ratio <= bar else "no"
        emit(f"| {name} | {anchor} | {ratio:.3f} | ≤ {bar:.2f} | {met} |")


def _serve(name: str, requests: int, backend: str) -> None:
    from .inprocess import SCOPE, receive, send

    app = scenarios()[name]

    async def main() -> None:
        for _ in range(WARMUP + requests):
            await app(dict(SCOPE), receive, send)

    anyio.run(main, backend=backend)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
