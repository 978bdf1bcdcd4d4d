"""Which directive cleanups a request gets: host and location matching, behind bounded caches
keyed by what clients send: cleared when full, and no key longer than ``MAX_CACHED_PATH``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from ._handlers import handler_key
from ._types import Scope

Handler = Callable[..., object]
Entry = tuple[str, Handler, str]  # (reference as written, resolved callable, context label)
DirectivesFor = Callable[[Scope], tuple[Handler, ...]]
# The raw Host header; the server's host in a tuple (b"a" == "a" warns under python -b).
HostKey = bytes | tuple[str] | None

ANSWER_CACHE_SIZE = 2048  # answers by (root_path, host, path), all levels together
HOST_CACHE_SIZE = 1024  # what applies under each host, by host
MAX_CACHED_PATH = 512
MAX_NAME = 253  # the longest DNS name; a longer host matches nothing and is not IDNA-encoded


def normalize_host(value: str) -> str:
    """A Host header value or server address as ``[[host]]`` names are: ``"Example.COM.:80"``
    is ``"example.com"``, ``"[::1]:80"`` ``"::1"``, a bare IPv6 address whole, a Unicode name
    IDNA. A name too long or not valid IDNA stays as it is: it matches nothing."""
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end != -1 else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    try:
        return host if host.isascii() or len(host) > MAX_NAME else host.encode("idna").decode()
    except UnicodeError:
        return host


def host_matches(pattern: str | None, host: str | None) -> bool:
    """``*.example.com`` matches any name below it, not itself; a ``None`` pattern any host."""
    if pattern is None or host is None:
        return pattern is None
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def route_path(path: str, root_path: str) -> str:
    """``path`` less a ``root_path`` prefix, exactly as Starlette's ``get_route_path``."""
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    return path[len(root_path) :] if path[len(root_path)] == "/" else path


class Host(NamedTuple):
    pattern: str
    entries: tuple[Entry, ...]


class Location(NamedTuple):
    path: str  # without a trailing "/": "" for the root
    host: str | None
    extensions: tuple[str, ...]
    entries: tuple[Entry, ...]

    def matches(self, path: str) -> bool:
        """Whole-segment prefix match, then the extensions (case-sensitive)."""
        own = self.path
        if own and not (path.startswith(own) and (len(path) == len(own) or path[len(own)] == "/")):
            return False
        return not self.extensions or path.endswith(self.extensions)


def dedupe(entries: Iterable[Entry]) -> tuple[list[Entry], list[tuple[Entry, Entry]]]:
    """Each handler at its first place only; and each entry dropped, with the one kept."""
    first: dict[object, Entry] = {}
    dropped: list[tuple[Entry, Entry]] = []
    for entry in entries:
        key = handler_key(entry[1])
        if key in first:
            dropped.append((entry, first[key]))
        else:
            first[key] = entry
    return list(first.values()), dropped


class Matcher:
    """All contexts of one settings source, ready to match requests."""

    def __init__(
        self, server: Iterable[Entry], hosts: list[Host], locations: list[Location]
    ) -> None:
        self.server, self.hosts = tuple(server), tuple(hosts)
        # Broader before narrower; sorted() is stable, so ties stay in file order.
        self.locations = tuple(sorted(locations, key=lambda loc: len(loc.path)))

    def under(self, host: str | None) -> tuple[list[Entry], list[Location]]:
        """The entries of the server and hosts that apply under a normalised host (or
        ``None``), duplicates included, and the locations that may apply under it."""
        hosts = [e for h in self.hosts if host_matches(h.pattern, host) for e in h.entries]
        locations = [loc for loc in self.locations if host_matches(loc.host, host)]
        return [*self.server, *hosts], locations

    def listed(self, host: str | None, path: str, root_path: str = "") -> list[Entry]:
        """Every entry of the contexts matching a normalised host (or ``None``) and a
        ``scope["path"]`` less ``root_path``, in run order, duplicates included."""
        entries, locations = self.under(host)
        route = route_path(path, root_path)
        return entries + [e for loc in locations if loc.matches(route) for e in loc.entries]

    def build(self) -> DirectivesFor:
        """The per-request function ``scope -> handlers`` in run order."""
        if not self.hosts and not self.locations:
            handlers = _run_order(self.server)
            return lambda scope: handlers
        uses_host = bool(self.hosts) or any(loc.host is not None for loc in self.locations)
        return _lookup(self.under, uses_host)


