"""Which directive cleanups apply to a request: host and location matching.

Everything that does not depend on the request is computed when the settings load. A
request's host selects a *plan* (the server-wide and host handlers, already ordered and
deduplicated, plus the locations that can apply under that host); a plan's locations are
then matched against the route path. Plans are shared by every host that matches the same
contexts. In front of both steps sits one cache of answers keyed by what the request
brings, ``root_path``, the raw host and ``path`` (nested dicts, in that order: no key to
build), so a repeated request costs a look at its first header and three dict lookups.
Every cache is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from ._handlers import handler_key
from ._hosts import host_matches, normalize_host
from ._types import Scope

Handler = Callable[..., object]
#: ``(reference as written, resolved callable, context label)``
Entry = tuple[str, Handler, str]
DirectivesFor = Callable[[Scope], tuple[Handler, ...]]

# Every cache is keyed by request data a client controls, so every one is bounded: when
# full it is cleared rather than evicted entry by entry, which keeps the hit path a dict
# lookup; and a key with a part longer than MAX_CACHED_PATH is not kept at all.
HOST_CACHE_SIZE = 1024
PATH_CACHE_SIZE = 2048
#: Answers by raw request data (root_path, host, path), in front of the two caches above.
ANSWER_CACHE_SIZE = 2048
MAX_CACHED_PATH = 512

#: How a request's host is keyed: the raw Host header value; the server's host, tagged so
#: that it never compares with a header's bytes (``b"a" == "a"`` warns under ``python -b``);
#: or ``None`` with neither.
HostKey = bytes | tuple[str] | None


def route_path(path: str, root_path: str) -> str:
    """``path`` less a ``root_path`` prefix, exactly as Starlette's ``get_route_path``."""
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


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
    seen: set[object] = set()
    kept: list[Entry] = []
    for entry in entries:
        key = handler_key(entry[1])
        if key not in seen:
            seen.add(key)
            kept.append(entry)
    return kept


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

    def build(self) -> DirectivesFor:
        """The per-request function: ``scope -> tuple of handlers`` in run order."""
        if not self.hosts and not self.locations:
            return _constant(self.server_handlers())
        if not self.uses_host:
            return _path_only(self.plan(None))
        return _by_host_and_path(self.plan)

    def server_handlers(self) -> tuple[Handler, ...]:
        return tuple(entry[1] for entry in self.server)


def _constant(handlers: tuple[Handler, ...]) -> DirectivesFor:
    def directives_for(scope: Scope) -> tuple[Handler, ...]:
        return handlers

    return directives_for


def _path_only(plan: _Plan) -> DirectivesFor:
    # root_path -> path -> handlers
    answers: dict[str, dict[str, tuple[Handler, ...]]] = {}
    size = 0  # of the inner entries, all of them

    def resolve(scope: Scope) -> tuple[Handler, ...]:
        nonlocal size
        path: str = scope["path"]
        root_path: str = scope.get("root_path") or ""
        by_path = answers.get(root_path)
        handlers = by_path.get(path) if by_path is not None else None
        if handlers is not None:
            return handlers
        handlers = plan.lookup(route_path(path, root_path))
        if len(path) <= MAX_CACHED_PATH and len(root_path) <= MAX_CACHED_PATH:
            if size >= ANSWER_CACHE_SIZE:
                answers.clear()
                size = 0
                by_path = None
            if by_path is None:
                by_path = answers[root_path] = {}
            by_path[path] = handlers
            size += 1
        return handlers

    def directives_for(scope: Scope) -> tuple[Handler, ...]:
        try:  # costs nothing until something raises
            return answers[scope["root_path"]][scope["path"]]
        except KeyError:
            return resolve(scope)

    return directives_for


def _by_host_and_path(plan_for: Callable[[str | None], _Plan]) -> DirectivesFor:
    plans: dict[HostKey, _Plan] = {}
    # root_path -> host key -> path -> handlers
    answers: dict[str, dict[HostKey, dict[str, tuple[Handler, ...]]]] = {}
    size = 0  # of the innermost entries, all of them

    def resolve(scope: Scope) -> tuple[Handler, ...]:
        nonlocal size
        path: str = scope["path"]
        root_path: str = scope.get("root_path") or ""
        host = _host_key(scope)
        by_host = answers.get(root_path)
        by_path = by_host.get(host) if by_host is not None else None
        handlers = by_path.get(path) if by_path is not None else None
        if handlers is not None:
            return handlers
        # Only the client's strings count: the server's host is not client data.
        cacheable = (
            len(path) <= MAX_CACHED_PATH
            and len(root_path) <= MAX_CACHED_PATH
            and not (isinstance(host, bytes) and len(host) > MAX_CACHED_PATH)
        )
        plan = plans.get(host)
        if plan is None:
            plan = plan_for(_host_from_key(host))
            if cacheable:
                if len(plans) >= HOST_CACHE_SIZE:
                    plans.clear()
                plans[host] = plan
        handlers = plan.lookup(route_path(path, root_path)) if plan.locations else plan.base
        if cacheable:
            if size >= ANSWER_CACHE_SIZE:
                answers.clear()
                size = 0
                by_host = by_path = None
            if by_host is None:
                by_host = answers[root_path] = {}
            if by_path is None:
                by_path = by_host[host] = {}
            by_path[path] = handlers
            size += 1
        return handlers

    def directives_for(scope: Scope) -> tuple[Handler, ...]:
        # The cache hit, in one try block (it costs nothing until something raises): the
        # Host header is looked for first where nearly every client puts it. Whatever is
        # missing or unusual, and a miss, goes to resolve(), which reads the scope with care.
        try:
            name, host = scope["headers"][0]
            if name != b"host":
                host = _host_key(scope)
            return answers[scope["root_path"]][host][scope["path"]]
        except (LookupError, TypeError, ValueError):
            return resolve(scope)

    return directives_for


def _host_key(scope: Scope) -> HostKey:
    """The first ``host`` header's raw value; without one (or with an empty one), the server's
    host."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            if value:
                return value  # type: ignore[no-any-return]
            break
    server = scope.get("server")
    return (server[0],) if server else None


def _host_from_key(key: HostKey) -> str | None:
    if key is None:
        return None
    raw = key[0] if isinstance(key, tuple) else key
    host = normalize_host(header_text(raw) if isinstance(raw, bytes) else raw)
    return host or None


def header_text(raw: bytes) -> str:
    """A Host header's text: UTF-8 where it is (a client that sends a Unicode name as is),
    else Latin-1 as HTTP has it."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
