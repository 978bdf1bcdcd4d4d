"""Which directive cleanups apply to a request: host and location matching.

Everything that does not depend on the request is computed when the settings load. A
request's host selects a *plan* (the server-wide and host handlers, already ordered and
deduplicated, plus the locations that can apply under that host); a plan's locations are
then matched against the route path. Plans are shared by every host that matches the same
contexts. In front of both steps sits one cache of answers (:mod:`asgi_cleanup._answers`).
Every cache is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from ._answers import MAX_CACHED_PATH, by_host_and_path, constant, path_only, route_path
from ._handlers import handler_key
from ._hosts import host_matches, normalize_host
from ._types import Scope

Handler = Callable[..., object]
#: ``(reference as written, resolved callable, context label)``
Entry = tuple[str, Handler, str]
DirectivesFor = Callable[[Scope], tuple[Handler, ...]]

#: Plans' path caches (see ``_answers`` for the bounds every cache keeps).
PATH_CACHE_SIZE = 2048


class Host(NamedTuple):
    """A ``[[host]]`` context."""

    pattern: str
    entries: tuple[Entry, ...]


class Location(NamedTuple):
    """A ``[[location]]`` context; ``path`` is normalised (no trailing ``/``; ``""`` for root)."""

    path: str
    host: str | None
    extensions: tuple[str, ...]
    entries: tuple[Entry, ...]

    def matches(self, path: str) -> bool:
        """Whole-segment prefix match, then the extension filter (case-sensitive)."""
        own = self.path
        if own and not (path.startswith(own) and (len(path) == len(own) or path[len(own)] == "/")):
            return False
        return not self.extensions or path.endswith(self.extensions)


def dedupe(entries: Iterable[Entry]) -> list[Entry]:
    """Keep each handler (see ``handler_key``) at its first place only."""
    return dedupe_reporting(entries)[0]


def dedupe_reporting(entries: Iterable[Entry]) -> tuple[list[Entry], list[tuple[Entry, Entry]]]:
    """``dedupe``, and each entry dropped with the kept entry of the same handler."""
    first: dict[object, Entry] = {}
    kept: list[Entry] = []
    dropped: list[tuple[Entry, Entry]] = []
    for entry in entries:
        key = handler_key(entry[1])
        if key in first:
            dropped.append((entry, first[key]))
        else:
            first[key] = entry
            kept.append(entry)
    return kept, dropped


class _Plan:
    """What applies under one host, before the path is looked at."""

    __slots__ = ("base", "base_entries", "cache", "locations")

    def __init__(self, base_entries: list[Entry], locations: tuple[Location, ...]) -> None:
        self.base_entries = base_entries
        self.base = tuple(entry[1] for entry in base_entries)
        self.locations = locations
        self.cache: dict[str, tuple[Handler, ...]] = {}

    def entries(self, path: str) -> list[Entry]:
        matched = [loc.entries for loc in self.locations if loc.matches(path)]
        if not matched:
            return self.base_entries
        return dedupe([*self.base_entries, *(e for entries in matched for e in entries)])

    def lookup(self, path: str) -> tuple[Handler, ...]:
        handlers = self.cache.get(path)
        if handlers is None:
            entries = self.entries(path)
            handlers = self.base if entries is self.base_entries else tuple(e[1] for e in entries)
            if len(path) <= MAX_CACHED_PATH:
                if len(self.cache) >= PATH_CACHE_SIZE:
                    self.cache.clear()
                self.cache[path] = handlers
        return handlers


class Matcher:
    """All contexts of one settings source, ready to match requests."""

    def __init__(
        self, server: Sequence[Entry], hosts: Sequence[Host], locations: Sequence[Location]
    ) -> None:
        self.listed_server = tuple(server)
        self.server = tuple(dedupe(server))
        self.hosts = tuple(hosts)
        # Broader before narrower; sorted() is stable, so ties stay in file order.
        self.locations = tuple(sorted(locations, key=lambda loc: len(loc.path)))
        self.uses_host = bool(hosts) or any(loc.host is not None for loc in locations)
        self._plans: dict[tuple[tuple[int, ...], tuple[int, ...]], _Plan] = {}

    def plan(self, host: str | None) -> _Plan:
        """The (shared) plan for a normalised host, or for no host at all."""
        host_ids = tuple(i for i, h in enumerate(self.hosts) if host_matches(h.pattern, host))
        location_ids = tuple(
            i
            for i, loc in enumerate(self.locations)
            if loc.host is None or host_matches(loc.host, host)
        )
        key = (host_ids, location_ids)
        plan = self._plans.get(key)
        if plan is None:
            base = dedupe([*self.server, *(e for i in host_ids for e in self.hosts[i].entries)])
            plan = _Plan(base, tuple(self.locations[i] for i in location_ids))
            self._plans[key] = plan
        return plan

    def explain(self, host: str | None, path: str, root_path: str = "") -> list[Entry]:
        """Entries in run order for a raw host value (port allowed) and a full path."""
        normalized = normalize_host(host) if host else None
        return list(self.plan(normalized or None).entries(route_path(path, root_path)))

    def dropped(
        self, host: str | None, path: str, root_path: str = ""
    ) -> list[tuple[Entry, Entry]]:
        """The entries ``explain`` leaves out as duplicates, each with the kept entry of the
        same handler."""
        normalized = normalize_host(host) if host else None
        route = route_path(path, root_path)
        listed = [
            *self.listed_server,
            *(e for h in self.hosts if host_matches(h.pattern, normalized) for e in h.entries),
            *(
                e
                for loc in self.locations
                if (loc.host is None or host_matches(loc.host, normalized)) and loc.matches(route)
                for e in loc.entries
            ),
        ]
        return dedupe_reporting(listed)[1]

    def build(self) -> DirectivesFor:
        """The per-request function: ``scope -> tuple of handlers`` in run order."""
        if not self.hosts and not self.locations:
            return constant(self.server_handlers())
        if not self.uses_host:
            return path_only(self.plan(None))
        return by_host_and_path(self.plan)

    def server_handlers(self) -> tuple[Handler, ...]:
        return tuple(entry[1] for entry in self.server)
