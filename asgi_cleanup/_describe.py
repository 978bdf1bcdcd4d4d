"""Names for log records: a cleanup's qualified name and a request's method and path.

Only the method and the path are ever described: never headers, cookies or the query string.
"""

import functools
import inspect
import types
from typing import Any

from ._types import Scope

# C0 controls, DEL and C1 controls, shown as \xNN so a path cannot forge log lines.
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}


def describe_callable(func: Any) -> str:
    """``module.qualname`` of a function, or of the class of a callable object.

    ``functools.partial`` objects are shown as ``functools.partial(<inner>)``.
    """
    if isinstance(func, functools.partial):
        return f"functools.partial({describe_callable(func.func)})"
    cleanup_name = getattr(func, "cleanup_name", None)
    if isinstance(cleanup_name, str):  # a context manager's exit
        return cleanup_name
    qualname: object = getattr(func, "__qualname__", None)
    module: object
    if isinstance(qualname, str):
        module = getattr(func, "__module__", None)
    else:
        qualname = type(func).__qualname__
        module = type(func).__module__
    return f"{module}.{qualname}" if isinstance(module, str) else str(qualname)


def escape_control(text: str) -> str:
    """``text`` with control characters replaced by ``\\xNN`` escapes."""
    return text.translate(_CONTROL_ESCAPES)


def describe_request(scope: Scope) -> str:
    """``"GET /path"`` (``"WEBSOCKET /path"`` for websockets), control characters escaped."""
    method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
    path = scope.get("path", "")
    return f"{escape_control(str(method))} {escape_control(str(path))}"


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: coroutine functions, objects whose
    ``__call__`` is one, and ``functools.partial`` of either."""
    if type(func) is types.FunctionType and not func.__dict__:
        # The common case, without inspect's unwrapping (a function with attributes may
        # carry inspect.markcoroutinefunction's marker: it takes the long way).
        return bool(func.__code__.co_flags & inspect.CO_COROUTINE)
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - the method itself is what we inspect
    )
