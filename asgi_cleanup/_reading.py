"""Reading a settings file defensively (SPEC 4), and finding its tables' and keys' lines.

Every problem is a :class:`SettingsError` naming the file, never a hang (a FIFO), a
``MemoryError`` (``/dev/zero``) or a ``RecursionError`` (deep nesting).
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from typing import Any

from ._describe import kind_of
from .errors import SettingsError

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
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
}
_KINDS |= {stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


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
        raise SettingsError(
            f"{path}: cannot read settings file: {exc.strerror or exc}{_tried(path)}"
        ) from None
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from None
    depth = 0
    for match in _TOKENS.finditer(text):
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(match.group(), 0)
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
        kind = _KINDS.get(stat.S_IFMT(status.st_mode), "not a regular file")
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
        tables = data.get(name)
        if not isinstance(tables, list) or len(tables) != count:
            found = {place: n for place, n in found.items() if not place[0].startswith(f"{name}[")}
    return found
