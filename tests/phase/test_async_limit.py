"""``async_limit``: how many async cleanups run at once across a middleware's requests."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import pytest
from raw import app_registering, call, http_scope

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio


class Gauge:
    """Async cleanups that count how many of them run at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = self.most = self.ran = 0

    async def cleanup(self) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await anyio.sleep(self.seconds)
        finally:
            self.running -= 1
        self.ran += 1


async def test_async_limit_caps_async_cleanups_running_at_once_across_requests() -> None:
    gauge = Gauge(0.05)
    middleware = CleanupMiddleware(app_registering(gauge.cleanup, gauge.cleanup), async_limit=2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call, middleware)
    assert (gauge.ran, gauge.most) == (8, 2)


async def test_without_async_limit_every_request_runs_its_cleanups_at_once() -> None:
    gauge = Gauge(0.05)
    middleware = CleanupMiddleware(app_registering(gauge.cleanup))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call, middleware)
    assert (gauge.ran, gauge.most) == (4, 4)


async def test_a_cleanup_that_gets_no_place_within_its_timeout_is_reported_then_runs_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first request's cleanup shields itself past its timeout: left behind, it keeps its
    # place, so the second request's cleanup times out waiting, then runs once it is free.
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)
    ran: list[str] = []
    reports: list[Any] = []

    async def holds_its_place() -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.4)
        ran.append("held")

    async def waits() -> None:
        ran.append("waited")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        cleanup = holds_its_place if scope["path"] == "/first" else waits
        await app_registering(cleanup)(scope, receive, send)

    def on_complete(done: Any, outcome: Any) -> None:
        reports.extend(done)

    middleware = CleanupMiddleware(app, timeout=0.1, async_limit=1, on_complete=on_complete)
    began = time.monotonic()
    with anyio.fail_after(3):
        await call(middleware, http_scope("/first"))
        await call(middleware, http_scope("/second"))
        assert time.monotonic() - began < 0.35  # neither phase waited for the held place
        assert ran == []
        await middleware.drain()
    assert ran == ["held", "waited"]
    assert [(r.cleanup.__name__, r.timed_out) for r in reports] == [
        ("holds_its_place", True),
        ("waits", True),
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(
        "waits timed out after 0.1s waiting for a place among async_limit" in m for m in errors
    ), errors


async def test_places_go_to_cleanups_in_the_order_they_asked() -> None:
    order: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def cleanup() -> None:
            order.append(scope["path"])
            await anyio.sleep(0.02)

        await app_registering(cleanup)(scope, receive, send)

    middleware = CleanupMiddleware(app, async_limit=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for index in range(5):
                tg.start_soon(call, middleware, http_scope(f"/{index}"))
                await anyio.sleep(0.001)  # each asks after the one before
    assert order == [f"/{index}" for index in range(5)]


async def test_a_wait_longer_than_a_second_warns_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="asgi_cleanup")
    gauge = Gauge(1.1)
    middleware = CleanupMiddleware(app_registering(gauge.cleanup), async_limit=1)
    with anyio.fail_after(6):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(call, middleware)
    warnings = [r.getMessage() for r in caplog.records if "async_limit=1" in r.getMessage()]
    assert len(warnings) == 1, warnings  # two waited more than a second: one warning
    assert warnings[0].startswith("An async cleanup waited 1.")


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), ("2", TypeError), (True, TypeError), (1.5, TypeError)],
)
def test_async_limit_must_be_an_int_of_at_least_one_or_none(value: Any, error: type) -> None:
    with pytest.raises(error, match="async_limit must be"):
        CleanupMiddleware(app_registering(), async_limit=value)


def test_async_limit_comes_from_settings_where_false_means_no_cap(tmp_path: Any) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text("async_limit = 3\n")
    assert CleanupMiddleware(app_registering(), settings=str(path)).async_limit == 3
    path.write_text("async_limit = false\n")
    assert CleanupMiddleware(app_registering(), settings=str(path)).async_limit is None
    assert CleanupMiddleware(app_registering(), settings={"async_limit": 2}).async_limit == 2
