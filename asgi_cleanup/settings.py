"""Settings for directive cleanups: load a TOML file or a mapping, validate, resolve, match.

:func:`load_settings` checks and resolves everything, so a bad file stops startup with a
:class:`~asgi_cleanup.errors.SettingsError` and nothing fails at request time.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._handlers import callable_reference, check_callable, handler_key, resolve
from ._loader import HOOK_ARITY, OPTION_NAMES, Loader, subject
from ._matching import DirectivesFor, Entry, Host, Location, Matcher, dedupe
from ._reading import find_lines, read_toml

__all__ = ["OPTION_NAMES", "Settings", "load_settings", "validate_hook", "validate_on_error"]


def validate_hook(name: str, value: object) -> Callable[..., object] | None:
    """``None``, a callable taking the hook's arguments (``on_error``: ``(cleanup, exception,
    outcome)``; ``on_complete``: ``(reports, outcome)``), or a reference to one, imported now.

    :raises TypeError: if it is not callable or cannot take its positional arguments.
    :raises ValueError: if a reference is malformed or cannot be resolved.
    """
    if value is None:
        return None
    try:
        found = resolve(value, {}) if isinstance(value, str) else value
        return check_callable(found, HOOK_ARITY[name])
    except TypeError as exc:
        raise TypeError(f"{name} {subject(value)}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name} {subject(value)}: {exc}") from exc


def validate_on_error(value: object) -> Callable[..., object] | None:
    return validate_hook("on_error", value)


@dataclass(frozen=True, eq=False, repr=False)
class Settings:
    """A validated settings source, read-only. ``directives_for(scope)`` gives an ``http`` or
    ``websocket`` scope's directive cleanups in run order, each once (a plain function)."""

    source: str  # the file path as given, or "<mapping>"
    options: Mapping[str, object]  # those the source sets, validated (hooks resolved)
    _matcher: Matcher
    directives_for: DirectivesFor = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))
        object.__setattr__(self, "directives_for", self._matcher.build())

    def __repr__(self) -> str:
        return f"<Settings {self.source!r}: {self.summary()}>"

    def explain(self, host: str | None, path: str, root_path: str = "") -> list[Entry]:
        """``(reference as written, callable, context label)`` in run order for a Host header
        value (port ignored; ``None`` or ``""``: no host) and a full ``scope["path"]``, less
        ``root_path`` as at request time."""
        return dedupe(self._matcher.listed(host, path, root_path))[0]

    def dropped(
        self, host: str | None, path: str, root_path: str = ""
    ) -> list[tuple[Entry, Entry]]:
        """What :meth:`explain` leaves out as listed again: ``(entry, entry kept)``."""
        return dedupe(self._matcher.listed(host, path, root_path))[1]

    @property
    def distinct_handlers(self) -> int:
        """How many different handlers the source names, in all its contexts."""
        contexts: list[Host | Location] = [*self._matcher.hosts, *self._matcher.locations]
        every = [*self._matcher.server, *(e for context in contexts for e in context.entries)]
        return len({handler_key(entry[1]) for entry in every})

    def summary(self) -> str:
        """One line: how many handlers and contexts, and the options set."""
        matcher = self._matcher
        counts = [len(matcher.server), len(matcher.hosts), len(matcher.locations)]
        nouns = ["server-wide handler", "host", "location", "distinct handler"]
        text = ", ".join(
            f"{n} {noun}{'' if n == 1 else 's'}"
            for n, noun in zip([*counts, self.distinct_handlers], nouns, strict=True)
        )
        options = ", ".join(
            f"{k}={callable_reference(v) if callable(v) else repr(v)}"
            for k, v in self.options.items()
        )
        return text + (f"; options: {options}" if options else "")


def load_settings(source: str | os.PathLike[str] | Mapping[str, Any]) -> Settings:
    """Load, validate and resolve settings from a TOML file or a mapping of the same shape.

    A ``pyproject.toml`` is read from its ``[tool.asgi-cleanup]`` table. Handler modules are
    imported with the current ``sys.path``. In a mapping, ``None`` means no limit or no hook,
    and handlers may be callables as well as references.

    :raises SettingsError: for any problem with the file or its contents.
    :raises TypeError: if ``source`` is neither a path nor a mapping.
    """
    if isinstance(source, Mapping):
        return Settings("<mapping>", *Loader("<mapping>", "top level").load(source))
    path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    if not isinstance(path, str):
        raise TypeError(f"settings must be a path or a mapping, not {type(source).__name__}")
    data, top, text = read_toml(path)
    return Settings(
        path, *Loader(path, top, toml=True, lines=find_lines(text, top, data)).load(data)
    )
