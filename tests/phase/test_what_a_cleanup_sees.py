import asyncio
import contextlib
import contextvars
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from raw import app_registering, call, http_scope, respond

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send

REQUEST_ID = contextvars.ContextVar("REQUEST_ID", default="-")


@pytest.mark.anyio
async def test_cleanups_see_context_variables_set_before_they_were_registered() -> None:
    seen: list[tuple[str, str]] = []

    async def async_cleanup() -> None:
        seen.append(("async", REQUEST_ID.get()))

    async def suspending_cleanup() -> None:
        await anyio.sleep(0.01)
        seen.append(("suspending", REQUEST_ID.get()))

    def sync_cleanup() -> None:
        seen.append(("sync", REQUEST_ID.get()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_ID.set(scope["path"])
        registry = scope["cleanup"]
        registry.register(sync_cleanup)
        registry.register(suspending_cleanup)
        registry.register(async_cleanup)
        REQUEST_ID.set("changed after registering")
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app), http_scope("/r1"))
    assert seen == [("async", "/r1"), ("suspending", "/r1"), ("sync", "/r1")]


@pytest.mark.anyio
async def test_context_of_concurrent_requests_stays_apart() -> None:
    seen: dict[str, list[str]] = {}

    async def cleanup(path: str) -> None:
        await anyio.sleep(0.01)
        seen.setdefault(path, []).append(REQUEST_ID.get())

    def sync_cleanup(path: str) -> None:
        seen.setdefault(path, []).append(REQUEST_ID.get())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_ID.set(scope["path"])
        scope["cleanup"].register(sync_cleanup, scope["path"])
        scope["cleanup"].register(cleanup, scope["path"])
        await anyio.sleep(0.01)
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    paths = [f"/req{i}" for i in range(10)]
    async with anyio.create_task_group() as tg:
        for path in paths:
            tg.start_soon(call, middleware, http_scope(path))
    assert seen == {path: [path, path] for path in paths}


@pytest.mark.anyio
async def test_a_cleanup_setting_a_context_variable_does_not_affect_the_next() -> None:
    seen: list[str] = []

    async def first() -> None:
        REQUEST_ID.set("set by a cleanup")

    def second() -> None:
        seen.append(REQUEST_ID.get())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_ID.set("app")
        scope["cleanup"].register(second)
        scope["cleanup"].register(first)
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert seen == ["app"]


@pytest.mark.anyio
async def test_directive_cleanups_run_in_the_context_as_the_app_left_it() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_ID.set("at the end of the app")
        for message in respond():
            await send(message)

    settings = {"handlers": [lambda outcome: seen.append(REQUEST_ID.get())]}
    await call(CleanupMiddleware(app, settings=settings))
    assert seen == ["at the end of the app"]


class Recording:
    """A context manager recording its enter, and the exception its exit received."""

    def __init__(self, log: list[Any], name: str) -> None:
        self.log = log
        self.name = name

    def __enter__(self) -> str:
        self.log.append(("enter", self.name))
        return f"{self.name} value"

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.log.append(("exit", self.name, exc, threading.get_ident()))


@pytest.mark.anyio
async def test_context_exits_run_lifo_with_registered_cleanups_without_exception() -> None:
    log: list[Any] = []

    @contextlib.asynccontextmanager
    async def async_resource() -> AsyncIterator[str]:
        log.append(("enter", "async"))
        try:
            yield "async value"
        except BaseException as exc:
            log.append(("exit", "async", exc))
            raise
        else:
            log.append(("exit", "async", None))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.register(log.append, ("cleanup", 1))
        assert registry.enter_context(Recording(log, "sync")) == "sync value"
        registry.register(log.append, ("cleanup", 2))
        assert await registry.enter_async_context(async_resource()) == "async value"
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    steps = [entry[:3] if entry[0] == "exit" else entry for entry in log]
    assert steps == [
        ("enter", "sync"),
        ("enter", "async"),
        ("exit", "async", None),
        ("cleanup", 2),
        ("exit", "sync", None),
        ("cleanup", 1),
    ]
    # Like any sync cleanup, the sync exit ran in a worker thread.
    assert log[4][3] != threading.get_ident()


