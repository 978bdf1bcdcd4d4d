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
from types import MethodType, ModuleType

from ._describe import cut, describe_value, is_generator_callable, safe_repr
from .errors import SettingsError

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
    except SettingsError:
        # The module built a middleware of its own whose settings failed (often these very
        # settings, through a circular import): that message already says it all, once.
        raise
    except ModuleNotFoundError as exc:
        # Missing module (or a parent package) versus a missing dependency of the module:
        # the second is an error inside the handler's code, reported as such.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise ValueError(
                f"cannot import module {safe_repr(module_name)}: {_text(exc)}"
            ) from exc
        raise ValueError(_raised(module_name, exc)) from exc
    except BaseException as exc:
        # SystemExit (sys.exit() at import) and KeyboardInterrupt included: a module that
        # cannot be imported is a bad reference, never a silent exit (SPEC 4).
        raise ValueError(_raised(module_name, exc)) from exc
    owner = f"module {safe_repr(module_name)}"
    walked: list[str] = []
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except Exception:
            raise ValueError(
                f"{owner} has no attribute {safe_repr(part)}{_hint(obj, attr_path)}"
            ) from None
        walked.append(part)
        owner = safe_repr(f"{module_name}:{'.'.join(walked)}")
    return obj


def _raised(module_name: str, exc: BaseException) -> str:
    return f"importing module {safe_repr(module_name)} raised {type(exc).__name__}: {_text(exc)}"


def _text(exc: BaseException) -> str:
    try:
        return cut(str(exc), 500)
    except Exception:
        return "(its message cannot be shown)"


def _hint(owner: object, attr_path: str) -> str:
    if isinstance(owner, ModuleType) and being_imported(owner):
        return (
            " yet: the module is still being imported (its code is running, further up: a "
            "circular import, as when it builds the middleware, or imports the module that "
            "does, before it defines the handler). Define handlers above the middleware's "
            "construction, or in a module that does not import the app's module"
        )
    if attr_path == DEFAULT_ATTRIBUTE:
        return " (a reference without ':' means the module's cleanuphandler)"
    return ""


def being_imported(module: ModuleType) -> bool:
    """Whether ``module``'s top-level code is running in this thread's stack: it is partly
    initialised, and names it defines further down do not exist yet."""
    namespace = vars(module)
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_globals is namespace and frame.f_code.co_name == "<module>":
            return True
        frame = frame.f_back
    return False


def check_callable(obj: object, positional: int) -> Callable[..., object]:
    """Return ``obj`` if it can be called with ``positional`` positional arguments.

    Where :func:`inspect.signature` cannot read a signature (some builtins and extension
    types) only ``callable()`` is checked. Extra parameters with defaults, ``*args`` and
    optional keyword-only parameters are fine; a required keyword-only parameter is not.

    :raises TypeError: if ``obj`` is not callable, is a generator or async generator function
        (also as a ``functools.partial`` or an object's ``__call__``), or its signature cannot
        bind the arguments.
    """
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
    try:
        module = getattr(func, "__module__", None) or "?"
        name = getattr(func, "__qualname__", None) or type(func).__qualname__
        text = f"{module}:{name}"
    except Exception:  # attributes that raise (an unbound LocalProxy): its type names it
        text = f"{type(func).__module__}:{type(func).__qualname__}"
    return cut(text)
