"""SPEC 3: a timeout is logged with a traceback, which shows where the cleanup was then."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

import anyio
import pytest
from raw import app_registering, call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio


def timeout_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "asgi_cleanup" and r.levelno == logging.ERROR and "timed out" in r.getMessage()
    ]


def formatted(record: logging.LogRecord) -> str:
    """The record's exception as logging prints it, after checking it is a TimeoutError."""
    assert record.exc_info is not None, record.getMessage()
    exc = record.exc_info[1]
    assert type(exc) is TimeoutError
    return "".join(traceback.format_exception(exc))


class ErrorsReported:
    """An ``on_error`` hook keeping each exception it is given."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []

    def __call__(self, cleanup: Any, exc: BaseException, outcome: Any) -> None:
        self.exceptions.append(exc)


async def waits_deep_inside() -> None:
    await anyio.sleep(10)


async def hanging_cleanup() -> None:
    await waits_deep_inside()


async def cleanup_swallowing_its_cancellation() -> None:
    try:
        await waits_deep_inside()
    except anyio.get_cancelled_exc_class():
        pass  # gives up quietly: only a capture before the cancellation sees where it was


async def cleanup_shielding_itself() -> None:
    with anyio.CancelScope(shield=True):
        await anyio.sleep(1.3)


def record_reports(reports: Any, outcome: Any) -> None:
    pass


# With on_complete the phase times every cleanup, so async cleanups skip the first-steps path.
@pytest.mark.parametrize("observed", [False, True], ids=["first-steps", "observed"])
@pytest.mark.parametrize("cleanup", [hanging_cleanup, cleanup_swallowing_its_cancellation])
async def test_async_cleanup_timeout_record_has_a_traceback_of_where_it_was(
    caplog: pytest.LogCaptureFixture, cleanup: Any, observed: bool
) -> None:
    reported = ErrorsReported()
    middleware = CleanupMiddleware(
        app_registering(cleanup),
        timeout=0.05,
        on_error=reported,
        on_complete=record_reports if observed else None,
    )
    with anyio.fail_after(3):
        await call(middleware, http_scope("/orders", query_string=b"secret=query-4711"))

    [record] = timeout_records(caplog)
    text = formatted(record)
    assert f"in {cleanup.__name__}" in text
    assert "in waits_deep_inside" in text
    assert "query-4711" not in text
    assert "query-4711" not in record.getMessage()
    assert reported.exceptions == [record.exc_info[1]]


async def test_async_cleanup_left_behind_has_a_traceback_of_where_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported = ErrorsReported()
    app = app_registering(hanging_cleanup, cleanup_shielding_itself)
    with anyio.fail_after(5):
        await call(CleanupMiddleware(app, timeout=0.05, on_error=reported))

    first, second = timeout_records(caplog)
    assert "in cleanup_shielding_itself" in formatted(first)
    # On trio the rest of the phase goes on in another task after the left-behind one.
    assert "in hanging_cleanup" in formatted(second)
    assert reported.exceptions == [first.exc_info[1], second.exc_info[1]]


async def test_directive_cleanup_timeout_record_has_a_traceback_of_where_it_was(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = {"handlers": ["directive_handlers:stuck_directive"], "timeout": 0.05}
    with anyio.fail_after(3):
        await call(CleanupMiddleware(app_registering(), settings=settings))

    [record] = timeout_records(caplog)
    assert "in stuck_directive" in formatted(record)


async def test_sync_cleanup_timeout_record_has_the_traceback_of_its_thread(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    reported = ErrorsReported()

    def blocking_cleanup() -> None:
        release.wait(5)

    try:
        middleware = CleanupMiddleware(
            app_registering(blocking_cleanup), timeout=0.05, on_error=reported
        )
        with anyio.fail_after(3):
            await call(middleware)
        [record] = timeout_records(caplog)
        text = formatted(record)
        assert "in blocking_cleanup" in text
        assert "release.wait(5)" in text
        assert reported.exceptions == [record.exc_info[1]]
    finally:
        release.set()


async def test_sync_cleanup_that_never_got_a_thread_is_logged_with_a_bare_timeout_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    def blocking() -> None:
        release.wait(5)

    def waiting() -> None:
        pass

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(blocking if scope["path"] == "/blocking" else waiting)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app, thread_limit=1, timeout=0.05)
    try:
        await call(middleware, http_scope("/blocking"))
        caplog.clear()
        await call(middleware, http_scope("/waiting"))
        [record] = timeout_records(caplog)
        assert record.exc_info is not None
        assert type(record.exc_info[1]) is TimeoutError
        assert record.exc_info[1].__traceback__ is None
    finally:
        release.set()


async def test_sync_cleanup_returning_an_awaitable_that_times_out_has_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_registering(lambda: hanging_cleanup())
    with anyio.fail_after(3):
        await call(CleanupMiddleware(app, timeout=0.05))

    [record] = timeout_records(caplog)
    assert "in hanging_cleanup" in formatted(record)


class Marker:
    """A cleanup's local, to see whether anything keeps the cleanup's frames alive."""


async def test_a_timed_out_cleanup_is_freed_once_its_phase_is_over() -> None:
    import gc
    import weakref

    markers: list[weakref.ref[Marker]] = []

    async def cleanup_holding_a_local() -> None:
        marker = Marker()
        markers.append(weakref.ref(marker))
        await anyio.sleep(10)

    middleware = CleanupMiddleware(app_registering(cleanup_holding_a_local), timeout=0.05)
    # Not recorded: pytest keeps every log record, and the record's traceback its frames.
    logging.disable(logging.CRITICAL)
    try:
        await call(middleware)
        await middleware.drain()
    finally:
        logging.disable(logging.NOTSET)
    await anyio.sleep(0.1)  # the tasks the phase woke run (trio: its watcher ends)
    gc.collect()
    [marker] = markers
    assert marker() is None, gc.get_referrers(marker())


async def test_a_timeout_cancels_a_cleanup_whose_awaits_cannot_be_followed() -> None:
    class OddAwaitable:
        """Its own iterator, claiming a generator's attributes with values that are not."""

        gi_frame = "not a frame"
        gi_yieldfrom = None

        def __await__(self) -> Any:
            return self

        def __next__(self) -> None:
            return None  # a bare yield: the event loop polls again

        def send(self, value: Any) -> None:
            return None

        def throw(self, *exc_info: Any) -> None:
            raise exc_info[0] if len(exc_info) == 1 else exc_info[1]

    ended: list[str] = []

    async def cleanup() -> None:
        try:
            await OddAwaitable()
        finally:
            ended.append("cancelled")

    with anyio.fail_after(5):
        await call(CleanupMiddleware(app_registering(cleanup), timeout=0.05))
    assert ended == ["cancelled"]
