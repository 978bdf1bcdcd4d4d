"""Settings for directive cleanups: read a TOML file or take a mapping, validate, resolve.

Everything is checked at load, so a bad file stops startup with a :class:`SettingsError`,
never a hang (a FIFO), a ``MemoryError`` (``/dev/zero``) or a ``RecursionError`` (SPEC 4).
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import stat
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._describe import kind_of
from ._handlers import callable_reference, handler_key
from ._loader import Loader
from ._matching import DirectivesFor, Entry, Host, Location, Matcher, dedupe, normalize_host
from ._options import OPTION_NAMES, validate_hook
from .errors import SettingsError

Dropped = tuple[Entry, Entry]  # (entry left out, entry kept of the same handler)
__all__ = ["OPTION_NAMES", "Settings", "load_settings", "validate_hook", "validate_on_error"]


validate_on_error = functools.partial(validate_hook, "on_error")


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
        """``(reference as written, callable, context)`` in run order for a Host header value
        (port ignored; ``None`` or ``""``: none) and a ``scope["path"]`` less ``root_path``."""
        return self._deduped(host, path, root_path)[0]

    def dropped(self, host: str | None, path: str, root_path: str = "") -> list[Dropped]:
        """What :meth:`explain` leaves out, as listed again in a matching context."""
        return self._deduped(host, path, root_path)[1]

    def _deduped(
        self, host: str | None, path: str, root_path: str
    ) -> tuple[list[Entry], list[Dropped]]:
        return dedupe(self._matcher.listed(normalize_host(host) if host else None, path, root_path))

    @property
    def handlers(self) -> list[object]:
        """Every handler the source names, in all its contexts (repeats included)."""
        contexts: list[Host | Location] = [*self._matcher.hosts, *self._matcher.locations]
        every = [*self._matcher.server, *(e for context in contexts for e in context.entries)]
        return [entry[1] for entry in every]

    @property
    def distinct_handlers(self) -> int:
        """How many different handlers the source names, in all its contexts."""
        return len({handler_key(handler) for handler in self.handlers})

    def summary(self) -> str:
        """One line: how many handlers and contexts, and the options set."""
        m = self._matcher
        counts = [len(dedupe(m.server)[0]), len(m.hosts), len(m.locations), self.distinct_handlers]
        nouns = ["server-wide handler", "host", "location", "distinct handler"]
        text = ", ".join(f"{n} {w}{'s' * (n != 1)}" for n, w in zip(counts, nouns, strict=True))
        options = ", ".join(f"{k}={_shown(v)}" for k, v in self.options.items())
        return text + (f"; options: {options}" if options else "")


def _shown(value: object) -> str:
    return callable_reference(value) if callable(value) else repr(value)


def load_settings(source: str | os.PathLike[str] | Mapping[str, Any]) -> Settings:
    """Settings from a TOML file (a ``pyproject.toml``'s ``[tool.asgi-cleanup]``) or a
    mapping of the same shape, where ``None`` means no limit or no hook and handlers may be
    callables too. Handler modules are imported with the current ``sys.path``.

    :raises SettingsError: for any problem; :raises TypeError: for neither path nor mapping.
    """
    if isinstance(source, Mapping):
        return Settings("<mapping>", *Loader("<mapping>", "top level").load(source))
    path = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    if not isinstance(path, str):
        raise TypeError(f"settings must be a path or a mapping, not {type(source).__name__}")
    data, top, text = read_toml(path)
    loader = Loader(path, top, toml=True, lines=find_lines(text, top, data))
    return Settings(path, *loader.load(data))


PYPROJECT_TABLE = "asgi-cleanup"
MAX_BYTES = 1024 * 1024
MAX_DEPTH = 16  # arrays and tables open at once: settings need 3, tomllib recurses per level

# Strings (whose brackets and lines do not count), comments and brackets. Valid TOML is
# tokenised exactly; anything else fails in tomllib anyway.
_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?""""{0,2}|\'\'\'.*?\'\'\'\'{0,2}|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''
    r"|#[^\n]*|[\[\]{}]",
    re.DOTALL,
)
_HEADER = re.compile(r"[ \t]*(\[\[?)[ \t]*([A-Za-z0-9_.-]+)[ \t]*\]\]?[ \t]*(?:#.*)?$")
_KEY = re.compile(r"[ \t]*([A-Za-z0-9_-]+)[ \t]*=")
_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
}


