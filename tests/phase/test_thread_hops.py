"""One thread hop per run of consecutive sync cleanups (SPEC 2.5, 5)."""

from __future__ import annotations

from typing import Any

import pytest
from raw import call, respond

from asgi_cleanup import CleanupMiddleware, Outcome
from asgi_cleanup._threads import WorkerPool
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


def counting_hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    hops: list[Any] = []
    submit = WorkerPool.submit

    def counting_submit(self: WorkerPool, job: Any, to_lane: Any = None) -> None:
        hops.append(job)
        submit(self, job, to_lane)

    monkeypatch.setattr(WorkerPool, "submit", counting_submit)
    return hops


async def test_last_sync_dynamic_cleanup_and_first_sync_directive_share_one_thread_hop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In run order the dynamic sync cleanup and the sync directive are consecutive sync
    # cleanups of one request: one hop, not one per list.
    hops = counting_hops(monkeypatch)
    ran: list[str] = []

    def dynamic() -> None:
        ran.append("dynamic")

    def directive(outcome: Outcome) -> None:
        ran.append("directive")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(dynamic)
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app, settings={"handlers": [directive]}))
    assert ran == ["dynamic", "directive"]
    assert len(hops) == 1


async def test_sync_runs_split_by_an_async_cleanup_take_one_hop_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hops = counting_hops(monkeypatch)
    ran: list[str] = []

    def sync(name: str) -> None:
        ran.append(name)

    async def async_(name: str) -> None:
        ran.append(name)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        for name in ("s1", "s2"):
            registry.register(sync, name)
        registry.register(async_, "a")
        for name in ("s3", "s4", "s5"):
            registry.register(sync, name)
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert ran == ["s5", "s4", "s3", "a", "s2", "s1"]
    assert len(hops) == 2
