import logging
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from raw import call, respond

from asgi_cleanup import CleanupMiddleware, Outcome
from asgi_cleanup._types import Receive, Scope, Send


def failing_sync() -> None:
    raise ValueError("sync failure")


async def failing_async() -> None:
    raise KeyError("async failure")


async def hanging() -> None:
    await anyio.sleep(10)


def app_registering(*cleanups: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for cleanup in cleanups:
            scope["cleanup"].register(cleanup)
        for message in respond(202):
            await send(message)

    return app


@pytest.mark.anyio
async def test_on_error_is_called_with_cleanup_exception_and_outcome_for_each_failure() -> None:
    reports: list[tuple[Any, BaseException, Outcome, int]] = []

    def on_error(cleanup: Any, exc: BaseException, outcome: Outcome) -> None:
        reports.append((cleanup, exc, outcome, threading.get_ident()))

    app = app_registering(failing_sync, failing_async)
    await call(CleanupMiddleware(app, on_error=on_error))
    assert [(r[0], type(r[1])) for r in reports] == [
        (failing_async, KeyError),
        (failing_sync, ValueError),
    ]
    assert all(r[2].status == 202 for r in reports)
    # Also for the sync cleanup's failure, the hook runs on the event loop's thread.
    assert {r[3] for r in reports} == {threading.get_ident()}


@pytest.mark.anyio
async def test_on_error_reports_a_timeout_as_timeout_error() -> None:
    reports: list[tuple[Any, BaseException]] = []

    async def on_error(cleanup: Any, exc: BaseException, outcome: Outcome) -> None:
        await anyio.lowlevel.checkpoint()
        reports.append((cleanup, exc))

    release = threading.Event()

    def blocking() -> None:
        release.wait(5)

    try:
        app = app_registering(blocking, hanging)
        await call(CleanupMiddleware(app, timeout=0.05, on_error=on_error))
    finally:
        release.set()
    assert [r[0] for r in reports] == [hanging, blocking]
    assert all(isinstance(r[1], TimeoutError) for r in reports)


@pytest.mark.anyio
async def test_on_error_that_raises_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def broken_hook(cleanup: Any, exc: BaseException, outcome: Outcome) -> None:
        raise RuntimeError("hook broke")

    app = app_registering(lambda: ran.append("next"), failing_sync)
    recorder = await call(CleanupMiddleware(app, on_error=broken_hook))
    assert ran == ["next"]
    assert recorder.types == ["http.response.start", "http.response.body"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("failing_sync" in m for m in messages)
    assert any("on_error hook" in m and "broken_hook" in m for m in messages)


@pytest.mark.anyio
async def test_on_error_is_not_called_when_every_cleanup_succeeds() -> None:
    reports: list[Any] = []
    app = app_registering(lambda: None)
    await call(CleanupMiddleware(app, on_error=lambda *args: reports.append(args)))
    assert reports == []


@pytest.mark.anyio
async def test_failure_of_an_abandoned_sync_cleanup_is_still_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def slow_then_failing() -> None:
        time.sleep(0.3)
        raise ValueError("late failure")

    await call(CleanupMiddleware(app_registering(slow_then_failing), timeout=0.05))
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any("after it was abandoned" in r.getMessage() for r in caplog.records):
            break
        await anyio.sleep(0.05)
    messages = [r.getMessage() for r in caplog.records]
    assert any("timed out" in m for m in messages)
    assert any("slow_then_failing failed after it was abandoned" in m for m in messages)


def test_non_callable_on_error_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="on_error"):
        CleanupMiddleware(app_registering(), on_error=42)  # type: ignore[arg-type]


def test_malformed_on_error_reference_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="on_error 'not callable'"):
        CleanupMiddleware(app_registering(), on_error="not callable")


def test_on_error_hook_that_takes_too_few_arguments_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="on_error"):
        CleanupMiddleware(app_registering(), on_error=lambda cleanup: None)
