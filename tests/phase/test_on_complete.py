import logging
import threading
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware, CleanupReport, Outcome
from asgi_cleanup._types import Receive, Scope, Send


async def quick() -> None:
    await anyio.sleep(0.01)


def failing() -> None:
    raise ValueError("broken")


async def hanging() -> None:
    await anyio.sleep(10)


def app_registering(*cleanups: Any) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for cleanup in cleanups:
            scope["cleanup"].register(cleanup)
        for message in respond(201):
            await send(message)

    return app


@pytest.mark.anyio
async def test_on_complete_gets_a_report_per_cleanup_in_run_order() -> None:
    calls: list[tuple[tuple[CleanupReport, ...], Outcome]] = []
    release = threading.Event()

    def blocking() -> None:
        release.wait(5)

    try:
        app = app_registering(blocking, hanging, failing, quick)
        middleware = CleanupMiddleware(
            app, timeout=0.1, on_complete=lambda reports, outcome: calls.append((reports, outcome))
        )
        await call(middleware)
    finally:
        release.set()
    [(reports, outcome)] = calls
    assert outcome.status == 201
    assert [report.cleanup for report in reports] == [quick, failing, hanging, blocking]
    ok, failed, hung, blocked = reports
    assert (ok.exception, ok.timed_out) == (None, False)
    assert ok.duration >= 0.009
    assert isinstance(failed.exception, ValueError)
    assert not failed.timed_out
    assert isinstance(hung.exception, TimeoutError)
    assert hung.timed_out
    assert 0.09 <= hung.duration < 2
    assert isinstance(blocked.exception, TimeoutError)
    assert blocked.timed_out


@pytest.mark.anyio
async def test_on_complete_may_be_async_and_its_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []

    async def on_complete(reports: tuple[CleanupReport, ...], outcome: Outcome) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(len(reports))
        raise RuntimeError("reporting broke")

    await call(CleanupMiddleware(app_registering(quick, quick), on_complete=on_complete))
    assert seen == [2]
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith("on_complete hook ")
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "reporting broke"


@pytest.mark.anyio
async def test_debug_record_says_what_ran_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="asgi_cleanup"):
        await call(
            CleanupMiddleware(app_registering(failing, quick)),
            http_scope("/orders", query_string=b"secret=1"),
        )
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert line.startswith("Cleanups for GET /orders: 2 ran in ")
    assert line.endswith(", 1 failed, 0 timed out")
    assert "secret" not in line


@pytest.mark.anyio
async def test_no_debug_record_and_no_timing_when_nobody_listens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="asgi_cleanup"):
        await call(CleanupMiddleware(app_registering(quick)))
    assert [r for r in caplog.records if r.name == "asgi_cleanup"] == []


def test_on_complete_from_settings_and_bad_values(tmp_path: Any) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text('on_complete = "directive_handlers:record_reports"\n')
    middleware = CleanupMiddleware(app_registering(), settings=path)
    assert middleware.on_complete is not None
    with pytest.raises(TypeError, match="on_complete"):
        CleanupMiddleware(app_registering(), on_complete=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_complete"):
        CleanupMiddleware(app_registering(), on_complete=lambda reports: None)


@pytest.mark.anyio
async def test_on_complete_assigned_later_is_checked_and_serves_the_next_requests() -> None:
    calls: list[int] = []
    middleware = CleanupMiddleware(app_registering(quick))
    with pytest.raises(TypeError, match="on_complete"):
        middleware.on_complete = lambda: None  # type: ignore[assignment]  # takes no arguments
    with pytest.raises(TypeError, match="on_complete"):
        middleware.on_complete = 3  # type: ignore[assignment]
    assert middleware.on_complete is None
    await call(middleware)

    def hook(reports: tuple[CleanupReport, ...], outcome: Outcome) -> None:
        calls.append(len(reports))

    middleware.on_complete = hook
    assert middleware.on_complete is hook
    await call(middleware)
    middleware.on_complete = None
    await call(middleware)
    assert calls == [1]
