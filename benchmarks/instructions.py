"""Instructions and estimated cycles per request under callgrind: ratios free of the noise.

Time on a shared machine moves with whatever else runs; what a request executes does not.
Each scenario's app serves ``small`` and then ``large`` requests in a process of its own under
``valgrind --tool=callgrind`` with its cache and branch simulators (address-space
randomisation off, a fixed hash seed, so a count repeats); the difference of the two totals,
divided by the difference of the requests, is the cost of one request without the start-up.

Two figures per request: the instructions executed, and callgrind's cycle estimate (the
formula KCachegrind calls CEst): instructions + 10 × level-1 cache misses + 100 × last-level
misses + 10 × mispredicted branches. Instructions alone miss what touching more code and data
costs; the estimate weighs it, and follows measured time more closely. The async scenarios
only: for a sync cleanup, what costs is the wait for a thread, which no count shows.

:mod:`benchmarks.served_counts` counts the same behind uvicorn. Run as
``python -m benchmarks.instructions SCENARIO COUNT BACKEND`` this module is the measured process.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NamedTuple

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
# Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim, as callgrind prints them at its end.
_COLLECTED = re.compile(r"Collected :((?: \d+){13})\s*$", re.MULTILINE)


class Counts(NamedTuple):
    """What callgrind counted: in a process, or per request (a difference of two)."""

    instructions: float
    l1_misses: float
    ll_misses: float
    mispredicts: float

    @property
    def cycles(self) -> float:
        """Callgrind's cycle estimate (KCachegrind's CEst)."""
        return (
            self.instructions + 10 * self.l1_misses + 100 * self.ll_misses + 10 * self.mispredicts
        )

    @classmethod
    def parse(cls, valgrind_output: str) -> Counts:
        found = _COLLECTED.search(valgrind_output)
        if found is None:
            raise RuntimeError(f"no counts from callgrind:\n{valgrind_output[-2000:]}")
        ir, _dr, _dw, i1, d1r, d1w, lli, lldr, lldw, _bc, bcm, _bi, bim = map(
            int, found.group(1).split()
        )
        return cls(ir, i1 + d1r + d1w, lli + lldr + lldw, bcm + bim)

    def per_request(self, larger: Counts, requests: int) -> Counts:
        """Per request, from this count and one of ``requests`` more requests."""
        return Counts(*((b - a) / requests for a, b in zip(self, larger, strict=True)))


def available() -> bool:
    return shutil.which("valgrind") is not None


def valgrind(command: Sequence[str]) -> list[str]:
    """``command`` under callgrind with its simulators, with address randomisation off."""
    wrapped = [
        "valgrind",
        "--tool=callgrind",
        "--cache-sim=yes",
        "--branch-sim=yes",
        "--callgrind-out-file=/dev/null",
        *command,
    ]
    setarch = shutil.which("setarch")
    return [setarch, platform.machine(), "-R", *wrapped] if setarch is not None else wrapped


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONHASHSEED": "0"}


def count(name: str, requests: int, backend: str) -> Counts:
    """What a process serving ``requests`` in-process (after a warm-up) executed."""
    result = subprocess.run(
        valgrind([sys.executable, "-m", "benchmarks.instructions", name, str(requests), backend]),
        capture_output=True,
        text=True,
        timeout=900,
        env=environment(),
        check=True,
    )
    return Counts.parse(result.stderr)


def per_request(name: str, small: int, large: int, backend: str) -> Counts:
    return count(name, small, backend).per_request(count(name, large, backend), large - small)


def in_parallel(jobs: list[Callable[[], Counts]]) -> list[Counts]:
    """Run the counting jobs, one per core: counts do not depend on what runs beside them."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(lambda job: job(), jobs))


def tables(counts: dict[str, Counts], targets: list[tuple[str, str, float]]) -> list[str]:
    """The per-request table, and the target ratios in instructions and estimated cycles."""
    bare = counts.get("bare")
    lines = [
        "| scenario | instructions/request | × bare | estimated cycles/request | × bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, value in counts.items():
        by_instructions = by_cycles = "–"  # (a run of chosen scenarios may leave bare out)
        if bare is not None:
            by_instructions = f"{value.instructions / bare.instructions:.3f}"
            by_cycles = f"{value.cycles / bare.cycles:.3f}"
        lines.append(
            f"| {name} | {value.instructions:,.0f} | {by_instructions}"
            f" | {value.cycles:,.0f} | {by_cycles} |"
        )
    targets = [(n, a, bar) for n, a, bar in targets if n in counts and a in counts]
    if targets:
        lines += [
            "",
            "| scenario | anchor | ratio, instructions | ratio, estimated cycles | bar | met |",
            "|---|---|---:|---:|---|---|",
        ]
    for name, anchor, bar in targets:
        by_instructions = counts[name].instructions / counts[anchor].instructions
        by_cycles = counts[name].cycles / counts[anchor].cycles
        met = "yes" if max(by_instructions, by_cycles) <= bar else "no"
        lines.append(
            f"| {name} | {anchor} | {by_instructions:.3f} | {by_cycles:.3f} | ≤ {bar:.2f} | {met} |"
        )
    return lines


def run(
    backend: str, small: int, large: int, emit: Callable[[str], None], names: list[str]
) -> None:
    """Print the counts per request of the scenarios ``names``, and the target ratios."""
    emit(f"\n# Instructions per request (callgrind), {backend}: {small} and {large} requests\n")
    if not available():
        emit("skipped: valgrind is not installed (Debian: apt-get install valgrind)")
        return
    jobs = [partial(count, name, n, backend) for name in names for n in (small, large)]
    totals = iter(in_parallel(jobs))
    counts = {name: next(totals).per_request(next(totals), large - small) for name in names}
    for line in tables(counts, TARGETS):
        emit(line)


def _serve(name: str, requests: int, backend: str) -> None:
    from .inprocess import SCOPE, receive, send

    app = scenarios()[name]

    async def main() -> None:
        for _ in range(WARMUP + requests):
            await app(dict(SCOPE), receive, send)

    anyio.run(main, backend=backend)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])