def _run_order(entries: Iterable[Entry]) -> tuple[Handler, ...]:
    return tuple(entry[1] for entry in dedupe(entries)[0])


def _lookup(
    under: Callable[[str | None], tuple[list[Entry], list[Location]]], uses_host: bool
) -> DirectivesFor:
    # What applies under a host before the path is looked at: (entries, their handlers,
    # locations). Hosts that send no Host header are the server's, a tuple key.
    plans: dict[HostKey, tuple[list[Entry], tuple[Handler, ...], list[Location]]] = {}
    answers: dict[str, dict[Any, Any]] = {}  # root_path -> [host key ->] path -> handlers
    size = 0  # answers held, all levels together

    def resolve(scope: Scope) -> tuple[Handler, ...]:
        nonlocal size
        path: str = scope["path"]
        root_path: str = scope.get("root_path") or ""
        host = _host_key(scope) if uses_host else None
        by_path = answers.get(root_path, {})
        by_path = by_path.get(host, {}) if uses_host else by_path
        if path in by_path:
            return by_path[path]  # type: ignore[no-any-return]
        short = len(path) <= MAX_CACHED_PATH and len(root_path) <= MAX_CACHED_PATH
        cacheable = short and not (isinstance(host, bytes) and len(host) > MAX_CACHED_PATH)
        plan = plans.get(host)
        if plan is None:
            entries, locations = under(_host_name(host))
            plan = (entries, _run_order(entries), locations)
            if cacheable:
                if len(plans) >= HOST_CACHE_SIZE:
                    plans.clear()
                plans[host] = plan
        entries, handlers, locations = plan
        route = route_path(path, root_path)
        if matched := [e for loc in locations if loc.matches(route) for e in loc.entries]:
            handlers = _run_order(entries + matched)
        if cacheable:
            if size >= ANSWER_CACHE_SIZE:
                answers.clear()
                size = 0
            by_path = answers.setdefault(root_path, {})
            (by_path.setdefault(host, {}) if uses_host else by_path)[path] = handlers
            size += 1
        return handlers

    def by_path(scope: Scope) -> tuple[Handler, ...]:
        try:  # costs nothing until something raises
            return answers[scope["root_path"]][scope["path"]]  # type: ignore[no-any-return]
        except KeyError:
            return resolve(scope)

    def by_host_and_path(scope: Scope) -> tuple[Handler, ...]:
        # The Host header is looked for first where nearly every client puts it. Anything
        # missing or unusual, and a miss, goes to resolve(), which reads the scope with care.
        try:
            name, host = scope["headers"][0]
            if name != b"host":
                host = _host_key(scope)
            return answers[scope["root_path"]][host][scope["path"]]  # type: ignore[no-any-return]
        except (LookupError, TypeError, ValueError):
            return resolve(scope)

    return by_host_and_path if uses_host else by_path


def _host_key(scope: Scope) -> HostKey:
    """The first ``host`` header's raw value; without one, or an empty one, the server's."""
    for name, value in scope.get("headers", ()):
        if name == b"host":
            if value:
                return value  # type: ignore[no-any-return]
            break
    server = scope.get("server")
    return (server[0],) if server else None


def _host_name(key: HostKey) -> str | None:
    if isinstance(key, bytes):  # UTF-8 where it is (a Unicode name sent as is), else Latin-1
        try:
            return normalize_host(key.decode("utf-8")) or None
        except UnicodeDecodeError:
            return normalize_host(key.decode("latin-1")) or None
    return normalize_host(key[0]) or None if key else None
