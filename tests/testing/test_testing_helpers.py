"""asgi_cleanup.testing without pytest's plugin: the recorder, drain and finding middlewares."""

import contextlib
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
from raw import call, respond
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_cleanup import CleanupMiddleware, CleanupReport, Outcome
from asgi_cleanup._types import Receive, Scope, Send
from asgi_cleanup.testing import (
    CleanupRecorder,
    cleanup_name,
    drain,
    drain_client,
    find_middlewares,
)

ran: list[str] = []


@pytest.fixture(autouse=True)
def forget_runs() -> Iterator[None]:
    ran.clear()
    yield
    ran.clear()


async def slow_async() -> None:
    await anyio.sleep(0.05)
    ran.append("slow_async")


def failing() -> None:
    raise ValueError("broken")


class Session:
    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info: object) -> None:
        ran.append("session")


def app_registering(*cleanups: Any, raises: bool = False) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        registry = scope["cleanup"]
        registry.enter_context(Session())
        for cleanup in cleanups:
            registry.register(cleanup)
        if raises:
            raise RuntimeError("the app broke")
        for message in respond(200):
            await send(message)

    return app


def client_for(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.mark.anyio
async def test_watch_records_each_requests_reports_in_run_order() -> None:
    middleware = CleanupMiddleware(app_registering(slow_async, failing))
    with CleanupRecorder() as recorder:
        assert recorder.watch(middleware) is middleware
        async with client_for(middleware) as client:
            await client.get("/first")
            await client.get("/second")

    first, second = recorder.requests
    assert [first.outcome.scope["path"], second.outcome.scope["path"]] == ["/first", "/second"]
    assert first.names == [
        f"{__name__}.failing",
        f"{__name__}.slow_async",
        f"{__name__}.Session.__exit__",
    ]
    assert [type(report.exception) for report in first.failed] == [ValueError]
    assert recorder.reports == [*first.reports, *second.reports]
    assert [failure.message for failure in recorder.failures] == [
        f"Cleanup {__name__}.failing failed for GET /first",
        f"Cleanup {__name__}.failing failed for GET /second",
    ]
    assert isinstance(recorder.failures[0].exception, ValueError)
    assert "ValueError: broken" in str(recorder.failures[0])
    assert "Traceback" in str(recorder.failures[0])


@pytest.mark.anyio
async def test_drain_waits_for_a_phase_in_a_task_of_its_own() -> None:
    middleware = CleanupMiddleware(app_registering(slow_async, raises=True))
    with CleanupRecorder() as recorder:
        recorder.watch(middleware)
        async with client_for(middleware) as client:
            assert (await client.get("/")).status_code == 500
        assert ran == []  # the app raised: its cleanups run after the server saw it
        with anyio.fail_after(5):
            await recorder.drain()

    assert ran == ["slow_async", "session"]
    [request] = recorder.requests
    assert isinstance(request.outcome.exception, RuntimeError)


@pytest.mark.anyio
async def test_the_apps_own_on_complete_still_runs_and_comes_back_on_close() -> None:
    seen: list[int] = []

    async def own(reports: tuple[CleanupReport, ...], outcome: Outcome) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(len(reports))

    middleware = CleanupMiddleware(app_registering(), on_complete=own)
    with CleanupRecorder() as recorder:
        recorder.watch(middleware)
        recorder.watch(middleware)  # once is enough
        await call(middleware)
    assert middleware.on_complete is own
    await call(middleware)

    assert seen == [1, 1]
    assert len(recorder.requests) == 1


@pytest.mark.anyio
async def test_a_failing_own_on_complete_is_logged_under_its_own_name() -> None:
    def own(reports: tuple[CleanupReport, ...], outcome: Outcome) -> None:
        raise RuntimeError("reporting broke")

    middleware = CleanupMiddleware(app_registering(), on_complete=own)
    with CleanupRecorder() as recorder:
        await call(recorder.watch(middleware))

    assert len(recorder.requests) == 1
    [failure] = recorder.failures
    assert own.__qualname__ in failure.message
    assert failure.message.startswith("on_complete hook")


@pytest.mark.anyio
async def test_module_level_drain_takes_apps_and_finds_their_middlewares() -> None:
    middleware = CleanupMiddleware(app_registering(slow_async, raises=True))
    async with client_for(middleware) as client:
        await client.get("/")
    with anyio.fail_after(5):
        await drain(middleware)
    assert ran == ["slow_async", "session"]


@pytest.mark.anyio
async def test_drain_with_nothing_watched_says_what_to_do() -> None:
    with pytest.raises(LookupError, match="watch"):
        await CleanupRecorder().drain()


def test_failures_are_recorded_only_while_open_and_the_logger_is_left_as_it_was() -> None:
    logger = logging.getLogger("asgi_cleanup")
    before = (list(logger.handlers), logger.level, logger.propagate)
    recorder = CleanupRecorder()
    logger.error("before")
    with recorder:
        logger.warning("not a failure")
        logger.error("during")
    logger.error("after")
    assert [failure.message for failure in recorder.failures] == ["during"]
    assert (list(logger.handlers), logger.level, logger.propagate) == before


def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


def test_find_middlewares_in_a_starlette_app_not_started_yet() -> None:
    app = Starlette(routes=[Route("/", hello)], middleware=[Middleware(CleanupMiddleware)])
    [middleware] = find_middlewares(app)
    assert find_middlewares(app) == [middleware]  # the stack is built once, as Starlette does


def test_find_middlewares_stops_at_the_outermost_and_says_when_there_is_none() -> None:
    inner = CleanupMiddleware(PlainTextResponse("hi"))
    outer = CleanupMiddleware(inner)
    assert find_middlewares(outer) == [outer]
    with pytest.raises(LookupError, match="no CleanupMiddleware found"):
        find_middlewares(PlainTextResponse("hi"))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_drain_client_waits_in_an_open_testclients_loop(backend: str) -> None:
    middleware = CleanupMiddleware(app_registering(slow_async, raises=True))
    with TestClient(middleware, raise_server_exceptions=False, backend=backend) as client:
        assert client.get("/").status_code == 500
        drain_client(client)
        assert ran == ["slow_async", "session"]


def test_drain_client_needs_an_open_testclient() -> None:
    client = TestClient(CleanupMiddleware(app_registering()))
    with contextlib.closing(client), pytest.raises(RuntimeError, match="with TestClient"):
        drain_client(client)


def test_cleanup_name_follows_partials_and_names_objects_by_their_class() -> None:
    from functools import partial

    assert cleanup_name(partial(failing)) == f"{__name__}.failing"
    assert cleanup_name(Session()) == f"{__name__}.Session"


def test_the_helpers_do_not_import_pytest() -> None:
    probe = "import sys, asgi_cleanup.testing; print('pytest' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_watch_a_fastapi_app_with_the_middleware_added_before_its_first_request() -> None:
    from fastapi import FastAPI, Request

    app = FastAPI()
    app.add_middleware(CleanupMiddleware)

    @app.get("/")
    async def home(request: Request) -> str:
        request.scope["cleanup"].register(slow_async)
        return "hello"

    with CleanupRecorder() as recorder, TestClient(recorder.watch(app)) as client:
        assert client.get("/").json() == "hello"
    [request] = recorder.requests
    assert request.names == [f"{__name__}.slow_async"]
