"""examples/recipes/fastapi_app.py, outermost (as written) and added with add_middleware."""

from __future__ import annotations

import logging
from typing import Any

import fastapi_app
import httpx
import pytest
from fastapi import FastAPI, Request
from recipe_support import cleanup_layer, cleanups_run, client_for, websocket_echo

from asgi_cleanup import CleanupMiddleware, CleanupRegistry
from asgi_cleanup.fastapi import CleanupRegistryDep, cleanup_registry

pytestmark = pytest.mark.anyio

PLACEMENTS = ["outermost", "add_middleware"]


def app_for(placement: str) -> Any:
    if placement == "outermost":
        return fastapi_app.app
    # The same routes and dependencies, with the middleware added to FastAPI's own list.
    api = FastAPI()
    api.include_router(fastapi_app.api.router)
    api.add_middleware(CleanupMiddleware, settings=fastapi_app.SETTINGS)
    return api


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_recipe_dependency_closes_its_session_after_the_response(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(app_for(placement)) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.json() == {"hello": "fastapi"}
    assert cleanups_run(caplog) == [
        ("dynamic", "/", 200, None, True),
        ("directive", "/", 200, None, True),
    ]


@pytest.mark.parametrize(
    ("placement", "seen"),
    [
        ("outermost", ("/error", 500, "RuntimeError", True)),
        # FastAPI's ServerErrorMiddleware, which sends the 500, is outside its middleware list.
        ("add_middleware", ("/error", None, "RuntimeError", False)),
    ],
)
async def test_fastapi_recipe_closes_the_session_when_the_endpoint_raises(
    placement: str, seen: tuple[Any, ...], caplog: pytest.LogCaptureFixture
) -> None:
    app = app_for(placement)
    async with client_for(app) as client:
        response = await client.get("/error")
    await cleanup_layer(app).drain()  # the app raised: the phase runs in a task of its own

    assert response.status_code == 500
    assert cleanups_run(caplog) == [("dynamic", *seen), ("directive", *seen)]


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_fastapi_recipe_dependency_works_for_a_websocket(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    sent = await websocket_echo(app_for(placement), "/ws", "ping")

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert cleanups_run(caplog) == [
        ("dynamic", "/ws", None, None, True),
        ("directive", "/ws", None, None, True),
    ]


async def test_fastapi_dependency_gives_the_registry_that_cleanup_registry_finds() -> None:
    api = FastAPI()
    seen: list[bool] = []

    @api.get("/")
    async def home(request: Request, cleanup: CleanupRegistryDep) -> str:
        seen.append(cleanup is cleanup_registry(request) is request.scope["cleanup"])
        return "ok"

    async with client_for(CleanupMiddleware(api)) as client:
        assert (await client.get("/")).status_code == 200
    assert seen == [True]


async def test_fastapi_dependency_without_the_middleware_says_how_to_install_it() -> None:
    api = FastAPI()

    @api.get("/")
    async def home(cleanup: CleanupRegistryDep) -> str:
        return "unreachable"

    transport = httpx.ASGITransport(app=api)  # the app's exception reaches the test
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(RuntimeError, match=r"app\.add_middleware\(CleanupMiddleware\)"):
            await client.get("/")


def test_fastapi_dependency_is_annotated_with_the_registry_type() -> None:
    assert CleanupRegistryDep.__origin__ is CleanupRegistry  # type: ignore[attr-defined]


async def test_fastapi_with_add_middleware_app_keeps_dependency_overrides_and_include_router() -> (
    None
):
    app = app_for("add_middleware")  # built with include_router, app is a FastAPI object
    released: list[str] = []

    async def fake_session(cleanup: CleanupRegistryDep) -> fastapi_app.Session:
        cleanup.register(released.append, "fake")
        return fastapi_app.Session("fake")

    app.dependency_overrides[fastapi_app.get_session] = fake_session
    async with client_for(app) as client:
        response = await client.get("/")
    assert response.json() == {"hello": "fake"}
    assert released == ["fake"]
