"""A context manager's exit (``enter_context``) never waits for a worker thread behind other
requests' sync cleanups: with ``thread_limit`` of two or more, one thread is a lane that only
releases take when the others are busy (``asgi_cleanup._threads``)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import anyio
import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

PROMPT = 1.0  # generous for shared CI cores; without the lane the wait is until the gate opens


class Busy:
    """``/busy`` registers a sync cleanup that holds its thread until ``gate`` opens; ``/cm``
    enters ``resource()`` with ``enter_context`` (``/cm-register``: registers its exit with
    ``register`` instead), after registering ``after`` (``/cm-then-sync``), which so runs
    after the exit. ``threads`` records the thread each cleanup ran in."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.holding = 0
        self.released = threading.Event()
        self.threads: dict[str, str] = {}
        self.changed = threading.Condition()

    def hold(self) -> None:
        with self.changed:
            self.holding += 1
            self.changed.notify_all()
        self.gate.wait(5)

    def wait_holding(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.holding >= count, 5)

    def after(self) -> None:
        self.threads["after"] = threading.current_thread().name

    @contextmanager
    def resource(self) -> Iterator[str]:
        yield "connection"
        self.threads["exit"] = threading.current_thread().name
        self.released.set()

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        registry, path = scope["cleanup"], scope["path"]
        if path == "/busy":
            registry.register(self.hold)
        else:
            if path == "/cm-then-sync":
                registry.register(self.after)
            cm: AbstractContextManager[str] = self.resource()
            if path == "/cm-register":
                cm.__enter__()
                registry.register(cm.__exit__, None, None, None)
            else:
                registry.enter_context(cm)
        for message in respond():
            await send(message)

    async def every_thread_busy(self, middleware: CleanupMiddleware, tg: Any, busy: int) -> None:
        """Start ``busy + 2`` requests whose cleanups hold threads; return once ``busy`` of
        them hold one and the rest wait for a thread."""
        for _ in range(busy + 2):
            tg.start_soon(call, middleware, http_scope("/busy"))
        assert await anyio.to_thread.run_sync(self.wait_holding, busy)
        await anyio.sleep(0.05)  # a thread taken by a third would show now
        assert self.holding == busy


@pytest.mark.parametrize(
    ("path", "thread_limit", "prompt"),
    [
        pytest.param("/cm", 3, True, id="enter_context-takes-the-lane"),
        pytest.param("/cm-register", 3, False, id="exit-registered-as-any-cleanup-waits"),
        pytest.param("/cm", 1, False, id="thread_limit-1-has-no-lane"),
    ],
)
async def test_a_release_runs_at_once_while_other_requests_hold_every_other_thread(
    path: str, thread_limit: int, prompt: bool
) -> None:
    busy = Busy()
    middleware = CleanupMiddleware(busy.app, thread_limit=thread_limit, timeout=None)
    async with anyio.create_task_group() as tg:
        await busy.every_thread_busy(middleware, tg, busy=max(thread_limit - 1, 1))
        tg.start_soon(call, middleware, http_scope(path))
        began = time.monotonic()
        released = await anyio.to_thread.run_sync(busy.released.wait, PROMPT if prompt else 0.3)
        assert released is prompt, f"after {time.monotonic() - began:.3f}s"
        busy.gate.set()
    await middleware.drain()
    assert busy.released.is_set()


async def test_on_the_lane_a_release_leaves_its_requests_next_sync_cleanup_to_the_others() -> None:
    # In run order the exit comes first, then `after`: the exit takes the lane at once,
    # `after` waits for one of the other threads, and the order is kept.
    busy = Busy()
    middleware = CleanupMiddleware(busy.app, thread_limit=2, timeout=None)
    async with anyio.create_task_group() as tg:
        await busy.every_thread_busy(middleware, tg, busy=1)
        tg.start_soon(call, middleware, http_scope("/cm-then-sync"))
        assert await anyio.to_thread.run_sync(busy.released.wait, PROMPT)
        await anyio.sleep(0.05)
        assert "after" not in busy.threads
        busy.gate.set()
    await middleware.drain()
    assert busy.threads == {
        "exit": "asgi-cleanup release lane",
        "after": "asgi-cleanup worker",
    }


async def test_with_a_thread_free_a_release_and_its_requests_next_sync_cleanup_share_a_hop() -> (
    None
):
    busy = Busy()
    await call(CleanupMiddleware(busy.app, thread_limit=2), http_scope("/cm-then-sync"))
    assert busy.threads == {"exit": "asgi-cleanup worker", "after": "asgi-cleanup worker"}
