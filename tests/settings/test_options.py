import math
from typing import Any

import pytest

from asgi_cleanup import CleanupMiddleware
from asgi_cleanup._types import Receive, Scope, Send


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    pass


def test_defaults() -> None:
    middleware = CleanupMiddleware(app)
    assert middleware.app is app
    assert middleware.timeout == 5.0
    assert middleware.shutdown_timeout == 30.0
    assert middleware.thread_limit == 8


def test_app_is_accepted_by_keyword() -> None:
    assert CleanupMiddleware(app=app).app is app


def test_options_are_stored() -> None:
    middleware = CleanupMiddleware(app, timeout=1, shutdown_timeout=None, thread_limit=3)
    assert middleware.timeout == 1.0
    assert isinstance(middleware.timeout, float)
    assert middleware.shutdown_timeout is None
    assert middleware.thread_limit == 3


def test_timeout_none_and_infinity_mean_no_limit() -> None:
    assert CleanupMiddleware(app, timeout=None).timeout is None
    assert CleanupMiddleware(app, timeout=math.inf).timeout is None


def test_non_callable_app_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="app must be an ASGI application"):
        CleanupMiddleware("myapp:app")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["timeout", "shutdown_timeout"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (-1, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        ("5", TypeError),
        (True, TypeError),
    ],
)
def test_bad_timeouts_are_rejected_at_construction(
    name: str, value: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match=name):
        CleanupMiddleware(app, **{name: value})


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-2, ValueError), (2.0, TypeError), (False, TypeError), (None, TypeError)],
)
def test_bad_thread_limits_are_rejected_at_construction(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="thread_limit"):
        CleanupMiddleware(app, thread_limit=value)


def test_zero_timeout_is_a_value_error() -> None:
    # A cleanup given 0 s would be timed out before it starts (SPEC 1: timeout > 0 or None).
    with pytest.raises(ValueError, match=r"timeout must be > 0 seconds or None, got 0"):
        CleanupMiddleware(app, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        CleanupMiddleware(app, timeout=0.0)


def test_zero_shutdown_timeout_is_allowed() -> None:
    assert CleanupMiddleware(app, shutdown_timeout=0).shutdown_timeout == 0.0
