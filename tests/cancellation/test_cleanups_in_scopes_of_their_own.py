"""An async cleanup that suspends, outside or inside cancel scopes of its own, is shielded from
every cancellation of the request, and its timeout still applies (SPEC 2.6)."""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import anyio
import pytest
from raw import app_registering, call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asgi_cleanup" and r.levelno >= logging.ERROR]


def appending(log: list[str], name: str) -> Callable[[], Awaitable[None]]:
    """A cleanup that suspends, then appends ``name`` to ``log``."""

    async def cleanup() -> None:
        await anyio.sleep(0.01)
        log.append(name)

    return cleanup


async def cancel_once_started(
    middleware: CleanupMiddleware, started: anyio.Event, log: list[str]
) -> anyio.CancelScope:
    """Call ``middleware`` in a task whose scope is cancelled once ``started`` is set; the
    returned scope's ``cancelled_caught`` tells that the cancellation came, and "not
    cancelled" in ``log`` that it came too late."""

    async def request() -> None:
        await call(middleware)
        await anyio.sleep(1)  # a cancellation held back until the phase ended comes here
        log.append("not cancelled")

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await started.wait()
            tg.cancel_scope.cancel()
    return tg.cancel_scope


def own_scope(kind: str, seconds: float) -> AbstractContextManager[Any]:
    """A cancel scope a cleanup opens around its own wait."""
    if kind == "trio.move_on_after":
        import trio

        return trio.move_on_after(seconds)
    if kind == "anyio.fail_after":
        return anyio.fail_after(seconds)
    if kind == "anyio.move_on_after":
        return anyio.move_on_after(seconds)
    return anyio.CancelScope()


OWN_SCOPES = ["trio.move_on_after", "anyio.fail_after", "anyio.move_on_after", "anyio.CancelScope"]


@pytest.fixture(params=OWN_SCOPES)
def scope_kind(request: pytest.FixtureRequest, anyio_backend: str) -> str:
    kind: str = request.param
    if kind.startswith("trio.") and anyio_backend != "trio":
        pytest.skip("a trio scope needs trio")
    return kind


