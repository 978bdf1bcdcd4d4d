"""Records of the asgi_cleanup logger carry their facts as fields, which a real JSON formatter
(python-json-logger) writes without parsing the message."""

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from otel_support import call, respond
from pythonjsonlogger.json import JsonFormatter

from asgi_cleanup import CleanupMiddleware

pytestmark = pytest.mark.anyio

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    """What the asgi_cleanup logger wrote, at DEBUG, through a JSON formatter: one dict a line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("asgi_cleanup")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(level)


async def failing() -> None:
    raise RuntimeError("broke")


async def slow() -> None:
    await anyio.sleep(1)


def directive(outcome: Any) -> None:
    raise ValueError("directive broke")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["cleanup"].register(slow)
    scope["cleanup"].register(failing)
    await respond(send)


async def test_failure_timeout_and_summary_records_carry_their_facts_as_json_fields(
    json_lines: Lines,
) -> None:
    middleware = CleanupMiddleware(app, timeout=0.05, settings={"handlers": [directive]})
    await call(middleware, "/orders/7\n")
    await middleware.drain()
    failed, timed_out, configured, summary = json_lines()
    request = {"http_method": "GET", "http_path": "/orders/7\\x0a"}  # escaped as in the message
    assert (
        failed.items()
        >= {
            "levelname": "ERROR",
            "cleanup_name": f"{__name__}.failing",
            "cleanup_source": "registered",
            "timed_out": False,
            **request,
        }.items()
    )
    assert (
        timed_out.items()
        >= {
            "cleanup_name": f"{__name__}.slow",
            "cleanup_source": "registered",
            "timed_out": True,
            **request,
        }.items()
    )
    assert (
        configured.items()
        >= {
            "cleanup_name": f"{__name__}.directive",
            "cleanup_source": "directive",
            **request,
        }.items()
    )
    assert summary.items() >= {"levelname": "DEBUG", **request}.items()
    for line in (failed, timed_out, configured, summary):
        assert isinstance(line["duration"], float)
    assert timed_out["duration"] >= 0.05
    assert not any("secret" in json.dumps(line) for line in json_lines())  # no query string


async def test_a_late_registration_warning_names_the_cleanup_as_a_field(json_lines: Lines) -> None:
    registry: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        registry.append(scope["cleanup"])
        scope["cleanup"].register(failing_late)
        await respond(send)

    def failing_late() -> None:
        registry[0].register(failing)

    await call(CleanupMiddleware(app))
    [warning] = [line for line in json_lines() if line["levelname"] == "WARNING"]
    assert warning["cleanup_name"] == f"{__name__}.failing"
