"""Reading a settings source: TOML parsing, the ``[tool.asgi-cleanup]`` table, and the
validation of every key, with messages that name the file, table, key and entry."""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from ._handlers import Resolver, callable_reference, check_callable
from ._matching import Entry, Handler, Host, Location, Matcher, parse_host_pattern
from ._options import timeout_range, validate_thread_limit, validate_timeout
from .errors import SettingsError

OPTION_NAMES: tuple[str, ...] = (
    "timeout",
    "shutdown_timeout",
    "thread_limit",
    "on_error",
    "on_complete",
)
# The hooks among the options, and how many positional arguments each is called with.
HOOK_ARITY = {"on_error": 3, "on_complete": 2}
PYPROJECT_TABLE = "asgi-cleanup"

_TOP_KEYS = ("handlers", "host", "location", *OPTION_NAMES)
_HOST_KEYS = ("name", "handlers")
_LOCATION_KEYS = ("path", "host", "extensions", "handlers")
_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}


def read_toml(path: str) -> tuple[dict[str, Any], str]:
    """Parse a settings file; return its settings table and that table's label.

    For a file named ``pyproject.toml`` the table is ``[tool.asgi-cleanup]``.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read settings file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from exc
    if os.path.basename(path) != "pyproject.toml":
        return data, "top level"
    tool = data.get("tool")
    table = tool.get(PYPROJECT_TABLE) if isinstance(tool, dict) else None
    if table is None:
        close = difflib.get_close_matches(
            PYPROJECT_TABLE, tool if isinstance(tool, dict) else (), n=1
        )
        hint = f"; found [tool.{close[0]}], did you mean [tool.{PYPROJECT_TABLE}]?" if close else ""
        raise SettingsError(f"{path}: no [tool.{PYPROJECT_TABLE}] table{hint}")
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: tool.{PYPROJECT_TABLE} must be a table, not {_kind(table)}")
    return table, f"[tool.{PYPROJECT_TABLE}]"


class Loader:
    """Validates one source's data and resolves its references.

    ``toml`` selects the file's rules (references only, ``false`` for no limit) over a
    mapping's (callables and ``None`` too). Every problem raises :class:`SettingsError`.
    """

    def __init__(self, source: str, top: str, *, toml: bool = False) -> None:
        self.source = source
        self.top = top
        self.toml = toml
        self.resolver = Resolver()

    def fail(self, table: str, problem: str, key: str | None = None, *entry: object) -> NoReturn:
        where = f"{self.source}: {table}"
        if key is not None:
            where += f", key {key!r}"
        if entry:
            where += f", entry {subject(entry[0])}"
        raise SettingsError(f"{where}: {problem}")

    def load(self, data: Mapping[Any, object]) -> tuple[dict[str, object], Matcher]:
        """The validated options (only those present) and the contexts, ready to match."""
        self.check_keys(self.top, data, _TOP_KEYS, ())
        options = {name: self.option(name, data[name]) for name in OPTION_NAMES if name in data}
        server = self.handlers(self.top, data.get("handlers", []), "server-wide")
        hosts = [self.host(i, t) for i, t in enumerate(self.tables(data, "host"))]
        locations = [self.location(i, t) for i, t in enumerate(self.tables(data, "location"))]
        return options, Matcher(server, hosts, locations)

    def check_keys(
        self,
        table: str,
        data: Mapping[Any, object],
        allowed: Sequence[str],
        required: Sequence[str],
    ) -> None:
        for key in data:
            if not isinstance(key, str):
                self.fail(table, f"key {key!r} is not a string")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(allowed)}"
                self.fail(table, f"unknown key {key!r}; {hint}")
        for key in required:
            if key not in data:
                self.fail(table, f"missing key {key!r}")

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
            self.fail(self.top, f"{problem}; got {_kind(value)}", name)

    def hook(self, name: str, value: object) -> Handler | None:
        if value is None and not self.toml:
            return None
        if not isinstance(value, str) and (self.toml or not callable(value)):
            wanted = "a handler reference" + ("" if self.toml else ", a callable or None")
            self.fail(self.top, f"must be {wanted}, not {_kind(value)}", name)
        try:
            found = self.resolver.resolve(value) if isinstance(value, str) else value
            return check_callable(found, HOOK_ARITY[name])
        except (TypeError, ValueError) as exc:
            self.fail(self.top, str(exc), name, value)

    def handlers(self, table: str, value: object, context: str) -> list[Entry]:
        if isinstance(value, str):
            self.fail(
                table, f'must be an array of handler references; write ["{value}"]', "handlers"
            )
        if not isinstance(value, list | tuple):
            self.fail(
                table, f"must be an array of handler references, not {_kind(value)}", "handlers"
            )
        entries: list[Entry] = []
        for item in value:
            try:
                if isinstance(item, str):
                    entries.append((item, check_callable(self.resolver.resolve(item), 1), context))
                elif not self.toml and callable(item):
                    entries.append((callable_reference(item), check_callable(item, 1), context))
                else:
                    wanted = "a handler reference" + ("" if self.toml else " or a callable")
                    self.fail(table, f"must be {wanted}, not {_kind(item)}", "handlers", item)
            except (TypeError, ValueError) as exc:
                self.fail(table, str(exc), "handlers", item)
        return entries

    def tables(self, data: Mapping[Any, object], key: str) -> list[Mapping[Any, object]]:
        value = data.get(key, [])
        if isinstance(value, Mapping):
            self.fail(self.top, f"must be an array of tables: write [[{key}]], not [{key}]", key)
        if not isinstance(value, list | tuple):
            self.fail(self.top, f"must be an array of tables ([[{key}]]), not {_kind(value)}", key)
        for index, table in enumerate(value):
            if not isinstance(table, Mapping):
                self.fail(f"{key}[{index}]", f"must be a table, not {_kind(table)}")
        return list(value)

    def host_name(self, table: str, key: str, value: object) -> str:
        if not isinstance(value, str):
            self.fail(table, f"must be a host name string, not {_kind(value)}", key)
        try:
            return parse_host_pattern(value)
        except ValueError as exc:
            self.fail(table, f"{value!r} {exc}", key)

    def host(self, index: int, table: Mapping[Any, object]) -> Host:
        label = f"host[{index}]"
        self.check_keys(label, table, _HOST_KEYS, ("name", "handlers"))
        pattern = self.host_name(label, "name", table["name"])
        return Host(pattern, tuple(self.handlers(label, table["handlers"], f"{label} {pattern}")))

    def location(self, index: int, table: Mapping[Any, object]) -> Location:
        label = f"location[{index}]"
        self.check_keys(label, table, _LOCATION_KEYS, ("path", "handlers"))
        path = table["path"]
        if not isinstance(path, str):
            self.fail(label, f"must be a URL path string, not {_kind(path)}", "path")
        if not path.startswith("/"):
            self.fail(label, f"{path!r} must start with '/'", "path")
        if "?" in path or "#" in path:
            self.fail(
                label,
                f"{path!r} must be a path alone: request paths never hold a query string or "
                "fragment, so it could never match",
                "path",
            )
        host = self.host_name(label, "host", table["host"]) if "host" in table else None
        extensions = self.extensions(label, table["extensions"]) if "extensions" in table else ()
        context = f"{label} {path}" + (f" host {host}" if host else "")
        context += f" | {' '.join(extensions)}" if extensions else ""
        entries = tuple(self.handlers(label, table["handlers"], context))
        return Location(path.rstrip("/"), host, extensions, entries)

    def extensions(self, table: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list | tuple) or not value:
            found = "an empty array" if isinstance(value, list | tuple) else _kind(value)
            self.fail(table, f"must be a non-empty array like ['.csv'], not {found}", "extensions")
        for item in value:
            if not isinstance(item, str):
                self.fail(table, f"must be a string, not {_kind(item)}", "extensions", item)
            if len(item) < 2 or not item.startswith(".") or "/" in item:
                problem = "must be a dot and a suffix without '/', as in '.csv'"
                self.fail(table, problem, "extensions", item)
        return tuple(value)


def _kind(value: object) -> str:
    kind = _KINDS.get(type(value)) or (
        "a table" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    )
    text = repr(value)
    return f"{kind} ({text if len(text) <= 40 else text[:37] + '...'})"


def subject(value: object) -> str:
    """How an entry is named in a message: a reference as written, a callable by name."""
    return callable_reference(value) if callable(value) else repr(value)