def read_toml(path: str) -> tuple[dict[str, Any], str, str]:
    """The settings table of a regular UTF-8 TOML file of at most 1 MiB (a ``pyproject.toml``'s
    ``[tool.asgi-cleanup]``), its label (``"top level"``, ``"[tool.asgi-cleanup]"``), the text."""
    # stat() before open(): opening a FIFO blocks until a writer comes, and opening a device
    # can act on it. The opened file is checked again: it may have been replaced meanwhile.
    try:
        _check_regular(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as file:
            _check_regular(path, os.fstat(fd))
            raw = file.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise SettingsError(f"{path}: settings file is larger than 1 MiB")
        text = raw.decode("utf-8")
    except OSError as exc:
        problem = f"cannot read settings file: {exc.strerror or exc}"
        raise SettingsError(f"{path}: {problem}{_tried(path)}") from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from None
    depth = 0
    for match in _TOKENS.finditer(text):
        depth += (match.group() in ("[", "{")) - (match.group() in ("]", "}"))
        if depth > MAX_DEPTH:
            line = text.count("\n", 0, match.start()) + 1
            problem = f"nested more than {MAX_DEPTH} arrays or tables deep"
            raise SettingsError(f"{path}: line {line}: {problem}; a settings file needs at most 3")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # a backstop: the depth check stops valid TOML first
        raise SettingsError(f"{path}: invalid TOML: nested too deeply") from None
    if os.path.basename(path) != "pyproject.toml":
        return data, "top level", text
    tool = data.get("tool")
    tool = tool if isinstance(tool, dict) else {}
    table = tool.get(PYPROJECT_TABLE)
    if table is None:
        close = difflib.get_close_matches(PYPROJECT_TABLE, tool, n=1)
        hint = f"; found [tool.{close[0]}], did you mean [tool.{PYPROJECT_TABLE}]?" if close else ""
        raise SettingsError(f"{path}: no [tool.{PYPROJECT_TABLE}] table{hint}")
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: tool.{PYPROJECT_TABLE} must be a table, not {kind_of(table)}")
    return table, f"[tool.{PYPROJECT_TABLE}]", text


def _check_regular(path: str, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(status.st_mode), "not a regular file")
        raise SettingsError(f"{path}: cannot read settings file: it is {kind}, not a regular file")
    if status.st_size > MAX_BYTES:
        raise SettingsError(f"{path}: settings file is larger than 1 MiB ({status.st_size} bytes)")


def _tried(path: str) -> str:
    """Where a relative path was looked for: the server may run elsewhere than one thinks."""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""
    if os.path.isabs(path):
        return ""
    return f" (looked for {os.path.join(cwd, path)}: relative to the working directory {cwd})"


def find_lines(text: str, top: str, data: dict[str, Any]) -> dict[tuple[str, str | None], int]:
    """Line numbers by ``(table, key)``, and ``(table, None)`` for a header; tables labelled
    ``top``, ``"host[0]"``... Only plain headers and ``key =`` lines count (not dotted keys,
    inline tables or quoted names), outside multi-line strings; an array whose headers do not
    tally with its tables gets no lines rather than wrong ones."""
    prefix = "" if top == "top level" else f"tool.{PYPROJECT_TABLE}."
    # Multi-line strings, the only tokens that hold a newline, become just their newlines.
    text = _TOKENS.sub(lambda token: "\n" * token.group().count("\n") or token.group(), text)
    found: dict[tuple[str, str | None], int] = {}
    counts: dict[str, int] = {}
    table = None if prefix else top
    for number, line in enumerate(text.splitlines(), 1):
        if header := _HEADER.match(line):
            brackets, name = header.groups()
            rest, table = name.removeprefix(prefix), None
            if brackets == "[" and prefix and name == prefix[:-1]:
                table = top
            elif brackets == "[[" and name.startswith(prefix) and "." not in rest:
                counts[rest] = counts.get(rest, 0) + 1
                table = f"{rest}[{counts[rest] - 1}]"
            if table:
                found[table, None] = number
        elif table and (key := _KEY.match(line)):
            found.setdefault((table, key.group(1)), number)
    for name, count in counts.items():
        if not isinstance(tables := data.get(name), list) or len(tables) != count:
            found = {place: n for place, n in found.items() if not place[0].startswith(f"{name}[")}
    return found