@pytest.mark.anyio
async def test_context_exit_receives_the_app_exception_itself() -> None:
    log: list[Any] = []
    error = LookupError("no such order")

    def failing_cleanup() -> None:
        raise RuntimeError("an earlier cleanup failed")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].enter_context(Recording(log, "transaction"))
        scope["cleanup"].register(failing_cleanup)
        raise error

    middleware = CleanupMiddleware(app)
    with pytest.raises(LookupError):
        await call(middleware)
    await middleware.drain()
    [exit_entry] = [entry for entry in log if entry[0] == "exit"]
    assert exit_entry[2] is error


@pytest.mark.anyio
async def test_context_manager_whose_enter_raises_fails_the_request_and_registers_nothing() -> None:
    holder: list[Any] = []

    class Broken:
        def __enter__(self) -> None:
            raise OSError("cannot connect")

        def __exit__(self, *exc_info: Any) -> None:
            holder.append("exit must not run")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        holder.append(scope["cleanup"])
        scope["cleanup"].enter_context(Broken())

    with pytest.raises(OSError, match="cannot connect"):
        await call(CleanupMiddleware(app))
    assert len(holder[0]) == 0
    assert holder[1:] == []


@pytest.mark.anyio
async def test_enter_context_of_a_non_context_manager_is_a_type_error() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        with pytest.raises(TypeError, match="not a context manager"):
            scope["cleanup"].enter_context(object())
        with pytest.raises(TypeError, match="not an async context manager"):
            await scope["cleanup"].enter_async_context(Recording([], "sync only"))
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))


@pytest.mark.anyio
async def test_enter_context_after_cleanups_started_raises_without_entering() -> None:
    log: list[Any] = []
    errors: list[BaseException] = []

    @contextlib.asynccontextmanager
    async def async_resource() -> AsyncIterator[str]:
        log.append(("enter", "async"))
        yield "async value"
        log.append(("exit", "async"))

    async def late_cleanup(registry: Any) -> None:
        # A cleanup is the usual place to be late from: the phase has started.
        for enter in (
            lambda: registry.enter_context(Recording(log, "sync")),
            lambda: registry.enter_async_context(async_resource()),
        ):
            try:
                result = enter()
                if not isinstance(result, str):
                    await result
            except RuntimeError as exc:
                errors.append(exc)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(late_cleanup, scope["cleanup"])
        for message in respond():
            await send(message)

    await call(CleanupMiddleware(app))
    assert log == []
    assert [str(exc) for exc in errors] == [
        "enter_context() called after cleanups started: 'Recording' object not entered, "
        "as its exit could no longer run",
        "enter_async_context() called after cleanups started: '_AsyncGeneratorContextManager' "
        "object not entered, as its exit could no longer run",
    ]


@pytest.mark.anyio
async def test_context_exit_is_bounded_by_the_timeout_and_logged_by_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    @contextlib.asynccontextmanager
    async def slow_to_close() -> AsyncIterator[None]:
        yield
        await anyio.sleep(10)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await scope["cleanup"].enter_async_context(slow_to_close())
        for message in respond():
            await send(message)

    with anyio.fail_after(5):
        await call(CleanupMiddleware(app, timeout=0.1))
    [record] = [r for r in caplog.records if r.name == "asgi_cleanup"]
    assert "_AsyncGeneratorContextManager.__aexit__ timed out" in record.getMessage()


@contextlib.contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """The docs' example: commit after a success, roll back after an error."""
    # The exit runs in a worker thread: a connection must allow that.
    connection = sqlite3.connect(path, check_same_thread=False)
    try:
        yield connection
    except BaseException:
        connection.rollback()
        raise
    else:
        connection.commit()
    finally:
        connection.close()


@pytest.mark.anyio
@pytest.mark.parametrize(("fail", "rows"), [(False, 1), (True, 0)])
async def test_sqlite_transaction_commits_after_success_and_rolls_back_after_error(
    tmp_path: Path, fail: bool, rows: int
) -> None:
    path = tmp_path / "orders.db"
    with contextlib.closing(sqlite3.connect(path)) as setup:
        setup.execute("CREATE TABLE orders (id INTEGER)")
        setup.commit()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        db = scope["cleanup"].enter_context(transaction(path))
        db.execute("INSERT INTO orders VALUES (1)")
        if fail:
            raise RuntimeError("payment declined")
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    with contextlib.suppress(RuntimeError):
        await call(middleware)
    await middleware.drain()
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("SELECT COUNT(*) FROM orders").fetchone() == (rows,)


