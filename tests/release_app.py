"""The app of the release-lane starvation test: requests to ``/db`` check out one of four
connections of a pool and hold it until their cleanup phase returns it; requests to ``/slow``
leave an unrelated sync cleanup that sleeps for ``SLOW_SECONDS``, as a report written to a
slow disk or an unbounded HTTP call would. Served by a real server as ``release_app:app``.

``RELEASE_VIA`` says how ``/db`` returns its connection: ``enter_context`` (the pool's
context manager, whose exit is a release) or ``register`` (the same exit registered as any
sync cleanup, as every release was before the lane). The pool works as drivers' pools do:
a checkout waits for a free connection, here at most ``CHECKOUT_TIMEOUT`` seconds.
``/stats`` answers, as JSON: how many releases ran, the longest and the median wait of a
release (from the app's last message to the exit), how many ran while a slow cleanup was
running, the longest checkout wait, how many checkouts failed and how many slow cleanups ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
from raw import serve_lifespan

from asgi_cleanup import CleanupMiddleware

POOL_SIZE = 4
SLOW_SECONDS = 1.0
CHECKOUT_TIMEOUT = 5.0


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waits: list[float] = []  # seconds from the app's last message to each release
        self.during_slow = self.slow_running = self.slow_ran = self.exhausted = 0
        self.max_checkout = 0.0

    def slow(self) -> None:
        with self.lock:
            self.slow_running += 1
        time.sleep(SLOW_SECONDS)
        with self.lock:
            self.slow_running -= 1
            self.slow_ran += 1

    def as_json(self) -> bytes:
        with self.lock:
            waits = sorted(self.waits) or [0.0]
            return json.dumps(
                {
                    "releases": len(self.waits),
                    "max_release_wait_ms": round(waits[-1] * 1000, 1),
                    "median_release_wait_ms": round(statistics.median(waits) * 1000, 1),
                    "releases_during_slow": self.during_slow,
                    "max_checkout_wait_ms": round(self.max_checkout * 1000, 1),
                    "exhausted": self.exhausted,
                    "slow_ran": self.slow_ran,
                }
            ).encode()


stats = Stats()


class FixedPool:
    """``POOL_SIZE`` connections; checked out on the event loop, returned from any thread."""

    def __init__(self) -> None:
        self._free = POOL_SIZE
        self._lock = threading.Lock()

    def _take(self) -> bool:
        with self._lock:
            if self._free:
                self._free -= 1
                return True
            return False

    async def checkout(self) -> None:
        began = time.monotonic()
        while not self._take():
            if time.monotonic() - began > CHECKOUT_TIMEOUT:
                with stats.lock:
                    stats.exhausted += 1
                raise RuntimeError("pool exhausted")
            await anyio.sleep(0.002)
        with stats.lock:
            stats.max_checkout = max(stats.max_checkout, time.monotonic() - began)

    @contextlib.contextmanager
    def connection(self, answered: list[float]) -> Iterator[None]:
        """Held from the checkout before, to this exit; ``answered``: when the app ended."""
        yield
        with stats.lock:
            stats.waits.append(time.monotonic() - answered[0])
            stats.during_slow += stats.slow_running > 0
        with self._lock:
            self._free += 1


pool = FixedPool()
_VIA = os.environ.get("RELEASE_VIA", "enter_context")


async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send, [])
        return
    body, answered = b"ok", [0.0]
    registry = scope["cleanup"]
    if scope["path"] == "/slow":
        registry.register(stats.slow)
    elif scope["path"] == "/db":
        await pool.checkout()
        connection = pool.connection(answered)
        if _VIA == "enter_context":
            registry.enter_context(connection)
        else:
            connection.__enter__()
            registry.register(connection.__exit__, None, None, None)
    elif scope["path"] == "/stats":
        body = stats.as_json()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    answered[0] = time.monotonic()
    await send({"type": "http.response.body", "body": body})


app = CleanupMiddleware(inner, timeout=30)
