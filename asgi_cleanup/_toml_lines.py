"""Line numbers for settings errors. ``tomllib`` gives positions only for syntax errors, so
the text is scanned for table headers (``[[location]]``) and ``key =`` lines. Only the
plain spellings are found (not dotted keys, inline tables or quoted header parts); where the
headers found do not tally with the tables parsed, no line is given rather than a wrong one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# Multi-line strings, whose lines are not headers or keys, and the line starts that are.
_MULTILINE = re.compile(r'""".*?""""{0,2}|\'\'\'.*?\'\'\'\'{0,2}', re.DOTALL)
_HEADER = re.compile(r"[ \t]*(\[\[?)[ \t]*([A-Za-z0-9_.-]+)[ \t]*\]\]?[ \t]*(?:#.*)?$")
_KEY = re.compile(r"[ \t]*([A-Za-z0-9_-]+)[ \t]*=")
_INDEXED = re.compile(r"(\w+)\[(\d+)\]$")


class _Section:
    def __init__(self, line: int) -> None:
        self.line = line
        self.keys: dict[str, int] = {}


class Lines:
    """Where the settings table (``prefix``: ``""``, or ``"tool.asgi-cleanup."`` in a
    pyproject) and its ``[[host]]``/``[[location]]`` tables and their keys are."""

    def __init__(self, text: str, prefix: str, data: Mapping[str, object]) -> None:
        self.top = _Section(0)
        self.arrays: dict[str, list[_Section]] = {}
        skipped = {
            line
            for match in _MULTILINE.finditer(text)
            for line in range(
                text.count("\n", 0, match.start()) + 2, text.count("\n", 0, match.end()) + 2
            )
        }
        current: _Section | None = self.top if not prefix else None
        for number, line in enumerate(text.splitlines(), 1):
            if number in skipped:
                continue
            header = _HEADER.match(line)
            if header:
                current = self._section(header.group(1), header.group(2), prefix, number)
            elif current is not None and (key := _KEY.match(line)):
                current.keys.setdefault(key.group(1), number)
        for name, sections in list(self.arrays.items()):
            tables = data.get(name)
            if not isinstance(tables, list) or len(tables) != len(sections):
                del self.arrays[name]

    def _section(self, brackets: str, name: str, prefix: str, number: int) -> _Section | None:
        if brackets == "[" and prefix and name == prefix[:-1]:
            self.top = _Section(number)
            return self.top
        if brackets == "[[" and name.startswith(prefix) and "." not in name[len(prefix) :]:
            section = _Section(number)
            self.arrays.setdefault(name[len(prefix) :], []).append(section)
            return section
        return None

    def find(self, table: str, key: str | None) -> int | None:
        """The line of ``key`` in ``table`` (``"top level"``, ``"host[0]"``...), else of the
        table's header; ``None`` if unknown."""
        indexed = _INDEXED.match(table)
        if indexed:
            sections = self.arrays.get(indexed.group(1), [])
            index = int(indexed.group(2))
            if index >= len(sections):
                return None
            section = sections[index]
        else:
            section = self.top
        found = section.keys.get(key) if isinstance(key, str) else None
        return found or section.line or None
