"""The per-request directive lookup: its cache of answers by raw request data.

``directives_for`` answers from a cache keyed by the raw Host header (or the server's host),
``path`` and ``root_path``. These tests put the Host header first, where clients put it and
where the lookup looks before scanning, and check that the cache never changes an answer
and stays bounded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from asgi_cleanup import _matching
from asgi_cleanup._matching import DirectivesFor
from asgi_cleanup._types import Scope
from asgi_cleanup.settings import load_settings


def noop_cleanup(name: str) -> Callable[[Any], None]:
    def cleanup(outcome: Any) -> None:
        pass

    cleanup.__name__ = cleanup.__qualname__ = name
    return cleanup


server_wide, api_host, admin, api_admin = map(
    noop_cleanup, ["server_wide", "api_host", "admin", "api_admin"]
)

SETTINGS: dict[str, Any] = {
    "handlers": [server_wide],
    "host": [{"name": "api.example.com", "handlers": [api_host]}],
    "location": [
        {"path": "/admin", "handlers": [admin]},
        {"path": "/admin", "host": "api.example.com", "handlers": [api_admin]},
    ],
}
PATH_ONLY: dict[str, Any] = {"location": [{"path": "/admin", "handlers": [admin]}]}


def request(
    path: str = "/",
    host: bytes | None = None,
    root_path: str | None = "",
    server: tuple[str, int | None] | None = ("127.0.0.1", 8000),
) -> Scope:
    """A scope with the Host header first, as clients send it."""
    headers = [(b"host", host)] if host is not None else []
    scope: Scope = {
        "type": "http",
        "path": path,
        "headers": [*headers, (b"accept", b"*/*")],
        "server": server,
    }
    if root_path is not None:
        scope["root_path"] = root_path
    return scope


def closure(function: Any) -> dict[str, Any]:
    return {
        name: cell.cell_contents
        for name, cell in zip(function.__code__.co_freevars, function.__closure__, strict=True)
    }


def cached_answers(directives_for: DirectivesFor) -> int:
    """How many answers the lookup holds (the leaves of its nested dicts)."""

    def leaves(level: dict[Any, Any]) -> int:
        return sum(leaves(value) if isinstance(value, dict) else 1 for value in level.values())

    return leaves(closure(directives_for)["answers"])


class _CacheOnly(dict[str, Any]):
    def get(self, key: str, default: Any = None) -> Any:
        raise AssertionError(f"not answered from the cache: scope.get({key!r})")


def answered_from_the_cache(scope: Scope) -> Scope:
    """``scope``, failing if it is read beyond what a cache hit reads (a miss reads with
    ``scope.get()``)."""
    return _CacheOnly(scope)


@pytest.fixture
def small_cache(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(_matching, "ANSWER_CACHE_SIZE", 8)
    return 8


@pytest.mark.parametrize("settings", [SETTINGS, PATH_ONLY], ids=["by host", "path only"])
def test_the_answer_cache_is_cleared_when_full_and_answers_stay_right(
    small_cache: int, settings: dict[str, Any]
) -> None:
    directives_for = load_settings(settings).directives_for
    for n in range(small_cache):
        assert admin in directives_for(request(f"/admin/{n}", host=b"www.example.com"))
    assert cached_answers(directives_for) == small_cache
    for n in range(small_cache, small_cache + 3):
        assert admin not in directives_for(request(f"/public/{n}", host=b"www.example.com"))
    assert cached_answers(directives_for) == 3
    assert admin in directives_for(request("/admin/0", host=b"www.example.com"))
    for root_path in ["", "/m"]:  # after the clearing, answers are kept and found again
        directives_for(request("/m/admin/x", host=b"www.example.com", root_path=root_path))
        again = request("/m/admin/x", host=b"www.example.com", root_path=root_path)
        assert directives_for(answered_from_the_cache(again)) == directives_for(again)


def test_many_hosts_share_the_one_bound(small_cache: int) -> None:
    directives_for = load_settings(SETTINGS).directives_for
    for n in range(5 * small_cache):
        host = f"h{n}.example.com".encode()
        assert directives_for(request("/admin", host=host)) == (server_wide, admin)
        assert 0 < cached_answers(directives_for) <= small_cache
    (by_host,) = closure(directives_for)["answers"].values()
    assert len(by_host) <= small_cache


LONG = "x" * _matching.MAX_CACHED_PATH


@pytest.mark.parametrize(
    ("settings", "path", "root_path", "host", "kept"),
    [
        (SETTINGS, "/admin/" + LONG, "", b"api.example.com", 0),
        (SETTINGS, "/admin", "/m" + LONG, b"api.example.com", 0),
        (SETTINGS, "/admin", "", LONG.encode() + b".example.com", 0),
        (PATH_ONLY, "/admin/" + LONG, "", b"api.example.com", 0),
        (PATH_ONLY, "/admin", "/m" + LONG, b"api.example.com", 0),
        # Without [[host]] contexts the host is not read, so it is not part of the key.
        (PATH_ONLY, "/admin", "", LONG.encode() + b".example.com", 1),
    ],
)
def test_overlong_request_data_is_answered_but_not_kept(
    settings: dict[str, Any], path: str, root_path: str, host: bytes, kept: int
) -> None:
    loaded = load_settings(settings)
    explained = loaded.explain(host.decode(), path, root_path)
    for _ in range(2):
        answer = loaded.directives_for(request(path, host=host, root_path=root_path))
        assert answer == tuple(handler for _, handler, _ in explained)
        assert answer
    assert cached_answers(loaded.directives_for) == kept


@pytest.mark.parametrize("settings", [SETTINGS, PATH_ONLY], ids=["by host", "path only"])
def test_the_same_host_and_path_with_another_root_path_is_another_answer(
    settings: dict[str, Any],
) -> None:
    directives_for = load_settings(settings).directives_for
    host = b"www.example.com"
    for _ in range(2):  # the second round answers from the cache
        assert admin in directives_for(request("/api/admin/x", host=host, root_path="/api"))
        assert admin not in directives_for(request("/api/admin/x", host=host, root_path=""))
        assert admin not in directives_for(request("/api/admin/x", host=host, root_path=None))
        assert admin in directives_for(request("/admin", host=host, root_path=None))
        assert admin not in directives_for(request("/m/admin", host=host, root_path="/m/admin"))
        assert admin in directives_for(request("/m/admin", host=host, root_path="/m"))


@pytest.mark.parametrize(
    "host",
    [
        b"api.example.com",
        b"API.Example.COM",
        b"api.example.com:8443",
        b"Api.Example.Com.:80",
    ],
)
def test_a_host_header_in_any_case_and_with_any_port_gets_its_hosts_answer(host: bytes) -> None:
    directives_for = load_settings(SETTINGS).directives_for
    for _ in range(2):
        assert directives_for(request("/admin/x", host=b"www.example.com")) == (server_wide, admin)
        assert directives_for(request("/admin/x", host=host)) == (
            server_wide,
            api_host,
            admin,
            api_admin,
        )
        assert directives_for(request("/x", host=host)) == (server_wide, api_host)


def test_a_host_header_later_in_the_list_is_found() -> None:
    directives_for = load_settings(SETTINGS).directives_for
    scope = request("/x")
    scope["headers"] = [(b"accept", b"*/*"), (b"host", b"api.example.com"), (b"host", b"x.test")]
    for _ in range(2):
        assert directives_for(scope) == (server_wide, api_host)


def test_headers_that_are_only_iterable_are_scanned() -> None:
    directives_for = load_settings(SETTINGS).directives_for

    def headers() -> Iterator[tuple[bytes, bytes]]:
        yield (b"accept", b"*/*")
        yield (b"host", b"api.example.com")

    for _ in range(2):
        scope = request("/x")
        scope["headers"] = headers()
        assert directives_for(scope) == (server_wide, api_host)


@pytest.mark.parametrize("headers", [[], None], ids=["no headers", "no headers key"])
def test_without_a_host_header_the_server_decides(headers: list[Any] | None) -> None:
    directives_for = load_settings(SETTINGS).directives_for
    for _ in range(2):
        for server, expected in [
            (("api.example.com", 443), (server_wide, api_host)),
            (("127.0.0.1", 8000), (server_wide,)),
            (None, (server_wide,)),
        ]:
            scope = request("/x", server=server)
            if headers is None:
                del scope["headers"]
            else:
                scope["headers"] = headers
            assert directives_for(scope) == expected


def test_an_empty_first_host_header_leaves_it_to_the_server_every_time() -> None:
    directives_for = load_settings(SETTINGS).directives_for
    for _ in range(2):
        assert directives_for(request("/x", host=b"", server=("api.example.com", 80))) == (
            server_wide,
            api_host,
        )
        assert directives_for(request("/x", host=b"", server=("127.0.0.1", 80))) == (server_wide,)


def test_a_server_host_never_compares_with_header_bytes() -> None:
    # Both reach the same cache, where b"127.0.0.1" and "127.0.0.1" hash alike: compared, they
    # would warn under python -b (and raise under -bb).
    code = textwrap.dedent(
        """
        from asgi_cleanup.settings import load_settings

        def cleanup(outcome):
            pass

        directives_for = load_settings(
            {"host": [{"name": "127.0.0.1", "handlers": [cleanup]}]}
        ).directives_for
        for headers in ([], [(b"host", b"127.0.0.1")], []):
            scope = {"type": "http", "path": "/", "root_path": "", "headers": headers,
                     "server": ("127.0.0.1", 8000)}
            assert directives_for(scope) == (cleanup,)
        """
    )
    subprocess.run([sys.executable, "-bb", "-c", code], check=True, timeout=60)


def test_a_repeated_request_is_answered_from_the_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(SETTINGS)
    first = settings.directives_for(request("/admin/x", host=b"api.example.com", root_path="/"))

    def no_more_matching(*args: Any) -> None:
        raise AssertionError("matched again")

    for module in (_matching,):
        monkeypatch.setattr(module, "route_path", no_more_matching)
        monkeypatch.setattr(module, "normalize_host", no_more_matching)
    again = settings.directives_for(request("/admin/x", host=b"api.example.com", root_path="/"))
    assert again is first
