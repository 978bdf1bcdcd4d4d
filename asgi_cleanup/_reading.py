"""Reading a settings file defensively (SPEC 4): a regular file of at most 1 MiB, UTF-8 TOML
nested no deeper than a settings file can need, and the ``[tool.asgi-cleanup]`` table of a
``pyproject.toml``. Every problem is a :class:`SettingsError` naming the file, never a hang
(a FIFO), a ``MemoryError`` (``/dev/zero``) or a ``RecursionError`` (deep nesting)."""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from collections.abc import Mapping
from typing import Any

from ._describe import safe_repr
from .errors import SettingsError

PYPROJECT_TABLE = "asgi-cleanup"
MAX_BYTES = 1024 * 1024
#: Brackets and braces open at once. A settings file needs 3 (``[[location]]``, then
#: ``extensions = [...]``; pyproject's headers are no deeper); tomllib recurses per level.
MAX_DEPTH = 16

# The tokens that matter for nesting: strings (whose brackets do not count), comments, and
# brackets. Valid TOML is tokenised exactly; anything else fails in tomllib anyway.
_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?""""{0,2}|\'\'\'.*?\'\'\'\'{0,2}|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\''
    r"|#[^\n]*|[\[\]{}]",
    re.DOTALL,
)


def read_toml(path: str) -> tuple[dict[str, Any], str, str]:
    """Parse a settings file; return its settings table, that table's label and the file's
    text (to locate keys by line).

    For a file named ``pyproject.toml`` the table is ``[tool.asgi-cleanup]``.
    """
    text = _read_text(path)
    _check_depth(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # not reached past _check_depth: kept as a backstop
        raise SettingsError(f"{path}: invalid TOML: nested too deeply") from None
    if os.path.basename(path) != "pyproject.toml":
        return data, "top level", text
    tool = data.get("tool")
    table = tool.get(PYPROJECT_TABLE) if isinstance(tool, dict) else None
    if table is None:
        close = difflib.get_close_matches(
            PYPROJECT_TABLE, tool if isinstance(tool, dict) else (), n=1
        )
        hint = f"; found [tool.{close[0]}], did you mean [tool.{PYPROJECT_TABLE}]?" if close else ""
        raise SettingsError(f"{path}: no [tool.{PYPROJECT_TABLE}] table{hint}")
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: tool.{PYPROJECT_TABLE} must be a table, not {kind_of(table)}")
    return table, f"[tool.{PYPROJECT_TABLE}]", text


def _read_text(path: str) -> str:
    # stat() before open(): opening a FIFO blocks until a writer comes, and opening a device
    # can act on it. The opened file is checked again (it may have been replaced meanwhile).
    try:
        _check_regular(path, os.stat(path))
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as file:
            _check_regular(path, os.fstat(fd))
            raw = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise SettingsError(
            f"{path}: cannot read settings file: {exc.strerror or exc}{_tried(path)}"
        ) from None
    if len(raw) > MAX_BYTES:
        raise SettingsError(f"{path}: settings file is larger than 1 MiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from None


def _check_regular(path: str, status: os.stat_result) -> None:
    mode = status.st_mode
    if stat.S_ISREG(mode):
        if status.st_size > MAX_BYTES:
            raise SettingsError(
                f"{path}: settings file is larger than 1 MiB ({status.st_size} bytes)"
            )
        return
    kind = (
        "a directory"
        if stat.S_ISDIR(mode)
        else "a FIFO (named pipe)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    raise SettingsError(f"{path}: cannot read settings file: it is {kind}, not a regular file")


def _tried(path: str) -> str:
    """For a relative path: where it was looked for, since the working directory may not be
    the one the user thinks of (a server started from elsewhere)."""
    if os.path.isabs(path):
        return ""
    try:
        cwd = os.getcwd()
    except OSError:
        return ""
    return f" (looked for {os.path.join(cwd, path)}: relative to the working directory {cwd})"


def _check_depth(path: str, text: str) -> None:
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                line = text.count("\n", 0, match.start()) + 1
                raise SettingsError(
                    f"{path}: line {line}: nested more than {MAX_DEPTH} arrays or tables deep; "
                    "a settings file needs at most 3"
                )
        elif token in ("]", "}"):
            depth -= 1


def kind_of(value: object) -> str:
    """What a value is, for a message: ``a string ('x')``, its repr cut short."""
    kind = _KINDS.get(type(value)) or (
        "a table" if issubclass(type(value), Mapping) else f"a {type(value).__name__}"
    )
    return f"{kind} ({safe_repr(value, 60)})"


_KINDS = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
