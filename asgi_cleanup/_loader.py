"""Validating a settings source's data, every key, with messages that name the file (and the
line, where it can be found), the table, the key and the entry. Every problem is reported, not
only the first: one line each in the one :class:`SettingsError`."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from ._describe import safe_repr
from ._handlers import Resolver, callable_reference, check_callable
from ._hosts import parse_host_pattern
from ._matching import Entry, Handler, Host, Location, Matcher
from ._options import timeout_range, validate_thread_limit, validate_timeout
from ._reading import kind_of
from ._toml_lines import Lines
from .errors import SettingsError

T = TypeVar("T")

OPTION_NAMES: tuple[str, ...] = (
    "timeout",
    "shutdown_timeout",
    "thread_limit",
    "on_error",
    "on_complete",
)
# The hooks among the options, and how many positional arguments each is called with.
HOOK_ARITY = {"on_error": 3, "on_complete": 2}

_TOP_KEYS = ("handlers", "host", "location", *OPTION_NAMES)
_HOST_KEYS = ("name", "handlers")
_LOCATION_KEYS = ("path", "host", "extensions", "handlers")


class _Problem(Exception):
    """One located problem; the loader notes it and goes on with the next key or entry."""


def _is(value: object, kind: type | tuple[type, ...]) -> bool:
    # isinstance() would ask the object its __class__, which a proxy may raise for.
    return issubclass(type(value), kind)


class Loader:
    """Validates one source's data and resolves its references.

    ``toml`` selects the file's rules (references only, ``false`` for no limit) over a
    mapping's (callables and ``None`` too). ``lines`` locates tables and keys in a file's
    text. Every problem found is in the :class:`SettingsError` that :meth:`load` raises.
    """

    def __init__(
        self, source: str, top: str, *, toml: bool = False, lines: Lines | None = None
    ) -> None:
        self.source = source
        self.top = top
        self.toml = toml
        self.lines = lines
        self.resolver = Resolver()
        self.problems: list[str] = []
        # What the first problem came from (an import's exception, say): the error's cause.
        self.cause: BaseException | None = None

    def locate(self, table: str, key: object = None, *entry: object, at: str | None = None) -> str:
        """``file[:line]: table[, key k][, entry e]``; ``at`` is the key whose line to give
        where it is not named."""
        at = at or (key if isinstance(key, str) else None)
        line = self.lines.find(table, at) if self.lines else None
        where = f"{self.source}{f':{line}' if line else ''}: {table}"
        if key is not None:
            where += f", key {safe_repr(key)}"
        if entry:
            where += f", entry {subject(entry[0])}"
        return where

    def fail(self, table: str, problem: str, key: object = None, *entry: object) -> NoReturn:
        raise _Problem(f"{self.locate(table, key, *entry)}: {problem}")

    def note(
        self, table: str, problem: str, key: object = None, *entry: object, at: str | None = None
    ) -> None:
        self.problems.append(f"{self.locate(table, key, *entry, at=at)}: {problem}")

    def collect(self, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)``; ``None`` (and the problem noted) if it found a problem."""
        try:
            return check(*args)
        except _Problem as problem:
            self.problems.append(str(problem))
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
        host_tables = self.collect(self.tables, data, "host") or []
        hosts = [self.host(i, table) for i, table in enumerate(host_tables) if table is not None]
        location_tables = self.collect(self.tables, data, "location") or []
        locations = [
            self.location(i, table) for i, table in enumerate(location_tables) if table is not None
        ]
        if self.problems:
            raise SettingsError("\n".join(self.problems)) from self.cause
        return options, Matcher(
            server or [],
            [host for host in hosts if host is not None],
            [location for location in locations if location is not None],
        )

    def keys_ok(
        self,
        table: str,
        data: Mapping[Any, object],
        allowed: Sequence[str],
        required: Sequence[str],
    ) -> bool:
        """Note unknown keys; whether every required key is there."""
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
            # The validator's wording is for keyword arguments; a file spells "no limit" false.
            no_limit = "false" if self.toml else "None or False"
            seconds = f"a number of seconds {timeout_range(name)}"
            problem = f"must be {seconds}, or {no_limit} for no limit"
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
            found = self.resolver.resolve(item) if _is(item, str) else item  # type: ignore[arg-type]
            return check_callable(found, positional)
        except (TypeError, ValueError) as exc:
            self.fail(table, str(exc), key, item)
        except SettingsError:
            raise
        except Exception as exc:  # looking at a user's object raised
            self.fail(table, f"cannot be checked: {type(exc).__name__}: {exc}", key, item)

    def handlers(self, table: str, value: object, context: str) -> list[Entry]:
        if _is(value, str):
            self.fail(
                table, f'must be an array of handler references; write ["{value}"]', "handlers"
            )
        if not _is(value, (list, tuple)):
            self.fail(
                table, f"must be an array of handler references, not {kind_of(value)}", "handlers"
            )
        assert isinstance(value, list | tuple)  # safe now: checked by type above
        entries: list[Entry] = []
        for item in value:
            if not _is(item, str) and (self.toml or not callable(item)):
                wanted = "a handler reference" + ("" if self.toml else " or a callable")
                self.note(table, f"must be {wanted}, not {kind_of(item)}", "handlers", item)
                continue
            handler = self.collect(self.resolve, table, "handlers", item, 1)
            if handler is not None:
                ref = item if _is(item, str) else callable_reference(handler)
                entries.append((ref, handler, context))
        return entries

    def tables(self, data: Mapping[Any, object], key: str) -> list[Mapping[Any, object] | None]:
        value = data.get(key, [])
        if _is(value, Mapping):
            self.fail(self.top, f"must be an array of tables: write [[{key}]], not [{key}]", key)
        if not _is(value, (list, tuple)):
            self.fail(
                self.top, f"must be an array of tables ([[{key}]]), not {kind_of(value)}", key
            )
        assert isinstance(value, list | tuple)  # safe now: checked by type above
        tables: list[Mapping[Any, object] | None] = []
        for index, table in enumerate(value):
            if _is(table, Mapping):
                tables.append(table)
            else:  # None keeps the indexes of the tables after it
                self.note(f"{key}[{index}]", f"must be a table, not {kind_of(table)}")
                tables.append(None)
        return tables

    def host_name(self, table: str, key: str, value: object) -> str:
        if not _is(value, str):
            self.fail(table, f"must be a host name string, not {kind_of(value)}", key)
        try:
            return parse_host_pattern(value)  # type: ignore[arg-type]
        except ValueError as exc:
            self.fail(table, f"{safe_repr(value)} {exc}", key)

    def host(self, index: int, table: Mapping[Any, object]) -> Host | None:
        label = f"host[{index}]"
        if not self.keys_ok(label, table, _HOST_KEYS, ("name", "handlers")):
            return None
        pattern = self.collect(self.host_name, label, "name", table["name"])
        context = f"{label} {pattern}"
        entries = self.collect(self.handlers, label, table["handlers"], context)
        return Host(pattern, tuple(entries)) if pattern and entries is not None else None

    def location_path(self, label: str, path: object) -> str:
        if not _is(path, str):
            self.fail(label, f"must be a URL path string, not {kind_of(path)}", "path")
        assert isinstance(path, str)
        if not path.startswith("/"):
            self.fail(label, f"{safe_repr(path)} must start with '/'", "path")
        if "?" in path or "#" in path:
            self.fail(
                label,
                f"{safe_repr(path)} must be a path alone: request paths never hold a query "
                "string or fragment, so it could never match",
                "path",
            )
        return path

    def location(self, index: int, table: Mapping[Any, object]) -> Location | None:
        label = f"location[{index}]"
        if not self.keys_ok(label, table, _LOCATION_KEYS, ("path", "handlers")):
            return None
        path = self.collect(self.location_path, label, table["path"])
        host = (
            self.collect(self.host_name, label, "host", table["host"]) if "host" in table else None
        )
        extensions = (
            self.collect(self.extensions, label, table["extensions"]) or ()
            if "extensions" in table
            else ()
        )
        context = f"{label} {path}" + (f" host {host}" if host else "")
        context += f" | {' '.join(extensions)}" if extensions else ""
        entries = self.collect(self.handlers, label, table["handlers"], context)
        if path is None or entries is None:
            return None
        return Location(path.rstrip("/"), host, extensions, tuple(entries))

    def extensions(self, table: str, value: object) -> tuple[str, ...]:
        if not _is(value, (list, tuple)) or not value:
            found = "an empty array" if _is(value, (list, tuple)) else kind_of(value)
            self.fail(table, f"must be a non-empty array like ['.csv'], not {found}", "extensions")
        assert isinstance(value, list | tuple)  # safe now: checked by type above
        for item in value:
            if not _is(item, str):
                self.fail(table, f"must be a string, not {kind_of(item)}", "extensions", item)
            if len(item) < 2 or not item.startswith(".") or "/" in item:
                problem = "must be a dot and a suffix without '/', as in '.csv'"
                self.fail(table, problem, "extensions", item)
        return tuple(value)


def subject(value: object) -> str:
    """How an entry is named in a message: a reference as written, a callable by name."""
    return callable_reference(value) if callable(value) else safe_repr(value)
