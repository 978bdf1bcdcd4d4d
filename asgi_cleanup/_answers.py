"""The per-request lookup: ``scope -> directive handlers``, answered from bounded caches.

One cache of answers keyed by what the request brings, ``root_path``, the raw host and
``path`` (nested dicts, in that order: no key to build), so a repeated request costs a look
at its first header and three dict lookups; a miss goes to the matcher's plans.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._hosts import normalize_host
from ._types import Scope

if TYPE_CHECKING:
    from ._matching import DirectivesFor, Handler, _Plan

# Every cache is keyed by request data a client controls, so every one is bounded: when
# full it is cleared rather than evicted entry by entry, which keeps the hit path a dict
# lookup; and a key with a part longer than MAX_CACHED_PATH is not kept at all.
HOST_CACHE_SIZE = 1024
#: Answers by raw request data (root_path, host, path), in front of the plans' caches.
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


def constant(handlers: tuple[Handler, ...]) -> DirectivesFor:
    def directives_for(scope: Scope) -> tuple[Handler, ...]:
        return handlers

    return directives_for


def path_only(plan: _Plan) -> DirectivesFor:
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


def by_host_and_path(plan_for: Callable[[str | None], _Plan]) -> DirectivesFor:
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