async def test_cleanup_suspending_outside_any_scope_of_its_own_survives_an_outer_cancel(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The cleanup cancels the request's scope in its first step, then waits with no cancel
    # scope of its own (an event): it and the next cleanup run to their end, then the
    # cancellation is delivered.
    log: list[str] = []
    resume = anyio.Event()
    request_scope = anyio.CancelScope()

    async def waits() -> None:
        log.append("waits start")
        request_scope.cancel()
        await resume.wait()
        log.append("waits end")

    async def resume_later() -> None:
        await anyio.sleep(0.1)
        resume.set()

    middleware = CleanupMiddleware(app_registering(appending(log, "after"), waits), timeout=2)
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(resume_later)
            with request_scope:
                await call(middleware)
                log.append("call returned")
                await anyio.sleep(1)
                log.append("not cancelled")
    # Delivered as the call ends (asyncio) or at the next checkpoint (trio).
    assert log[:3] == ["waits start", "waits end", "after"]
    assert "not cancelled" not in log
    assert request_scope.cancelled_caught
    assert error_records(caplog) == []


async def test_cleanup_suspending_inside_its_own_scope_survives_an_outer_cancel(
    scope_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first step opens a cancel scope of the cleanup's own and suspends inside it; the
    # request's scope is cancelled then. The phase's shield still keeps the cancellation out,
    # the cleanup's scopes close in order (trio reports a corrupted scope stack otherwise),
    # and the cancellation is delivered after the phase.
    log: list[str] = []
    started = anyio.Event()

    async def inside_own_scope() -> None:
        log.append("start")
        started.set()
        with own_scope(scope_kind, 5):
            await anyio.sleep(0.1)
            log.append("slept")
        await anyio.sleep(0.01)
        log.append("end")

    middleware = CleanupMiddleware(
        app_registering(appending(log, "after"), inside_own_scope), timeout=2
    )
    scope = await cancel_once_started(middleware, started, log)
    assert log == ["start", "slept", "end", "after"]
    assert scope.cancelled_caught
    assert error_records(caplog) == []


async def test_cleanup_suspending_inside_its_own_scope_under_an_already_cancelled_request(
    scope_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The request's scope is cancelled before the app returns: the first step opens its
    # scope under a cancelled one, and still nothing of that cancellation reaches it.
    log: list[str] = []
    request_scope = anyio.CancelScope()

    async def inside_own_scope() -> None:
        with own_scope(scope_kind, 5):
            await anyio.sleep(0.05)
            log.append("slept")
        log.append("end")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(inside_own_scope)
        for message in respond():
            await send(message)
        request_scope.cancel()  # no checkpoint after this in the app

    with anyio.fail_after(2):
        with request_scope:
            await call(CleanupMiddleware(app))
            log.append("call returned")
            await anyio.sleep(1)
            log.append("not cancelled")
    assert log[:2] == ["slept", "end"]
    assert "not cancelled" not in log
    assert request_scope.cancelled_caught
    assert error_records(caplog) == []


async def test_timeout_of_a_cleanup_suspended_inside_its_own_scope_is_logged_and_the_next_runs(
    scope_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The phase's timeout expires while the cleanup waits inside a longer scope of its own:
    # it is cancelled through that scope, logged at ERROR with the request, reported to
    # on_error, and the next cleanup runs.
    log: list[str] = []
    reported: list[tuple[str, type[BaseException]]] = []

    async def hangs() -> None:
        try:
            with own_scope(scope_kind, 10):
                await anyio.sleep(5)
        finally:
            log.append("hangs stopped")

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append((cleanup.__name__, type(exc)))

    middleware = CleanupMiddleware(
        app_registering(appending(log, "after"), hangs), timeout=0.1, on_error=on_error
    )
    with anyio.fail_after(2):
        await call(middleware, http_scope("/orders", method="POST"))
    assert log == ["hangs stopped", "after"]
    [record] = error_records(caplog)
    assert "hangs timed out after 0.1s" in record.getMessage()
    assert "POST /orders" in record.getMessage()
    assert reported == [("hangs", TimeoutError)]


async def test_timeout_expiring_under_an_outer_cancel_still_lets_the_next_cleanup_run(
    scope_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Both at once: the request is cancelled while the cleanup waits in its own scope, and
    # then its timeout expires; the next cleanup still runs, and only then the cancellation.
    log: list[str] = []
    started = anyio.Event()

    async def hangs() -> None:
        started.set()
        with own_scope(scope_kind, 10):
            await anyio.sleep(5)

    middleware = CleanupMiddleware(app_registering(appending(log, "after"), hangs), timeout=0.2)
    scope = await cancel_once_started(middleware, started, log)
    assert log == ["after"]
    assert scope.cancelled_caught
    [record] = error_records(caplog)
    assert "hangs timed out after 0.2s" in record.getMessage()


@pytest.mark.parametrize("outer_cancel", [False, True], ids=["", "outer cancel"])
@pytest.mark.parametrize("kind", ["move_on_after", "fail_after"])
async def test_cleanup_whose_own_scope_expires_first_goes_on_and_the_next_runs(
    kind: str, outer_cancel: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # The cleanup's own deadline is shorter than the phase's timeout: its scope takes its own
    # cancellation (fail_after turns it into its TimeoutError: a failure of the cleanup's,
    # not a timeout of the phase's), and the phase goes on; also when the request's scope is
    # cancelled meanwhile.
    log: list[str] = []
    reported: list[type[BaseException]] = []
    started = anyio.Event()

    async def short_scope() -> None:
        started.set()
        with (anyio.fail_after if kind == "fail_after" else anyio.move_on_after)(0.05):
            await anyio.sleep(5)
        log.append("after its scope")

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append(type(exc))

    middleware = CleanupMiddleware(
        app_registering(appending(log, "after"), short_scope), timeout=1, on_error=on_error
    )
    if outer_cancel:
        assert (await cancel_once_started(middleware, started, log)).cancelled_caught
    else:
        with anyio.fail_after(2):
            await call(middleware)
    if kind == "fail_after":
        assert log == ["after"]
        [record] = error_records(caplog)
        assert "short_scope failed for GET /" in record.getMessage()
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], TimeoutError)
        assert reported == [TimeoutError]
    else:
        assert log == ["after its scope", "after"]
        assert error_records(caplog) == []
        assert reported == []


async def test_timeout_of_a_cleanup_suspended_outside_any_scope_of_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    async def waits_forever() -> None:
        try:
            await anyio.Event().wait()
        finally:
            log.append("waits stopped")

    middleware = CleanupMiddleware(
        app_registering(appending(log, "after"), waits_forever), timeout=0.1
    )
    with anyio.fail_after(2):
        await call(middleware)
    assert log == ["waits stopped", "after"]
    [record] = error_records(caplog)
    assert "waits_forever timed out after 0.1s" in record.getMessage()


async def test_cleanup_failing_in_its_first_step_is_logged_with_the_request_and_the_next_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []
    reported: list[str] = []

    async def broken() -> None:
        raise ValueError("disk full")

    def on_error(cleanup: Any, exc: BaseException, outcome: Any) -> None:
        reported.append(f"{cleanup.__name__}: {exc} ({outcome.status})")

    middleware = CleanupMiddleware(
        app_registering(appending(log, "after"), broken), on_error=on_error
    )
    with anyio.fail_after(2):
        await call(middleware, http_scope("/x", method="DELETE"))
    assert log == ["after"]
    [record] = error_records(caplog)
    assert "broken failed for DELETE /x" in record.getMessage()
    assert reported == ["broken: disk full (200)"]


@pytest.mark.parametrize("first", ["suspends in its own scope", "fails"])
async def test_directive_cleanups_run_after_a_dynamic_cleanup_carried_from_its_first_step(
    first: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []

    async def dynamic() -> None:
        if first == "fails":
            raise ValueError("disk full")
        with anyio.move_on_after(5):
            await anyio.sleep(0.01)
        ran.append("dynamic")

    def directive(outcome: Any) -> None:
        ran.append(f"directive {outcome.status}")

    middleware = CleanupMiddleware(
        app_registering(appending(ran, "next"), dynamic), settings={"handlers": [directive]}
    )
    with anyio.fail_after(2):
        await call(middleware)
    expected = ["next"] if first == "fails" else ["dynamic", "next"]
    assert ran == [*expected, "directive 200"]
    assert len(error_records(caplog)) == (first == "fails")


async def test_first_steps_after_cleanups_that_suspended_or_failed_and_from_inside_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first steps share one driver per thread (trio) or event loop (asyncio): one that
    # suspended or failed takes it along, and a first step that runs first steps itself (a
    # cleanup calling a middleware in-process) needs one of its own. Each cleanup still runs
    # once, in order, with failures logged.
    ran: list[str] = []

    async def quick(name: str) -> None:
        ran.append(name)

    async def fails() -> None:
        raise ValueError("first step failed")

    inner = CleanupMiddleware(app_registering(functools.partial(quick, "inner")))

    async def calls_inner() -> None:
        await call(inner)  # its send and its cleanup never suspend
        ran.append("after inner")

    def app(*cleanups: Callable[[], Awaitable[None]]) -> CleanupMiddleware:
        return CleanupMiddleware(app_registering(*cleanups))

    def named(name: str) -> Callable[[], Awaitable[None]]:
        return functools.partial(quick, name)

    with anyio.fail_after(5):
        await call(app(named("a1"), appending(ran, "suspends"), named("a2")))
        await call(app(named("b1"), fails, named("b2")))
        await call(app(named("c1"), calls_inner, named("c2")))
        await call(app(named("d1"), named("d2")))
    assert ran == [
        "a2",
        "suspends",
        "a1",
        "b2",
        "b1",
        "c2",
        "inner",
        "after inner",
        "c1",
        "d2",
        "d1",
    ]
    failures = [r for r in error_records(caplog) if r.exc_info]
    assert [str(r.exc_info[1]) for r in failures if r.exc_info] == ["first step failed"]
