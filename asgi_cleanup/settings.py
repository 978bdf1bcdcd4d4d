"""Settings for directive cleanups: load a TOML file or a mapping, validate, resolve, match.

Everything is checked and resolved by :func:`load_settings`, so a bad file stops startup with
a :class:`~asgi_cleanup.errors.SettingsError` and nothing fails at request time. The option
validators are also meant for keyword arguments: they raise ``TypeError``/``ValueError``,
which this module wraps with the file, table and key. ``validate_timeout`` and
``validate_thread_limit`` live in :mod:`asgi_cleanup._options` and are re-exported here.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from ._handlers import Resolver, callable_reference, check_callable, handler_key
from ._loader import HOOK_ARITY, OPTION_NAMES, Loader, subject
from ._matching import DirectivesFor, Entry, Handler, Matcher
from ._options import validate_thread_limit, validate_timeout
from ._reading import PYPROJECT_TABLE, read_toml
from ._toml_lines import Lines


def validate_hook(name: str, value: object) -> Callable[..., object] | None:
    """Check a hook option: ``None``, or a callable taking the hook's arguments
    (``on_error``: ``(cleanup, exception, outcome)``; ``on_complete``: ``(reports, outcome)``),
    or a handler reference (``"pkg.mod:func"``) naming one, which is imported now.

    :raises TypeError: if it is not callable or cannot take its positional arguments.
    :raises ValueError: if a reference is malformed or cannot be resolved.
    """
    if value is None:
        return None
    arity = HOOK_ARITY[name]
    try:
        if isinstance(value, str):
            return check_callable(Resolver().resolve(value), arity)
        return check_callable(value, arity)
    except TypeError as exc:
        raise TypeError(f"{name} {subject(value)}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name} {subject(value)}: {exc}") from exc


def validate_on_error(value: object) -> Callable[..., object] | None:
    """:func:`validate_hook` for ``on_error``."""
    return validate_hook("on_error", value)


class Settings:
    """A validated settings source: options and the directive cleanups per context.

    Read-only. ``directives_for(scope)`` returns, for an ``http`` or ``websocket`` scope, the
    directive cleanups in run order, each once, or ``()``; it is a plain function stored on
    the instance (no bound-method creation per call). With no ``[[host]]`` or
    ``[[location]]`` it returns one precomputed tuple without reading the scope.
    """

    __slots__ = ("_matcher", "_options", "_source", "directives_for")

    directives_for: DirectivesFor
    _source: str
    _options: Mapping[str, object]
    _matcher: Matcher

    def __init__(self, source: str, options: Mapping[str, object], matcher: Matcher) -> None:
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_options", types.MappingProxyType(dict(options)))
        object.__setattr__(self, "_matcher", matcher)
        object.__setattr__(self, "directives_for", matcher.build())

    @property
    def source(self) -> str:
        """The file path as given, or ``"<mapping>"``."""
        return self._source

    @property
    def options(self) -> Mapping[str, object]:
        """The options the source sets (only those), validated: ``timeout`` and
        ``shutdown_timeout`` a ``float`` or ``None``, ``thread_limit`` an ``int``,
        ``on_error`` a callable (or ``None`` from a mapping)."""
        return self._options

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Settings are read-only; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Settings are read-only; cannot delete {name!r}")

    def __repr__(self) -> str:
        return f"<Settings {self.source!r}: {self.summary()}>"

    def explain(self, host: str | None, path: str, root_path: str = "") -> list[Entry]:
        """``(reference as written, callable, context label)`` in run order for a request.

        ``host`` is a Host header value (a port is ignored; ``None`` or ``""``: no host, so
        no host-restricted context matches); ``path`` is the full ``scope["path"]``, from
        which a ``root_path`` prefix is removed as at request time.
        """
        return self._matcher.explain(host, path, root_path)

    def dropped(
        self, host: str | None, path: str, root_path: str = ""
    ) -> list[tuple[Entry, Entry]]:
        """What :meth:`explain` leaves out for such a request, a handler listed again in a
        matching context: each ``(entry dropped, entry kept of the same handler)``."""
        return self._matcher.dropped(host, path, root_path)

    @property
    def distinct_handlers(self) -> int:
        """How many different handlers the source names, in all its contexts."""
        matcher = self._matcher
        every = [
            *matcher.server,
            *(entry for host in matcher.hosts for entry in host.entries),
            *(entry for location in matcher.locations for entry in location.entries),
        ]
        return len({handler_key(entry[1]) for entry in every})

    def summary(self) -> str:
        """One line: how many handlers and contexts, and the options set."""
        matcher = self._matcher
        parts = [
            _count(len(matcher.server), "server-wide handler"),
            _count(len(matcher.hosts), "host"),
            _count(len(matcher.locations), "location"),
            _count(self.distinct_handlers, "distinct handler"),
        ]
        options = ", ".join(f"{k}={_option_text(v)}" for k, v in self.options.items())
        return ", ".join(parts) + (f"; options: {options}" if options else "")


def load_settings(source: str | os.PathLike[str] | Mapping[str, Any]) -> Settings:
    """Load, validate and resolve settings from a TOML file or a mapping of the same shape.

    A file named ``pyproject.toml`` is read from its ``[tool.asgi-cleanup]`` table. Handler
    modules are imported with the current ``sys.path``. In a mapping, ``None`` means no
    limit for a timeout and no ``on_error``, and handlers may be callables as well as
    references.

    :raises SettingsError: for any problem with the file or its contents.
    :raises TypeError: if ``source`` is neither a path nor a mapping.
    """
    data: Mapping[Any, object]
    if isinstance(source, Mapping):
        name, data, loader = "<mapping>", source, Loader("<mapping>", "top level")
    else:
        path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        if not isinstance(path, str):
            raise TypeError(f"settings must be a path or a mapping, not {type(source).__name__}")
        data, top, text = read_toml(path)
        prefix = "" if top == "top level" else f"tool.{PYPROJECT_TABLE}."
        name, loader = path, Loader(path, top, toml=True, lines=Lines(text, prefix, data))
    options, matcher = loader.load(data)
    return Settings(name, options, matcher)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _option_text(value: object) -> str:
    return callable_reference(value) if callable(value) else repr(value)


__all__ = [
    "OPTION_NAMES",
    "PYPROJECT_TABLE",
    "Handler",
    "Settings",
    "load_settings",
    "validate_hook",
    "validate_on_error",
    "validate_thread_limit",
    "validate_timeout",
]
