"""The request's registry, found in its scope for the framework helpers
(``asgi_cleanup.starlette``, ``.fastapi``, ``.litestar``, ``.django``, ``.quart``)."""

from collections.abc import Mapping
from typing import Any

from .registry import CleanupRegistry


def registry_in(scope: Mapping[str, Any], install: str) -> CleanupRegistry:
    """``scope["cleanup"]``, or a ``RuntimeError`` whose message ends with ``install``: how to
    put ``CleanupMiddleware`` around the app in that framework."""
    registry = scope.get("cleanup")
    if isinstance(registry, CleanupRegistry):
        return registry
    found = "has no 'cleanup' key" if registry is None else f"holds {type(registry).__name__}"
    raise RuntimeError(
        f"No cleanup registry for this request: its scope {found}, so CleanupMiddleware is not "
        f"around the app that serves it. {install}"
    )
