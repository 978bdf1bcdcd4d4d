"""Handler references, ``"pkg.mod:attr.sub"``, ``"pkg.mod::attr"`` (mod_python style) or
``"pkg.mod"`` (its ``cleanuphandler``, mod_python's default): parse, import and check them."""

from __future__ import annotations

import importlib
import inspect
import traceback
from collections.abc import Callable
from types import MethodType, ModuleType

from ._describe import cut, describe_value, is_generator_callable, safe_repr
from .errors import SettingsError

DEFAULT_ATTRIBUTE = "cleanuphandler"
_ARGUMENTS = {
    1: "one positional argument (the Outcome)",
    3: "three positional arguments (cleanup, exception, outcome)",
}
_CIRCULAR = (
    " yet: the module is still being imported (its code is running, further up: a circular "
    "import, as when it builds the middleware, or imports the module that does, before it "
    "defines the handler). Define handlers above the middleware's construction, or in a "
    "module that does not import the app's module"
)


def resolve(ref: str, resolved: dict[tuple[str, str], object]) -> object:
    """What ``ref`` names, imported once per ``resolved`` so two spellings give one object.

    :raises ValueError: for a malformed reference (whitespace, a relative module), a module
        that cannot be imported (its exception's type and text said) or a missing attribute.
    """
    module, colon, attr = ref.partition(":")
    attr = attr.removeprefix(":") if colon else DEFAULT_ATTRIBUTE
    if not all(part.isidentifier() for part in (*module.split("."), *attr.split("."))):
        raise ValueError(
            "not a handler reference; expected 'package.module:attribute', "
            "'package.module::attribute' or 'package.module' (meaning its cleanuphandler)"
        )
    if (module, attr) not in resolved:
        resolved[module, attr] = _import(module, attr)
    return resolved[module, attr]


def handler_key(handler: object) -> object:
    """Handlers are one if the same object, or bound methods of one instance and function."""
    if type(handler) is MethodType:
        return (id(handler.__self__), id(handler.__func__))
    return id(handler)


def _import(module_name: str, attr_path: str) -> object:
    try:
        obj: object = importlib.import_module(module_name)
    except SettingsError:  # its own middleware's settings failed (a circular import): said once
        raise
    except BaseException as exc:
        # SystemExit too: a module that cannot be imported is a bad reference, never an exit.
        # A missing module (or parent) is told apart from a missing dependency of its code.
        name = exc.name if isinstance(exc, ModuleNotFoundError) else None
        try:
            text = cut(str(exc), 500)
        except Exception:
            text = "(its message cannot be shown)"
        if name is not None and (module_name + ".").startswith(name + "."):
            raise ValueError(f"cannot import module {safe_repr(module_name)}: {text}") from exc
        problem = f"importing module {safe_repr(module_name)} raised {type(exc).__name__}"
        raise ValueError(f"{problem}: {text}") from exc
    owner, parts = f"module {safe_repr(module_name)}", attr_path.split(".")
    for i, part in enumerate(parts, 1):
        try:
            obj = getattr(obj, part)
        except Exception:
            hint = ""
            if isinstance(obj, ModuleType) and _being_imported(obj):
                hint = _CIRCULAR
            elif attr_path == DEFAULT_ATTRIBUTE:
                hint = " (a reference without ':' means the module's cleanuphandler)"
            raise ValueError(f"{owner} has no attribute {safe_repr(part)}{hint}") from None
        owner = safe_repr(f"{module_name}:{'.'.join(parts[:i])}")
    return obj


def _being_imported(module: ModuleType) -> bool:
    """Whether ``module``'s top-level code is running in this thread's stack."""
    frames = traceback.walk_stack(None)
    return any(f.f_globals is vars(module) and f.f_code.co_name == "<module>" for f, _ in frames)


def check_callable(obj: object, positional: int) -> Callable[..., object]:
    """``obj``, if it can take ``positional`` arguments (without a readable signature, if
    callable). :raises TypeError: if not, or a generator or async generator function."""
    if not callable(obj):
        raise TypeError(f"not callable (it is {describe_value(obj, 60)})")
    if is_generator_callable(obj):
        raise TypeError(
            "is a generator or async generator function: calling it would run none of its code"
        )
    try:
        signature = inspect.signature(obj)
    except Exception:  # unreadable, or an object whose attributes raise (LocalProxy)
        return obj
    try:
        signature.bind(*range(positional))
    except TypeError:
        wanted = _ARGUMENTS.get(positional, f"{positional} positional arguments")
        bare = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
        shown = signature.replace(parameters=bare, return_annotation=signature.empty)
        raise TypeError(f"cannot be called with {wanted}: its parameters are {shown}") from None
    return obj


def subject(value: object) -> str:
    """An entry in a message: a reference as written, a callable by name."""
    return callable_reference(value) if callable(value) else safe_repr(value)


def callable_reference(func: Callable[..., object]) -> str:
    """``module:qualname`` of a callable given directly rather than by reference."""
    try:
        module = getattr(func, "__module__", None) or "?"
        text = f"{module}:{getattr(func, '__qualname__', None) or type(func).__qualname__}"
    except Exception:  # attributes that raise (an unbound LocalProxy): its type names it
        text = f"{type(func).__module__}:{type(func).__qualname__}"
    return cut(text)
