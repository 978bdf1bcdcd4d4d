"""Validating a settings source's data: every key checked, every reference resolved. Every
problem is a line of the one :class:`SettingsError`: file[:line], table, key, entry, what."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeVar

from . import _options
from ._describe import kind_of, safe_repr
from ._handlers import callable_reference, check_callable, resolve, subject
from ._matching import Entry, Handler, Host, Location, Matcher
from .errors import SettingsError

T = TypeVar("T")
Table = Mapping[Any, object]
_ARRAY = (list, tuple)


class _Problem(Exception):
    """What is wrong, and the array item it is about, if any; noted where it was checked."""


def _fail(problem: str, *entry: object) -> NoReturn:
    raise _Problem(problem, *entry)


def _is(value: object, kind: type | tuple[type, ...]) -> bool:
    # isinstance() would ask the object its __class__, which a proxy may raise for.
    return issubclass(type(value), kind)


def _need(value: object, kind: type | tuple[type, ...], what: str, *entry: object) -> Any:
    if not _is(value, kind):
        _fail(f"must be {what}, not {kind_of(value)}", *entry)
    return value


def _host_name(value: object) -> str:
    """A ``[[host]]`` name or location ``host`` lower-cased, without trailing dot, as IDNA.
    ``"*.example.com"`` is a wildcard (``*`` only as the whole first label); ``"[::1]"`` and
    ``"::1"`` are one name; empty names, ports, whitespace and ``/`` are refused."""
    host: str = _need(value, str, "a host name string").lower()
    shown = safe_repr(value)
    if not host or any(c.isspace() or c == "/" for c in host):
        _fail(f"{shown} is not a host name")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host.count(":") == 1:
        _fail(f"{shown} must not include a port: hosts are compared with the port removed")
    wildcard = "*." if host.startswith("*.") else ""
    if "*" in host.removeprefix(wildcard):
        _fail(f"{shown} may only use '*' as its whole first label, as in '*.example.com'")
    if not (rest := host.removeprefix(wildcard).rstrip(".")):
        _fail(f"{shown} is not a host name")
    try:
        return wildcard + (rest if rest.isascii() else rest.encode("idna").decode())
    except UnicodeError as exc:
        _fail(f"{shown} is not a valid internationalised host name ({exc})")


def _location_path(value: object) -> str:
    path: str = _need(value, str, "a URL path string")
    if not path.startswith("/"):
        _fail(f"{safe_repr(path)} must start with '/'")
    if "?" in path or "#" in path:
        problem = "must be a path alone: request paths never hold a query string or fragment"
        _fail(f"{safe_repr(path)} {problem}, so it could never match")
    return path


def _extensions(value: object) -> tuple[str, ...]:
    what = "a non-empty array like ['.csv']"
    items: Sequence[Any] = _need(value, _ARRAY, what)
    if not items:
        _fail(f"must be {what}, not an empty array")
    for item in items:
        if len(_need(item, str, "a string", item)) < 2 or item[0] != "." or "/" in item:
            _fail("must be a dot and a suffix without '/', as in '.csv'", item)
    return tuple(items)


def _references(value: object) -> Sequence[Any]:
    if _is(value, str):
        _fail(f'must be an array of handler references; write ["{value}"]')
    return _need(value, _ARRAY, "an array of handler references")  # type: ignore[no-any-return]


def _tables(key: str, value: object) -> Sequence[Any]:
    if _is(value, Mapping):
        _fail(f"must be an array of tables: write [[{key}]], not [{key}]")
    return _need(value, _ARRAY, f"an array of tables ([[{key}]])")  # type: ignore[no-any-return]


class Loader:
    """Validates one source's data and resolves its references: by a file's rules (``toml``:
    references only, ``false`` for no limit) or a mapping's (callables and ``None`` too)."""

    def __init__(self, source: str, top: str, toml: bool = False, lines: Any = None) -> None:
        self.source, self.top, self.toml, self.lines = source, top, toml, lines or {}
        self.resolved: dict[tuple[str, str], object] = {}
        self.problems: list[str] = []
        self.cause: BaseException | None = None  # of the first problem: the error's cause

    def note(self, table: str, problem: str, key: Any = None, *entry: Any, at: Any = None) -> None:
        """Note ``file[:line]: table[, key k][, entry e]: problem``; ``at``: the line's key."""
        at = at or (key if isinstance(key, str) else None)
        line = self.lines.get((table, at)) or self.lines.get((table, None))
        where = f"{self.source}{f':{line}' if line else ''}: {table}"
        where += f", key {safe_repr(key)}" if key is not None else ""
        where += f", entry {subject(entry[0])}" if entry else ""
        self.problems.append(f"{where}: {problem}")

    def check(self, table: str, key: str, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)``, or ``None`` with its problem noted at ``table`` and ``key``."""
        try:
            return check(*args)
        except _Problem as problem:
            self.note(table, problem.args[0], key, *problem.args[1:])
            self.cause = self.cause or problem.__context__
        except SettingsError as nested:  # a handler module's own settings failed
            self.problems.append(str(nested))
            self.cause = self.cause or nested
        return None

    def load(self, data: Table) -> tuple[dict[str, object], Matcher]:
        """Validated options (those present) and contexts; :raises SettingsError: all problems."""
        top = self.top
        self.keys_ok(top, data, ("handlers", "host", "location", *_options.OPTION_NAMES))
        given = [name for name in _options.OPTION_NAMES if name in data]
        options = {name: self.check(top, name, self.option, name, data[name]) for name in given}
        server = self.handlers(top, data.get("handlers", []), "server-wide")
        contexts: dict[str, list[Any]] = {"host": [], "location": []}
        for name, build in (("host", self.host), ("location", self.location)):
            tables = self.check(top, name, _tables, name, data.get(name, [])) or []
            for i, table in enumerate(tables):
                if not _is(table, Mapping):
                    self.note(f"{name}[{i}]", f"must be a table, not {kind_of(table)}")
                elif context := build(f"{name}[{i}]", table):
                    contexts[name].append(context)
        if self.problems:
            raise SettingsError("\n".join(self.problems)) from self.cause
        return options, Matcher(server, contexts["host"], contexts["location"])

    def keys_ok(
        self, table: str, data: Table, keys: Sequence[str], required: Sequence[str] = ()
    ) -> bool:
        """Note unknown and missing keys; whether none is missing."""
        suggested = set()
        for key in data:
            if not _is(key, str):
                self.note(table, f"key {safe_repr(key)} is not a string")
            elif key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"expected {', '.join(keys)}"
                self.note(table, f"unknown key {safe_repr(key)}; {hint}", at=key)
                suggested.update(close)
        missing = [key for key in required if key not in data]
        for key in missing:
            if key not in suggested:  # "did you mean" has said it
                self.note(table, f"missing key {key!r}")
        return not missing

    def host(self, label: str, table: Table) -> Host | None:
        if not self.keys_ok(label, table, ("name", "handlers"), ("name", "handlers")):
            return None
        name = self.check(label, "name", _host_name, table["name"])
        return Host(name or "", self.handlers(label, table["handlers"], f"{label} {name}"))

    def location(self, label: str, table: Table) -> Location | None:
        keys = ("path", "host", "extensions", "handlers")
        if not self.keys_ok(label, table, keys, ("path", "handlers")):
            return None
        path = self.check(label, "path", _location_path, table["path"]) or ""
        host = self.check(label, "host", _host_name, table["host"]) if "host" in table else None
        extensions: tuple[str, ...] = ()
        if "extensions" in table:
            extensions = self.check(label, "extensions", _extensions, table["extensions"]) or ()
        context = f"{label} {path}" + (f" host {host}" if host else "")
        context += f" | {' '.join(extensions)}" if extensions else ""
        entries = self.handlers(label, table["handlers"], context)
        return Location(path.rstrip("/"), host, extensions, entries)

    def option(self, name: str, value: object) -> object:
        if name in _options.HOOK_ARITY:
            return None if value is None and not self.toml else self.resolve(value, name)
        try:
            if name == "telemetry":
                return _options.validate_flag(name, value)
            if name.endswith("_limit"):
                no_cap = value is False and name == "async_limit"  # a file spells None false
                return None if no_cap else _options.validate_limit(name, value)
            if name in _options.QUEUE_OPTIONS:
                from .queues import validate_option

                return validate_option(name, value)
            return None if value is False else _options.validate_timeout(name, value)
        except (TypeError, ValueError) as exc:
            if "timeout" not in name:
                message = str(exc)
                if self.toml and name.endswith("_limit"):
                    message = message.replace(" or None", ", or false for no cap")
                elif self.toml:  # telemetry
                    message = message.replace("True or False", "true or false")
                _fail(message)
            # The validator's words are for keyword arguments; a file spells "no limit" false.
            no_limit = "false" if self.toml else "None or False"
            seconds = f"a number of seconds {_options.timeout_range(name)}"
            _fail(f"must be {seconds}, or {no_limit} for no limit; got {kind_of(value)}")

    def resolve(self, item: object, hook: str | None = None) -> Handler:
        """A handler (or ``hook``) entry resolved and checked."""
        if not _is(item, str) and (self.toml or not callable(item)):
            wanted = ", a callable or None" if hook else " or a callable"
            wanted = "a handler reference" + ("" if self.toml else wanted)
            _fail(f"must be {wanted}, not {kind_of(item)}", *(() if hook else (item,)))
        try:
            if type(item) is str and item.startswith(("job:celery:", "job:arq:")):
                from .queues import directive_job  # a queue's job (docs/queues.md)

                return check_callable(directive_job(item), 1)
            found = resolve(item, self.resolved) if _is(item, str) else item  # type: ignore[arg-type]
            return check_callable(found, _options.HOOK_ARITY[hook] if hook else 1)
        except (TypeError, ValueError) as exc:
            _fail(str(exc), item)
        except SettingsError:
            raise
        except Exception as exc:  # looking at a user's object raised
            _fail(f"cannot be checked: {type(exc).__name__}: {exc}", item)

    def handlers(self, table: str, value: object, context: str) -> tuple[Entry, ...]:
        """The entries of a ``handlers`` array; each problem noted, the entry left out."""
        entries = []
        for item in self.check(table, "handlers", _references, value) or ():
            if (handler := self.check(table, "handlers", self.resolve, item)) is not None:
                ref = item if _is(item, str) else callable_reference(handler)
                entries.append((ref, handler, context))
        return tuple(entries)
