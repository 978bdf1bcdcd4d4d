"""Validating a settings source's data: every key checked, every reference resolved.

Every problem is reported, one line each in the one :class:`SettingsError`, naming the file
(and the line, where it can be found), the table, the key and the entry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from ._describe import kind_of, safe_repr
from ._handlers import callable_reference, check_callable, resolve
from ._matching import Entry, Handler, Host, Location, Matcher, to_ascii
from ._options import timeout_range, validate_thread_limit, validate_timeout
from .errors import SettingsError

T = TypeVar("T")

OPTION_NAMES = ("timeout", "shutdown_timeout", "thread_limit", "on_error", "on_complete")
#: The hooks among the options, and how many positional arguments each is called with.
HOOK_ARITY = {"on_error": 3, "on_complete": 2}
_TOP_KEYS = ("handlers", "host", "location", *OPTION_NAMES)
_ARRAY = (list, tuple)


class _Problem(Exception):
    """One located problem: noted, and the loader goes on with the next key or entry."""


def _is(value: object, kind: type | tuple[type, ...]) -> bool:
    # isinstance() would ask the object its __class__, which a proxy may raise for.
    return issubclass(type(value), kind)


def subject(value: object) -> str:
    """An entry in a message: a reference as written, a callable by name."""
    return callable_reference(value) if callable(value) else safe_repr(value)


def parse_host_pattern(name: str) -> str:
    """A ``[[host]]`` name (or a location's ``host``) lower-cased, without a trailing dot, in
    its IDNA form. ``"*.example.com"`` is a wildcard; ``"[::1]"`` and ``"::1"`` are one name.

    :raises ValueError: for an empty name, a port, whitespace or ``/``, or a ``*`` anywhere
        but as the whole first label.
    """
    host = name.lower()
    if not host or any(c.isspace() or c == "/" for c in host):
        raise ValueError("is not a host name")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host.count(":") == 1:
        raise ValueError("must not include a port: hosts are compared with the port removed")
    wildcard = host.startswith("*.")
    rest = host[2:] if wildcard else host
    if "*" in rest:
        raise ValueError("may only use '*' as its whole first label, as in '*.example.com'")
    rest = rest.rstrip(".")
    if not rest:
        raise ValueError("is not a host name")
    return ("*." if wildcard else "") + to_ascii(rest)


class Loader:
    """Validates one source's data and resolves its references.

    ``toml`` selects a file's rules (references only, ``false`` for no limit) over a
    mapping's (callables and ``None`` too); ``lines`` is :func:`._reading.find_lines`'s.
    """

    def __init__(
        self, source: str, top: str, *, toml: bool = False, lines: dict[Any, int] | None = None
    ) -> None:
        self.source, self.top, self.toml, self.lines = source, top, toml, lines or {}
        self.resolved: dict[tuple[str, str], object] = {}
        self.problems: list[str] = []
        self.cause: BaseException | None = None  # of the first problem: the error's cause

    def note(
        self, table: str, problem: str, key: object = None, *entry: object, at: str | None = None
    ) -> None:
        """Note a problem at ``file[:line]: table[, key k][, entry e]``; ``at`` is the key
        whose line to give where it is not named."""
        at = at or (key if isinstance(key, str) else None)
        line = self.lines.get((table, at)) or self.lines.get((table, None))
        where = f"{self.source}{f':{line}' if line else ''}: {table}"
        if key is not None:
            where += f", key {safe_repr(key)}"
        if entry:
            where += f", entry {subject(entry[0])}"
        self.problems.append(f"{where}: {problem}")

    def fail(self, table: str, problem: str, key: object = None, *entry: object) -> NoReturn:
        self.note(table, problem, key, *entry)
        raise _Problem

    def collect(self, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)``, or ``None`` where it found a problem (noted)."""
        try:
            return check(*args)
        except _Problem as problem:
            self.cause = self.cause or problem.__context__
        except SettingsError as nested:  # a handler module's own settings failed
            self.problems.append(str(nested))
            self.cause = self.cause or nested
        return None

    def load(self, data: Mapping[Any, object]) -> tuple[dict[str, object], Matcher]:
        """The validated options (only those present) and the contexts, ready to match.

        :raises SettingsError: with one line per problem found.
        """
        self.keys_ok(self.top, data, _TOP_KEYS, ())
        options = {
            name: self.collect(self.option, name, data[name])
            for name in OPTION_NAMES
            if name in data
        }
        server = self.collect(self.handlers, self.top, data.get("handlers", []), "server-wide")
        contexts: dict[str, list[Any]] = {}
        for name, build in (("host", self.host), ("location", self.location)):
            tables = self.collect(self.tables, data, name) or []
            built = [build(f"{name}[{i}]", t) for i, t in enumerate(tables) if t is not None]
            contexts[name] = [context for context in built if context]
        if self.problems:
            raise SettingsError("\n".join(self.problems)) from self.cause
        return options, Matcher(server or [], contexts["host"], contexts["location"])

    def keys_ok(
        self,
        table: str,
        data: Mapping[Any, object],
        allowed: Sequence[str],
        required: Sequence[str],
    ) -> bool:
        """Note unknown and missing keys; whether none is missing."""
        suggested = set()
        for key in data:
            if not _is(key, str):
                self.note(table, f"key {safe_repr(key)} is not a string")
            elif key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(allowed)}"
                self.note(table, f"unknown key {safe_repr(key)}; {hint}", at=key)
                suggested.update(close)
        missing = [key for key in required if key not in data]
        for key in missing:
            if key not in suggested:  # "did you mean" has said it
                self.note(table, f"missing key {key!r}")
        return not missing

    def option(self, name: str, value: object) -> object:
        if name in HOOK_ARITY:
            return self.hook(name, value)
        try:
            if name == "thread_limit":
                return validate_thread_limit(value)
            return None if value is False else validate_timeout(name, value)
        except (TypeError, ValueError) as exc:
            if name == "thread_limit":
                self.fail(self.top, str(exc), name)
            # The validator's words are for keyword arguments; a file spells "no limit" false.
            no_limit = "false" if self.toml else "None or False"
            problem = (
                f"must be a number of seconds {timeout_range(name)}, or {no_limit} for no limit"
            )
            self.fail(self.top, f"{problem}; got {kind_of(value)}", name)

    def hook(self, name: str, value: object) -> Handler | None:
        if value is None and not self.toml:
            return None
        if not _is(value, str) and (self.toml or not callable(value)):
            wanted = "a handler reference" + ("" if self.toml else ", a callable or None")
            self.fail(self.top, f"must be {wanted}, not {kind_of(value)}", name)
        return self.resolve(self.top, name, value, HOOK_ARITY[name])

    def resolve(self, table: str, key: str, item: object, positional: int) -> Handler:
        try:
            found = resolve(item, self.resolved) if _is(item, str) else item  # type: ignore[arg-type]
            return check_callable(found, positional)
        except (TypeError, ValueError) as exc:
            self.fail(table, str(exc), key, item)
        except SettingsError:
            raise
        except Exception as exc:  # looking at a user's object raised
            self.fail(table, f"cannot be checked: {type(exc).__name__}: {exc}", key, item)

    def handlers(self, table: str, value: object, context: str) -> list[Entry]:
        what = "must be an array of handler references"
        if _is(value, str):
            self.fail(table, f'{what}; write ["{value}"]', "handlers")
        if not _is(value, _ARRAY):
            self.fail(table, f"{what}, not {kind_of(value)}", "handlers")
        entries: list[Entry] = []
        assert isinstance(value, list | tuple)  # checked by type above
        for item in value:
            if not _is(item, str) and (self.toml or not callable(item)):
                wanted = "a handler reference" + ("" if self.toml else " or a callable")
                self.note(table, f"must be {wanted}, not {kind_of(item)}", "handlers", item)
            elif (handler := self.collect(self.resolve, table, "handlers", item, 1)) is not None:
                ref = item if _is(item, str) else callable_reference(handler)
                entries.append((ref, handler, context))
        return entries

    def tables(self, data: Mapping[Any, object], key: str) -> list[Mapping[Any, object] | None]:
        """The tables of ``[[key]]``; ``None`` (noted) for an item that is not one."""
        value = data.get(key, [])
        if _is(value, Mapping):
            self.fail(self.top, f"must be an array of tables: write [[{key}]], not [{key}]", key)
        if not _is(value, _ARRAY):
            self.fail(
                self.top, f"must be an array of tables ([[{key}]]), not {kind_of(value)}", key
            )
        assert isinstance(value, list | tuple)  # checked by type above
        for index, table in enumerate(value):
            if not _is(table, Mapping):
                self.note(f"{key}[{index}]", f"must be a table, not {kind_of(table)}")
        return [table if _is(table, Mapping) else None for table in value]

    def host_name(self, table: str, key: str, value: object) -> str:
        if not _is(value, str):
            self.fail(table, f"must be a host name string, not {kind_of(value)}", key)
        try:
            return parse_host_pattern(value)  # type: ignore[arg-type]
        except ValueError as exc:
            self.fail(table, f"{safe_repr(value)} {exc}", key)

    def host(self, label: str, table: Mapping[Any, object]) -> Host | None:
        if not self.keys_ok(label, table, ("name", "handlers"), ("name", "handlers")):
            return None
        pattern = self.collect(self.host_name, label, "name", table["name"])
        entries = self.collect(self.handlers, label, table["handlers"], f"{label} {pattern}")
        return Host(pattern, tuple(entries)) if pattern and entries is not None else None

    def location_path(self, label: str, path: object) -> str:
        if not _is(path, str):
            self.fail(label, f"must be a URL path string, not {kind_of(path)}", "path")
        assert isinstance(path, str)
        if not path.startswith("/"):
            self.fail(label, f"{safe_repr(path)} must start with '/'", "path")
        if "?" in path or "#" in path:
            problem = "must be a path alone: request paths never hold a query string or fragment"
            self.fail(label, f"{safe_repr(path)} {problem}, so it could never match", "path")
        return path

    def location(self, label: str, table: Mapping[Any, object]) -> Location | None:
        keys = ("path", "host", "extensions", "handlers")
        if not self.keys_ok(label, table, keys, ("path", "handlers")):
            return None
        path = self.collect(self.location_path, label, table["path"])
        host = (
            self.collect(self.host_name, label, "host", table["host"]) if "host" in table else None
        )
        extensions: tuple[str, ...] = ()
        if "extensions" in table:
            extensions = self.collect(self.extensions, label, table["extensions"]) or ()
        context = f"{label} {path}" + (f" host {host}" if host else "")
        context += f" | {' '.join(extensions)}" if extensions else ""
        entries = self.collect(self.handlers, label, table["handlers"], context)
        if path is None or entries is None:
            return None
        return Location(path.rstrip("/"), host, extensions, tuple(entries))

    def extensions(self, table: str, value: object) -> tuple[str, ...]:
        if not _is(value, _ARRAY) or not value:
            found = "an empty array" if _is(value, _ARRAY) else kind_of(value)
            self.fail(table, f"must be a non-empty array like ['.csv'], not {found}", "extensions")
        assert isinstance(value, list | tuple)  # checked by type above
        for item in value:
            if not _is(item, str):
                self.fail(table, f"must be a string, not {kind_of(item)}", "extensions", item)
            if len(item) < 2 or not item.startswith(".") or "/" in item:
                problem = "must be a dot and a suffix without '/', as in '.csv'"
                self.fail(table, problem, "extensions", item)
        return tuple(value)
