"""Naming callables, values and requests in logs and messages; none of it raises (SPEC 2.4).
A request is its method and path only, never headers, cookies or query string."""

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

from ._types import Scope

# C0 and C1 controls, DEL, U+2028, U+2029 and lone surrogates as \xNN or \uNNNN: a path can
# neither forge nor split a log line, nor make a UTF-8 stream handler drop the record.
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
}
MAX_LOGGED = 1024  # bytes (UTF-8) of a logged path or method, cut marker included
MAX_ECHOED = 200  # characters of user input echoed in an error message
_CO_COROUTINE = inspect.CO_COROUTINE
_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR
_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}


def describe_callable(func: Any) -> str:
    """``module.qualname`` of a function or of a callable object's class, a partial as
    ``functools.partial(<inner>)``, ``<unnamed TypeName>`` if looking raises; escaped, cut."""
    try:
        name = _name(func)
    except Exception:
        name = f"<unnamed {_type_name(func)}>"
    return cut(name.translate(_ESCAPES), MAX_ECHOED)


def _name(func: Any) -> str:
    if isinstance(func, functools.partial):
        return f"functools.partial({describe_callable(func.func)})"
    qualname: object = getattr(func, "__qualname__", None)
    if not isinstance(qualname, str):  # an object: its class names it
        return f"{type(func).__module__}.{type(func).__qualname__}"
    module = getattr(func, "__module__", None)
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


def _calls(func: Any, test: Callable[[Any], bool]) -> bool:
    """``test`` of what calling ``func`` runs: through partials, and for an instance (not a
    class: calling one constructs) its type's ``__call__``. ``False`` if looking raises."""
    try:
        while isinstance(func, functools.partial):
            func = func.func
        if test(func):
            return True
        if isinstance(func, type | types.FunctionType | types.MethodType):
            return False
        call = getattr(type(func), "__call__", None)  # noqa: B004 - the method itself is looked at
        return call is not None and bool(test(call))
    except Exception:
        return False


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine; if looking raises, it runs in a thread."""
    if type(func) is types.FunctionType and not func.__dict__:
        # Fast; a function with attributes may carry markcoroutinefunction's marker.
        return bool(func.__code__.co_flags & _CO_COROUTINE)
    return _calls(func, inspect.iscoroutinefunction)


def is_generator_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a generator or async generator, which runs nothing."""
    if type(func) is types.FunctionType and not func.__dict__:  # the common case, as above
        return bool(func.__code__.co_flags & _CO_GENERATORS)
    return _calls(func, lambda f: inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f))


def check_cleanup(func: object) -> None:
    """:raises TypeError: naming ``func`` (even if ``repr`` raises), if it is not callable or
    is a generator or async generator function."""
    if not callable(func):
        raise TypeError(f"cleanup must be callable, not {describe_value(func)}")
    if is_generator_callable(func):
        raise TypeError(
            f"cleanup must not be a generator or async generator function (calling "
            f"{describe_callable(func)} would run none of its code)"
        )


def _type_name(value: object) -> str:
    try:  # a metaclass may make even this raise
        return type(value).__qualname__
    except Exception:
        return "object"


def describe_value(value: object, limit: int = MAX_ECHOED) -> str:
    """``TypeName repr``, the repr cut to ``limit`` characters."""
    return f"{_type_name(value)} {safe_repr(value, limit)}"


def kind_of(value: object) -> str:
    """What a settings value is: ``a string ('x')``, its repr cut short."""
    kind = _KINDS.get(type(value))
    kind = kind or ("a table" if issubclass(type(value), Mapping) else f"a {type(value).__name__}")
    return f"{kind} ({safe_repr(value, 60)})"


def safe_repr(value: object, limit: int = MAX_ECHOED) -> str:
    try:
        return cut(repr(value), limit)
    except Exception:
        return f"<{_type_name(value)} object (repr failed)>"


def cut(text: str, limit: int = MAX_ECHOED) -> str:
    """``text``, or its start and ``… (N characters)`` within ``limit`` characters."""
    marker = f"… ({len(text)} characters)"
    return text if len(text) <= limit else text[: max(limit - len(marker), 0)] + marker


def log_safe(text: str, limit: int = MAX_LOGGED) -> str:
    """``text`` escaped, cut to ``limit`` bytes of UTF-8 (never inside an escape) ending
    ``… (N characters)``."""
    escaped = text[:limit].translate(_ESCAPES)
    if len(text) <= limit and len(escaped.encode()) <= limit:
        return escaped
    marker = f"… ({len(text)} characters)"
    budget = limit - len(marker.encode())
    pieces: list[str] = []
    for char in text[:budget]:
        piece = char.translate(_ESCAPES)
        budget -= len(piece.encode())
        if budget < 0:
            break
        pieces.append(piece)
    return "".join(pieces) + marker


class RequestText(str):
    """``"GET /path"``, whose parts log records also carry as fields (``method``, ``path``)."""

    method: str
    path: str

    def __new__(cls, method: str, path: str) -> "RequestText":
        text = super().__new__(cls, f"{method} {path}")
        text.method, text.path = method, path
        return text


def describe_request(scope: Scope) -> RequestText:
    """``"GET /path"`` (``"WEBSOCKET /path"``), each part through ``log_safe``."""
    method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
    return RequestText(log_safe(str(method)), log_safe(str(scope.get("path", ""))))
