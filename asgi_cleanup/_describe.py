"""Looking at callables and requests, for log records and error messages; none of it raises.

Only the method and the path of a request are ever described: never headers, cookies or the
query string. A callable is looked at defensively: its attributes are the user's code (an
unbound ``werkzeug.local.LocalProxy`` raises ``RuntimeError`` from every one of them), and
looking at a cleanup must never fail the phase (SPEC 2.4).
"""

import functools
import inspect
import types
from typing import Any

from ._types import Scope

# C0 controls, DEL, C1 controls, the Unicode line and paragraph separators and lone
# surrogates, shown as \xNN, \uNNNN so a path can neither forge nor split a log line, nor
# make a UTF-8 stream handler drop the record.
_ESCAPES = {
    c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"
    for c in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029, *range(0xD800, 0xE000))
}
#: At most this many bytes (UTF-8) of a path or method in a log record, cut marker included.
MAX_LOGGED = 1024
#: At most this many characters of user input echoed in an error message.
MAX_ECHOED = 200

_CO_COROUTINE = inspect.CO_COROUTINE
_CO_GENERATORS = inspect.CO_GENERATOR | inspect.CO_ASYNC_GENERATOR


def describe_callable(func: Any) -> str:
    """``module.qualname`` of a function, or of the class of a callable object.

    ``functools.partial`` objects are shown as ``functools.partial(<inner>)``. Whatever
    looking raises, the answer is a fallback (``<unnamed TypeName>``), control characters
    escaped and the length bounded.
    """
    try:
        name = _name(func)
    except Exception:
        try:
            name = f"<unnamed {type(func).__qualname__}>"
        except Exception:
            name = "<cleanup>"
    return cut(escape_control(name), MAX_ECHOED)


def _name(func: Any) -> str:
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


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a coroutine: coroutine functions, objects whose
    ``__call__`` is one, and ``functools.partial`` of either. Anything that raises while
    looking makes it sync (``False``): it is then called in a thread, where its failure is
    logged like any other."""
    if type(func) is types.FunctionType and not func.__dict__:
        # The common case, without inspect's unwrapping (a function with attributes may
        # carry inspect.markcoroutinefunction's marker: it takes the long way).
        return bool(func.__code__.co_flags & _CO_COROUTINE)
    try:
        return _through_call(_unwrap_partial(func), inspect.iscoroutinefunction)
    except Exception:
        return False


def is_generator_callable(func: Any) -> bool:
    """Whether calling ``func`` gives a generator or an async generator, which would run
    nothing: generator functions, objects whose ``__call__`` is one, and ``functools.partial``
    of either. ``False`` where looking raises."""
    if type(func) is types.FunctionType and not func.__dict__:  # the common case, as above
        return bool(func.__code__.co_flags & _CO_GENERATORS)
    try:
        return _through_call(
            _unwrap_partial(func),
            lambda f: inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f),
        )
    except Exception:
        return False


def _unwrap_partial(func: Any) -> Any:
    while isinstance(func, functools.partial):
        func = func.func
    return func


def _through_call(func: Any, test: Any) -> bool:
    """``test(func)``, or for an instance (not a class: calling a class constructs), ``test``
    of its type's ``__call__``, which is what calling it runs."""
    if test(func):
        return True
    if isinstance(func, type | types.FunctionType | types.MethodType):
        return False
    call = getattr(type(func), "__call__", None)  # noqa: B004 - the method itself is looked at
    return call is not None and bool(test(call))


def check_cleanup(func: object) -> None:
    """Check that ``func`` can be registered as a cleanup.

    :raises TypeError: naming what was passed, for a non-callable, or a generator or async
        generator function (also through ``functools.partial``, or as an object's
        ``__call__``), which would run nothing. The message is built even when ``repr(func)``
        raises.
    """
    try:
        is_callable = callable(func)
    except Exception:
        is_callable = False
    if not is_callable:
        raise TypeError(f"cleanup must be callable, not {describe_value(func)}")
    if is_generator_callable(func):
        raise TypeError(
            f"cleanup must not be a generator or async generator function (calling "
            f"{describe_callable(func)} would run none of its code)"
        )


def describe_value(value: object, limit: int = MAX_ECHOED) -> str:
    """``TypeName repr`` of a value given where something else was expected, the repr cut to
    ``limit`` characters; never raises."""
    try:
        kind = type(value).__qualname__
    except Exception:
        kind = "object"
    return f"{kind} {safe_repr(value, limit)}"


def safe_repr(value: object, limit: int = MAX_ECHOED) -> str:
    """``repr(value)`` cut to ``limit`` characters (saying how long it was); a placeholder if
    ``repr`` raises (a ``RecursionError`` from deep nesting included)."""
    try:
        text = repr(value)
    except Exception:
        try:
            return f"<{type(value).__qualname__} object (repr failed)>"
        except Exception:
            return "<object (repr failed)>"
    return cut(text, limit)


def cut(text: str, limit: int = MAX_ECHOED) -> str:
    """``text``, or its first characters and ``… (N characters)`` within ``limit``."""
    if len(text) <= limit:
        return text
    marker = f"… ({len(text)} characters)"
    return text[: max(limit - len(marker), 0)] + marker


def escape_control(text: str) -> str:
    """``text`` with control characters, U+2028, U+2029 and lone surrogates escaped."""
    return text.translate(_ESCAPES)


def log_safe(text: str, limit: int = MAX_LOGGED) -> str:
    """``text`` escaped (see ``escape_control``) and cut to at most ``limit`` bytes of UTF-8,
    a cut one ending with ``… (N characters)``, N the length of ``text``."""
    escaped = escape_control(text[:limit])
    if len(text) <= limit and len(escaped.encode()) <= limit:
        return escaped
    marker = f"… ({len(text)} characters)"
    budget = limit - len(marker.encode())
    pieces: list[str] = []
    for char in text[:budget]:  # whole escapes only: never half of one
        piece = escape_control(char)
        budget -= len(piece.encode())
        if budget < 0:
            break
        pieces.append(piece)
    return "".join(pieces) + marker


def describe_request(scope: Scope) -> str:
    """``"GET /path"`` (``"WEBSOCKET /path"`` for websockets), each part escaped and cut to at
    most 1 KiB (see ``log_safe``)."""
    method = scope.get("method", "WEBSOCKET") if scope["type"] == "http" else "WEBSOCKET"
    path = scope.get("path", "")
    return f"{log_safe(str(method))} {log_safe(str(path))}"
