"""Handler references: parse, import and check them.

A reference names a callable by module and attribute, in one of three spellings:

- ``"pkg.mod:attr.sub"``: entry-point style; the attribute path may be dotted;
- ``"pkg.mod::attr"``: mod_python style, the same thing;
- ``"pkg.mod"``: the module's ``cleanuphandler`` attribute, mod_python's default name for
  the cleanup phase.

Resolution problems raise ``ValueError`` (the reference is wrong) or ``TypeError`` (what it
names cannot be called that way); :mod:`asgi_cleanup.settings` adds file and table context.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from types import MethodType

DEFAULT_ATTRIBUTE = "cleanuphandler"

_ARGUMENTS = {
    1: "one positional argument (the Outcome)",
    3: "three positional arguments (cleanup, exception, outcome)",
}


def parse_reference(ref: str) -> tuple[str, str]:
    """Split a handler reference into ``(module name, dotted attribute path)``.

    ``"a.b::f"`` and ``"a.b:f"`` give ``("a.b", "f")``; ``"a.b"`` gives
    ``("a.b", "cleanuphandler")``. Whitespace is not stripped: it makes the reference invalid.

    :raises ValueError: if ``ref`` has none of the three forms, or a part is not a dotted
        Python name (relative module names included).
    """
    if "::" in ref:
        module, _, attr = ref.partition("::")
    elif ":" in ref:
        module, _, attr = ref.partition(":")
    else:
        module, attr = ref, DEFAULT_ATTRIBUTE
    if not (_is_dotted_name(module) and _is_dotted_name(attr)):
        raise ValueError(
            "not a handler reference; expected 'package.module:attribute', "
            "'package.module::attribute' or 'package.module' (meaning its cleanuphandler)"
        )
    return module, attr


def _is_dotted_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


class Resolver:
    """Resolves references, each distinct ``(module, attribute)`` pair once.

    Resolving once per pair keeps "the same handler" an identity question: two spellings of
    one reference (``a:f``, ``a::f``) give the very same object, even where a fresh attribute
    lookup would not (bound methods).
    """

    def __init__(self) -> None:
        self._resolved: dict[tuple[str, str], object] = {}

    def resolve(self, ref: str) -> object:
        """Import the module and walk the attribute path; return what it names.

        :raises ValueError: for a malformed reference, a module that cannot be imported (the
            original exception's type and text are in the message), or a missing attribute.
        """
        key = parse_reference(ref)
        if key not in self._resolved:
            self._resolved[key] = _import(*key)
        return self._resolved[key]


def handler_key(handler: object) -> object:
    """What makes two resolved handlers the same handler: the object itself, or for a bound
    method (a fresh object at every attribute lookup) its instance and function, so that
    ``m:pool.close`` resolved by two middlewares, or through an alias of ``pool``, is one."""
    if type(handler) is MethodType:
        return (id(handler.__self__), id(handler.__func__))
    return id(handler)


def _import(module_name: str, attr_path: str) -> object:
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Missing module (or a parent package) versus a missing dependency of the module:
        # the second is an error inside the handler's code, reported as such.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ValueError(f"cannot import module {module_name!r}: {exc}") from exc
        raise ValueError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise ValueError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    owner = f"module {module_name!r}"
    walked: list[str] = []
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            hint = ""
            if attr_path == DEFAULT_ATTRIBUTE:
                hint = " (a reference without ':' means the module's cleanuphandler)"
            raise ValueError(f"{owner} has no attribute {part!r}{hint}") from None
        walked.append(part)
        owner = repr(f"{module_name}:{'.'.join(walked)}")
    return obj


def check_callable(obj: object, positional: int) -> Callable[..., object]:
    """Return ``obj`` if it can be called with ``positional`` positional arguments.

    Where :func:`inspect.signature` cannot read a signature (some builtins and extension
    types) only ``callable()`` is checked. Extra parameters with defaults, ``*args`` and
    optional keyword-only parameters are fine; a required keyword-only parameter is not.

    :raises TypeError: if ``obj`` is not callable, or its signature cannot bind the arguments.
    """
    if not callable(obj):
        raise TypeError(f"not callable (it is {type(obj).__name__} {_short_repr(obj)})")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return obj
    try:
        signature.bind(*range(positional))
    except TypeError:
        wanted = _ARGUMENTS.get(positional, f"{positional} positional arguments")
        raise TypeError(
            f"cannot be called with {wanted}: its parameters are {_parameters(signature)}"
        ) from None
    return obj


def _parameters(signature: inspect.Signature) -> str:
    # Annotations would only add noise (and are strings under postponed evaluation).
    bare = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
    return str(signature.replace(parameters=bare, return_annotation=inspect.Signature.empty))


def callable_reference(func: Callable[..., object]) -> str:
    """``module:qualname`` for a callable given directly rather than by reference."""
    module = getattr(func, "__module__", None) or "?"
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}:{name}"


def _short_repr(obj: object) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."
