"""examples/recipes/starlette_app.py, outermost (as written) and in Starlette's middleware list."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import starlette_app
from recipe_support import cleanup_layer, cleanups_run, client_for, lifespan, websocket_echo
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request

from asgi_cleanup import CleanupMiddleware, SettingsError
from asgi_cleanup.starlette import cleanup_registry

pytestmark = pytest.mark.anyio

PLACEMENTS = ["outermost", "middleware-list"]


def app_for(placement: str) -> Any:
    if placement == "outermost":
        return starlette_app.app
    # The same routes, with the middleware in Starlette's own list instead.
    middleware = [Middleware(CleanupMiddleware, settings=starlette_app.SETTINGS)]
    return Starlette(routes=starlette_app.routes, middleware=middleware)


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_starlette_recipe_closes_the_session_then_runs_the_directive_cleanup(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(app_for(placement)) as client:
        response = await client.get("/")

    assert response.status_code == 200
    assert response.text == "hello\n"
    assert cleanups_run(caplog) == [
        ("dynamic", "/", 200, None, True),
        ("directive", "/", 200, None, True),
    ]


async def test_starlette_recipe_outermost_sees_the_500_that_starlette_sends_for_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = app_for("outermost")
    async with client_for(app) as client:
        response = await client.get("/error")
    await cleanup_layer(app).drain()  # the app raised: the phase runs in a task of its own

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", 500, "RuntimeError", True),
        ("directive", "/error", 500, "RuntimeError", True),
    ]


async def test_starlette_recipe_in_the_middleware_list_sees_no_status_for_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Starlette's ServerErrorMiddleware sits outside the user's middleware list: the
    # exception passes through CleanupMiddleware before any 500 has been sent.
    app = app_for("middleware-list")
    async with client_for(app) as client:
        response = await client.get("/error")
    await cleanup_layer(app).drain()

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", None, "RuntimeError", False),
        ("directive", "/error", None, "RuntimeError", False),
    ]


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_starlette_recipe_websocket_registers_through_the_helper(
    placement: str, caplog: pytest.LogCaptureFixture
) -> None:
    sent = await websocket_echo(app_for(placement), "/ws", "ping")

    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
    assert sent[1]["text"] == "ping"
    assert cleanups_run(caplog) == [
        ("dynamic", "/ws", None, None, True),
        ("directive", "/ws", None, None, True),
    ]


async def test_starlette_middleware_list_reports_a_bad_settings_file_at_lifespan_startup(
    tmp_path: Any,
) -> None:
    bad = tmp_path / "cleanup.toml"
    bad.write_text('handlers = ["recipe_cleanups:no_such_handler"]\n', encoding="utf-8")
    # Building the app is fine: Starlette builds its middleware stack on its first call.
    app = Starlette(
        routes=starlette_app.routes, middleware=[Middleware(CleanupMiddleware, settings=bad)]
    )

    with pytest.raises(SettingsError, match="no_such_handler"):
        await lifespan(app)


async def test_starlette_recipe_lifespan_passes_through_the_middleware() -> None:
    assert await lifespan(starlette_app.app) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]


async def test_starlette_helper_without_the_middleware_says_how_to_install_it() -> None:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})

    with pytest.raises(RuntimeError, match=r"app = CleanupMiddleware\(Starlette\(\.\.\.\)\)"):
        cleanup_registry(request)