@pytest.mark.anyio
async def test_each_request_s_cleanups_run_in_tasks_no_other_request_shares() -> None:
    # Task-keyed state (SQLAlchemy's async_scoped_session(scopefunc=current_task)) must not
    # mix requests: the task a cleanup sees is never one another request's cleanups run in.
    seen: dict[str, list[int]] = {}
    both_running = anyio.Event()
    arrived: list[str] = []

    async def cleanup(rid: str) -> None:
        seen.setdefault(rid, []).append(anyio.get_current_task().id)
        arrived.append(rid)
        if len(arrived) == 2:
            both_running.set()
        with anyio.fail_after(2):
            await both_running.wait()
        seen[rid].append(anyio.get_current_task().id)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(cleanup, scope["path"])
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app)
    request_tasks: list[int] = []

    async def one(path: str) -> None:
        request_tasks.append(anyio.get_current_task().id)
        await call(middleware, http_scope(path))

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "/a")
        tg.start_soon(one, "/b")

    (a_before, a_after), (b_before, b_after) = seen["/a"], seen["/b"]
    assert a_before == a_after
    assert b_before == b_after
    assert a_before != b_before
    assert not {a_before, b_before} & set(request_tasks)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cleanup_cancelling_its_own_task_fails_alone_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def cancels_its_task_and_returns() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        ran.append("cancelling")

    async def suspends_next() -> None:
        await anyio.sleep(0.05)
        ran.append("next")

    middleware = CleanupMiddleware(
        app_registering(suspends_next, cancels_its_task_and_returns), timeout=1
    )
    with anyio.fail_after(3):
        await call(middleware)  # the request is not cancelled by it
        await middleware.drain()

    assert ran == ["cancelling", "next"]
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "cancels_its_task_and_returns failed" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is asyncio.CancelledError


@pytest.mark.anyio
async def test_outcome_is_readable_by_a_cleanup_left_behind_past_its_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("asgi_cleanup.phase.ABANDON_GRACE", 0.05)
    seen: list[object] = []

    async def stubborn(registry: Any) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.sleep(0.3)
        seen.append(registry.outcome)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["cleanup"].register(stubborn, scope["cleanup"])
        for message in respond(204):
            await send(message)

    middleware = CleanupMiddleware(app, timeout=0.05)
    with anyio.fail_after(3):
        await call(middleware)
        await middleware.drain()

    (outcome,) = seen
    assert getattr(outcome, "status", None) == 204


@pytest.mark.anyio
async def test_directive_cleanups_sharing_one_captured_context_each_run_in_a_copy() -> None:
    # Eager tasks must each get a context nobody has entered (python/cpython#157301): the
    # directives' context, captured once when the app finished, is copied for each.
    seen: list[str] = []

    async def first(outcome: Any) -> None:
        seen.append(REQUEST_ID.get())
        REQUEST_ID.set("changed by the first")
        await anyio.sleep(0.01)
        seen.append(REQUEST_ID.get())

    async def second(outcome: Any) -> None:
        seen.append(REQUEST_ID.get())

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        REQUEST_ID.set("as the app left it")
        for message in respond():
            await send(message)

    middleware = CleanupMiddleware(app, settings={"handlers": [first, second]})
    await call(middleware)
    assert seen == ["as the app left it", "changed by the first", "as the app left it"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_cleanup_registered_from_a_worker_thread_runs_as_a_task_of_the_loop() -> None:
    # An eager task made in a thread other than the loop's would run there and corrupt the
    # loop's current task (python/cpython#155338): tasks are only ever made on the loop.
    seen: list[object] = []

    async def cleanup() -> None:
        seen.append((threading.get_ident(), asyncio.current_task()))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await anyio.to_thread.run_sync(scope["cleanup"].register, cleanup)  # a sync view
        for message in respond():
            await send(message)

    request_task = asyncio.current_task()
    await call(CleanupMiddleware(app))
    ((thread, task),) = seen
    assert thread == threading.get_ident()
    assert task is not None
    assert task is not request_task
    assert asyncio.current_task() is request_task
