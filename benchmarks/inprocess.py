"""In-process benchmark: each scenario's app called directly with a fixed scope.

Rounds are interleaved (every scenario once per round, in a rotating order) so that a noisy
machine slows all of them alike; the report gives the median of the rounds and the spread
of the per-round ratios.
"""

import statistics
import time
from collections.abc import Callable
from typing import Any

import anyio

from asgi_cleanup._types import ASGIApp, Message

from .scenarios import scenarios

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/",
    "raw_path": b"/",
    "root_path": "",
    "query_string": b"",
    "headers": [(b"host", b"localhost"), (b"user-agent", b"bench")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def receive() -> Message:
    return REQUEST


async def send(message: Message) -> None:
    pass


async def time_requests(app: ASGIApp, count: int) -> float:
    """Seconds per request over ``count`` sequential requests."""
    scope = SCOPE
    started = time.perf_counter()
    for _ in range(count):
        await app(dict(scope), receive, send)
    return (time.perf_counter() - started) / count


def requests_per_round(name: str, base: int) -> int:
    # A thread hop costs ~15 requests' worth: fewer of them keep rounds equally long.
    return max(base // 10, 10) if "sync" in name else base


async def measure(
    rounds: int, requests: int, only: Callable[[str], bool] = lambda name: True
) -> dict[str, list[float]]:
    apps = {name: app for name, app in scenarios().items() if only(name)}
    for name, app in apps.items():  # warm-up: imports, caches, worker threads
        await time_requests(app, requests_per_round(name, requests) // 4 + 1)
    samples: dict[str, list[float]] = {name: [] for name in apps}
    names = list(apps)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(
                await time_requests(apps[name], requests_per_round(name, requests))
            )
    return samples


def run(backend: str, rounds: int, requests: int) -> dict[str, list[float]]:
    async def main() -> dict[str, list[float]]:
        return await measure(rounds, requests)

    return anyio.run(main, backend=backend)


def median(values: list[float]) -> float:
    return statistics.median(values)
