"""examples/recipes/raw_asgi_app.py: a plain ASGI app wrapped in CleanupMiddleware."""

from __future__ import annotations

import logging

import pytest
import raw_asgi_app
from recipe_support import cleanups_run, client_for, lifespan

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _log_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.mark.parametrize(("path", "status"), [("/", 200), ("/elsewhere", 404)])
async def test_raw_asgi_recipe_runs_the_dynamic_then_the_directive_cleanup(
    path: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    async with client_for(raw_asgi_app.app) as client:
        response = await client.get(path)

    assert response.status_code == status
    assert cleanups_run(caplog) == [
        ("dynamic", path, status, None, True),
        ("directive", path, status, None, True),
    ]


async def test_raw_asgi_recipe_runs_the_cleanups_with_the_exception_when_the_app_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with client_for(raw_asgi_app.app) as client:
        response = await client.get("/error")  # the transport answers 500, as a server would
    await raw_asgi_app.app.drain()  # the app raised: the phase runs in a task of its own

    assert response.status_code == 500
    assert cleanups_run(caplog) == [
        ("dynamic", "/error", None, "RuntimeError", False),
        ("directive", "/error", None, "RuntimeError", False),
    ]


async def test_raw_asgi_recipe_lifespan_passes_through_the_middleware() -> None:
    assert await lifespan(raw_asgi_app.app) == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
