"""Memory benchmark: does anything grow with the number of requests?

Each app of :data:`SCENARIOS` (in-process, as in benchmarks/inprocess.py) serves consecutive
blocks of requests under ``tracemalloc``; after each block (and a ``drain()`` of the
middleware's pending phases) the report takes this process's resident memory (``VmRSS`` from
``/proc/self/status``), and the memory that ``tracemalloc`` sees allocated now and at its peak
during the block; the memory allocated now is read after a ``gc.collect()``, so that garbage
the collector has not reached yet does not count (the peak includes it), and without what this
module allocates to keep its readings. Block 1 includes what is made once (caches, worker
threads); the growth from block 1 to the last is what a leak would show.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import ASGIApp

from .inprocess import time_requests
from .scenarios import scenarios

SCENARIOS = ("nothing registered", "1 async cleanup", "1 sync cleanup", "10 async cleanups")


@dataclass(frozen=True)
class Block:
    """What one block of requests left behind."""

    rss_kib: int | None
    traced_current: int
    traced_peak: int


def rss_kib() -> int | None:
    """This process's resident memory in KiB (``VmRSS``), None where there is no ``/proc``."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def traced_now() -> int:
    """Bytes that tracemalloc sees allocated now, but for this module's own (its readings)."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, __file__)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def measure_app(app: ASGIApp, blocks: int, requests: int) -> list[Block]:
    """Serve ``blocks`` blocks of ``requests`` requests with ``app`` under tracemalloc."""
    measured = []
    tracemalloc.start()
    try:
        for _ in range(blocks):
            tracemalloc.reset_peak()
            await time_requests(app, requests)
            if isinstance(app, CleanupMiddleware):
                with anyio.fail_after(30):
                    await app.drain()
            peak = tracemalloc.get_traced_memory()[1]
            gc.collect()  # garbage waiting for the collector is not kept, so not counted
            measured.append(Block(rss_kib(), traced_now(), peak))
    finally:
        tracemalloc.stop()
    return measured


def measure(backend: str, blocks: int, requests: int) -> dict[str, list[Block]]:
    """Scenario name -> its blocks, on ``backend`` ("asyncio" or "trio")."""

    async def main() -> dict[str, list[Block]]:
        apps = scenarios()
        return {name: await measure_app(apps[name], blocks, requests) for name in SCENARIOS}

    result: dict[str, list[Block]] = anyio.run(main, backend=backend)
    return result


def mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def kib(size: int) -> str:
    return f"{size / 1024:.0f}"


def growth(first: int | None, last: int | None, unit: Callable[[int], float]) -> str:
    """``last - first`` in the unit, signed; "n/a" if either is unknown."""
    if first is None or last is None:
        return "n/a"
    return f"{unit(last - first):+.1f}"


def table(measured: dict[str, list[Block]]) -> list[str]:
    """Per scenario: RSS and traced memory after each block, growth from block 1, peak."""
    count = len(next(iter(measured.values())))
    lines = [
        "| scenario | RSS after each block (MiB) | RSS growth, block 1 → "
        f"{count} (MiB) | traced after each block (KiB) | traced growth (KiB) "
        "| traced peak, largest block (KiB) |",
        "|---|---|---:|---|---:|---:|",
    ]
    for name, blocks in measured.items():
        first, last = blocks[0], blocks[-1]
        lines.append(
            f"| {name} | {' → '.join(mib(b.rss_kib) for b in blocks)} "
            f"| {growth(first.rss_kib, last.rss_kib, lambda k: k / 1024)} "
            f"| {' → '.join(kib(b.traced_current) for b in blocks)} "
            f"| {growth(first.traced_current, last.traced_current, lambda b: b / 1024)} "
            f"| {kib(max(b.traced_peak for b in blocks))} |"
        )
    return lines


def run(backends: list[str], blocks: int, requests: int, out: Callable[[str], object]) -> None:
    """Measure and print the memory table of each backend."""
    for backend in backends:
        out(f"\n## memory, {backend}\n")
        out("\n".join(table(measure(backend, blocks, requests))))
