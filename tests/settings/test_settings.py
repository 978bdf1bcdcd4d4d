"""Loading valid settings and matching requests to directive cleanups."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from asgi_cleanup import _matching
from asgi_cleanup._types import Scope
from asgi_cleanup.settings import OPTION_NAMES, Settings, load_settings

APP_DIR = Path(__file__).parent / "settings_app"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """The handler modules of ``tests/settings_app/settingsapp``, importable by reference."""
    monkeypatch.syspath_prepend(str(APP_DIR))
    return SimpleNamespace(
        **{name: importlib.import_module(f"settingsapp.{name}") for name in ("db", "admin", "api")}
    )


def scope(
    path: str = "/",
    host: str | bytes | None = None,
    root_path: str = "",
    server: tuple[str, int | None] | None = ("127.0.0.1", 8000),
    type: str = "http",
) -> Scope:
    headers: list[tuple[bytes, bytes]] = [(b"accept", b"*/*")]
    if host is not None:
        headers.append((b"host", host if isinstance(host, bytes) else host.encode("latin-1")))
    return {
        "type": type,
        "path": path,
        "root_path": root_path,
        "headers": headers,
        "server": server,
    }


def load_toml(tmp_path: Path, text: str, name: str = "cleanup.toml") -> Settings:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_settings(str(path))


# --- server-wide handlers and references ----------------------------------------------------


def test_server_wide_handlers_apply_to_every_request_in_file_order(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    settings = load_toml(
        tmp_path, 'handlers = ["settingsapp.db:flush", "settingsapp.db:close_pools"]\n'
    )
    expected = (app.db.flush, app.db.close_pools)
    assert settings.directives_for(scope("/")) == expected
    assert settings.directives_for(scope("/admin/x", host="api.example.com")) == expected


def test_without_hosts_or_locations_the_scope_is_not_even_read(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    class Untouchable(dict[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise AssertionError(f"scope[{key!r}] was read")

        def get(self, key: str, default: Any = None) -> Any:
            raise AssertionError(f"scope.get({key!r}) was read")

    settings = load_toml(tmp_path, 'handlers = ["settingsapp.db:close_pools"]\n')
    first = settings.directives_for(Untouchable())
    assert first == (app.db.close_pools,)
    assert settings.directives_for(Untouchable()) is first


def test_nothing_configured_gives_the_empty_tuple() -> None:
    settings = load_settings({})
    assert settings.directives_for(scope("/x", host="a.example.com")) == ()
    assert settings.options == {}


def test_nothing_matching_gives_the_empty_tuple(app: SimpleNamespace) -> None:
    settings = load_settings(
        {
            "host": [{"name": "api.example.com", "handlers": ["settingsapp.api:flush_audit"]}],
            "location": [{"path": "/admin", "handlers": ["settingsapp.admin"]}],
        }
    )
    assert settings.directives_for(scope("/public", host="www.example.com")) == ()


@pytest.mark.parametrize(
    ("reference", "attribute"),
    [
        ("settingsapp.db:close_pools", "close_pools"),
        ("settingsapp.db::close_pools", "close_pools"),
        ("settingsapp.db", "cleanuphandler"),
        ("settingsapp.db:flush", "flush"),
    ],
)
def test_each_reference_spelling_resolves_to_the_named_callable(
    app: SimpleNamespace, reference: str, attribute: str
) -> None:
    settings = load_settings({"handlers": [reference]})
    assert settings.directives_for(scope()) == (getattr(app.db, attribute),)


def test_dotted_attribute_path_resolves_to_a_bound_method(app: SimpleNamespace) -> None:
    (handler,) = load_settings({"handlers": ["settingsapp.db:pool.close"]}).directives_for(scope())
    assert handler == app.db.pool.close


def test_two_spellings_of_one_reference_are_one_handler_even_for_bound_methods(
    app: SimpleNamespace,
) -> None:
    settings = load_settings(
        {"handlers": ["settingsapp.db:pool.close", "settingsapp.db::pool.close"]}
    )
    assert len(settings.directives_for(scope())) == 1


def test_a_bare_module_and_its_cleanuphandler_are_one_handler(app: SimpleNamespace) -> None:
    settings = load_settings(
        {"handlers": ["settingsapp.admin", "settingsapp.admin:cleanuphandler"]}
    )
    assert settings.directives_for(scope()) == (app.admin.cleanuphandler,)


@pytest.mark.parametrize("attribute", ["with_default", "star_args", "flush"])
def test_callables_that_accept_one_positional_argument_are_accepted(
    app: SimpleNamespace, attribute: str
) -> None:
    settings = load_settings({"handlers": [f"settingsapp.db:{attribute}"]})
    assert settings.directives_for(scope()) == (getattr(app.db, attribute),)


def test_a_mapping_may_list_callables_next_to_references(app: SimpleNamespace) -> None:
    def inline(outcome: object) -> None:
        pass

    settings = load_settings({"handlers": [inline, "settingsapp.db:close_pools", inline]})
    assert settings.directives_for(scope()) == (inline, app.db.close_pools)
    (ref, handler, context), _ = settings.explain(None, "/")
    assert handler is inline
    assert ref == f"{__name__}:{inline.__qualname__}"
    assert context == "server-wide"


# --- hosts ----------------------------------------------------------------------------------

HOSTS = """
[[host]]
name = "api.example.com"
handlers = ["settingsapp.api:flush_audit"]

[[host]]
name = "*.tenants.example.com"
handlers = ["settingsapp.api:close_tenant"]

[[host]]
name = "[::1]"
handlers = ["settingsapp.db:close_pools"]
"""


@pytest.mark.parametrize(
    ("host", "matched"),
    [
        ("api.example.com", ["flush_audit"]),
        ("API.Example.COM", ["flush_audit"]),
        ("api.example.com:8443", ["flush_audit"]),
        ("api.example.com.", ["flush_audit"]),
        ("www.example.com", []),
        ("example.com", []),
        ("a.tenants.example.com", ["close_tenant"]),
        ("a.b.tenants.example.com:80", ["close_tenant"]),
        ("tenants.example.com", []),
        ("xtenants.example.com", []),
        ("[::1]:8000", ["close_pools"]),
        ("[::1]", ["close_pools"]),
    ],
)
def test_host_header_matching(
    tmp_path: Path, app: SimpleNamespace, host: str, matched: list[str]
) -> None:
    settings = load_toml(tmp_path, HOSTS)
    handlers = settings.directives_for(scope(host=host))
    assert [handler.__name__ for handler in handlers] == matched


def test_host_without_header_falls_back_to_the_server_address(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    settings = load_toml(tmp_path, HOSTS)
    assert settings.directives_for(scope(server=("::1", 8000))) == (app.db.close_pools,)
    assert settings.directives_for(scope(host=b"", server=("::1", 8000))) == (app.db.close_pools,)


def test_host_without_header_or_server_matches_no_host(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    settings = load_toml(tmp_path, HOSTS)
    assert settings.directives_for(scope(server=None)) == ()


def test_host_uses_the_first_host_header(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(tmp_path, HOSTS)
    request = scope(host="api.example.com")
    request["headers"].append((b"host", b"x.tenants.example.com"))
    assert settings.directives_for(request) == (app.api.flush_audit,)


def test_http2_authority_reaches_host_matching_as_hypercorn_passes_it(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    from hypercorn.utils import filter_pseudo_headers

    h2_headers = [
        (b":method", b"GET"),
        (b":path", b"/"),
        (b":authority", b"api.example.com:8443"),
        (b"accept", b"*/*"),
    ]
    request = scope()
    request["headers"] = filter_pseudo_headers(h2_headers)
    assert load_toml(tmp_path, HOSTS).directives_for(request) == (app.api.flush_audit,)


def test_a_host_matching_several_contexts_gets_them_all_in_file_order(
    app: SimpleNamespace,
) -> None:
    settings = load_settings(
        {
            "host": [
                {"name": "*.example.com", "handlers": ["settingsapp.api:close_tenant"]},
                {"name": "api.example.com", "handlers": ["settingsapp.api:flush_audit"]},
            ]
        }
    )
    assert settings.directives_for(scope(host="api.example.com")) == (
        app.api.close_tenant,
        app.api.flush_audit,
    )


def test_many_distinct_hosts_each_get_their_answer(tmp_path: Path, app: SimpleNamespace) -> None:
    # More hosts than the answer cache holds (tests/settings/test_directive_lookup.py checks
    # that it stays bounded): every one is still matched right.
    settings = load_toml(tmp_path, HOSTS)
    for n in range(_matching.ANSWER_CACHE_SIZE + 10):
        tenant = settings.directives_for(scope(host=f"h{n}.tenants.example.com"))
        assert tenant == (app.api.close_tenant,)
        assert settings.directives_for(scope(host=f"h{n}.elsewhere.test")) == ()


# --- locations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/admin", True),
        ("/admin/", True),
        ("/admin/users/1", True),
        ("/administrator", False),
        ("/adminx/y", False),
        ("/", False),
        ("/other/admin", False),
    ],
)
def test_location_matches_by_whole_segments(app: SimpleNamespace, path: str, matches: bool) -> None:
    settings = load_settings({"location": [{"path": "/admin", "handlers": ["settingsapp.admin"]}]})
    expected = (app.admin.cleanuphandler,) if matches else ()
    assert settings.directives_for(scope(path)) == expected


@pytest.mark.parametrize("path", ["/", "/admin", "/a/b/c", ""])
def test_root_location_matches_every_path(app: SimpleNamespace, path: str) -> None:
    settings = load_settings({"location": [{"path": "/", "handlers": ["settingsapp.admin"]}]})
    assert settings.directives_for(scope(path)) == (app.admin.cleanuphandler,)


def test_location_trailing_slash_is_ignored(app: SimpleNamespace) -> None:
    settings = load_settings({"location": [{"path": "/admin/", "handlers": ["settingsapp.admin"]}]})
    assert settings.directives_for(scope("/admin")) == (app.admin.cleanuphandler,)
    assert settings.directives_for(scope("/administrator")) == ()


@pytest.mark.parametrize(
    ("path", "matches"),
    [
        ("/reports/q1.csv", True),
        ("/reports/q1.json", True),
        ("/reports/q1.tar.gz", True),
        ("/reports/q1.CSV", False),
        ("/reports/q1.csv/more", False),
        ("/reports/q1", False),
        ("/elsewhere/q1.csv", False),
    ],
)
def test_location_extensions_filter_on_the_path_end_case_sensitively(
    app: SimpleNamespace, path: str, matches: bool
) -> None:
    settings = load_settings(
        {
            "location": [
                {
                    "path": "/reports",
                    "extensions": [".csv", ".json", ".tar.gz"],
                    "handlers": ["settingsapp.admin:export_log"],
                }
            ]
        }
    )
    assert settings.directives_for(scope(path)) == ((app.admin.export_log,) if matches else ())


def test_location_with_host_applies_only_under_that_host(app: SimpleNamespace) -> None:
    settings = load_settings(
        {
            "location": [
                {"path": "/admin", "host": "*.example.com", "handlers": ["settingsapp.admin"]},
            ]
        }
    )
    assert settings.directives_for(scope("/admin", host="api.example.com:80")) == (
        app.admin.cleanuphandler,
    )
    assert settings.directives_for(scope("/admin", host="example.org")) == ()
    assert settings.directives_for(scope("/admin", server=None)) == ()


def test_locations_run_broader_before_narrower_whatever_the_file_order(
    app: SimpleNamespace,
) -> None:
    settings = load_settings(
        {
            "location": [
                {"path": "/admin/reports", "handlers": ["settingsapp.admin:export_log"]},
                {"path": "/admin", "handlers": ["settingsapp.admin:audit"]},
                {"path": "/", "handlers": ["settingsapp.db:close_pools"]},
            ]
        }
    )
    assert settings.directives_for(scope("/admin/reports/1")) == (
        app.db.close_pools,
        app.admin.audit,
        app.admin.export_log,
    )


def test_locations_with_the_same_path_run_in_file_order(app: SimpleNamespace) -> None:
    settings = load_settings(
        {
            "location": [
                {"path": "/admin", "handlers": ["settingsapp.admin:export_log"]},
                {"path": "/admin", "extensions": [".csv"], "handlers": ["settingsapp.admin:audit"]},
                {"path": "/admin/", "handlers": ["settingsapp.admin"]},
            ]
        }
    )
    assert settings.directives_for(scope("/admin/x.csv")) == (
        app.admin.export_log,
        app.admin.audit,
        app.admin.cleanuphandler,
    )


FULL = """
handlers = ["settingsapp.db:close_pools"]

[[host]]
name = "api.example.com"
handlers = ["settingsapp.api:flush_audit", "settingsapp.db:close_pools"]

[[location]]
path = "/admin/reports"
handlers = ["settingsapp.admin:export_log", "settingsapp.api:flush_audit"]

[[location]]
path = "/admin"
host = "api.example.com"
handlers = ["settingsapp.admin"]
"""


def test_order_is_server_then_hosts_then_locations_each_handler_once_at_its_first_place(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    settings = load_toml(tmp_path, FULL)
    assert settings.directives_for(scope("/admin/reports/x", host="api.example.com")) == (
        app.db.close_pools,
        app.api.flush_audit,
        app.admin.cleanuphandler,
        app.admin.export_log,
    )
    assert settings.directives_for(scope("/admin/reports/x", host="www.example.com")) == (
        app.db.close_pools,
        app.admin.export_log,
        app.api.flush_audit,
    )


@pytest.mark.parametrize(
    ("path", "root_path", "route_matches"),
    [
        ("/api/admin/x", "/api", True),
        ("/admin/x", "", True),
        ("/api/admin", "/api", True),
        ("/apiadmin/x", "/api", False),
        ("/api", "/api", False),
        ("/admin/x", "/api", True),
    ],
)
def test_location_matching_uses_the_path_less_root_path(
    app: SimpleNamespace, path: str, root_path: str, route_matches: bool
) -> None:
    settings = load_settings({"location": [{"path": "/admin", "handlers": ["settingsapp.admin"]}]})
    expected = (app.admin.cleanuphandler,) if route_matches else ()
    assert settings.directives_for(scope(path, root_path=root_path)) == expected


def test_path_equal_to_root_path_is_the_mount_root(app: SimpleNamespace) -> None:
    settings = load_settings({"location": [{"path": "/", "handlers": ["settingsapp.admin"]}]})
    assert settings.directives_for(scope("/api", root_path="/api")) == (app.admin.cleanuphandler,)


def test_websocket_scopes_match_like_http(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(tmp_path, FULL)
    request = scope("/admin/chat", host="api.example.com", type="websocket")
    assert settings.directives_for(request) == (
        app.db.close_pools,
        app.api.flush_audit,
        app.admin.cleanuphandler,
    )


def test_repeated_requests_get_the_same_cached_tuple(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(tmp_path, FULL)
    first = settings.directives_for(scope("/admin/reports/1", host="api.example.com"))
    assert settings.directives_for(scope("/admin/reports/1", host="api.example.com")) is first


def test_many_paths_and_long_paths_still_match(app: SimpleNamespace) -> None:
    # More paths than the answer cache holds, and one too long to keep in it
    # (tests/settings/test_directive_lookup.py checks the bound and what is kept).
    settings = load_settings({"location": [{"path": "/admin", "handlers": ["settingsapp.admin"]}]})
    for n in range(_matching.ANSWER_CACHE_SIZE + 10):
        assert settings.directives_for(scope(f"/admin/{n}")) == (app.admin.cleanuphandler,)
    long_path = "/admin/" + "x" * (_matching.MAX_CACHED_PATH + 1)
    for _ in range(2):
        assert settings.directives_for(scope(long_path)) == (app.admin.cleanuphandler,)


@pytest.mark.parametrize("host", [None, "api.example.com", "www.example.com:8000"])
@pytest.mark.parametrize(
    ("path", "root_path"),
    [("/", ""), ("/admin", ""), ("/admin/reports/a.csv", ""), ("/m/admin/reports", "/m")],
)
def test_explain_lists_what_directives_for_returns(
    tmp_path: Path, app: SimpleNamespace, host: str | None, path: str, root_path: str
) -> None:
    settings = load_toml(tmp_path, FULL)
    explained = settings.explain(host, path, root_path)
    request = scope(path, host=host, root_path=root_path, server=None)
    assert tuple(handler for _, handler, _ in explained) == settings.directives_for(request)


def test_explain_names_each_reference_as_written_and_its_context(
    tmp_path: Path, app: SimpleNamespace
) -> None:
    settings = load_toml(
        tmp_path,
        FULL
        + '\n[[location]]\npath = "/admin/reports"\nextensions = [".csv"]\n'
        + 'handlers = ["settingsapp.db::flush"]\n',
    )
    explained = settings.explain("api.example.com", "/admin/reports/a.csv")
    assert [(ref, context) for ref, _, context in explained] == [
        ("settingsapp.db:close_pools", "server-wide"),
        ("settingsapp.api:flush_audit", "host[0] api.example.com"),
        ("settingsapp.admin", "location[1] /admin host api.example.com"),
        ("settingsapp.admin:export_log", "location[0] /admin/reports"),
        ("settingsapp.db::flush", "location[2] /admin/reports | .csv"),
    ]


# --- sources and options --------------------------------------------------------------------


def test_pyproject_is_read_from_its_tool_table(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(
        tmp_path,
        '[project]\nname = "x"\n\n'
        "[tool.asgi-cleanup]\n"
        'handlers = ["settingsapp.db:close_pools"]\n'
        "timeout = 2\n\n"
        "[[tool.asgi-cleanup.location]]\n"
        'path = "/admin"\n'
        'handlers = ["settingsapp.admin"]\n\n'
        "[tool.other]\nhandlerz = 1\n",
        name="pyproject.toml",
    )
    assert settings.options == {"timeout": 2.0}
    assert settings.directives_for(scope("/admin")) == (
        app.db.close_pools,
        app.admin.cleanuphandler,
    )


def test_source_is_the_path_as_given_and_pathlike_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, app: SimpleNamespace
) -> None:
    (tmp_path / "cleanup.toml").write_text('handlers = ["settingsapp.db"]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_settings("cleanup.toml").source == "cleanup.toml"
    from_path = load_settings(tmp_path / "cleanup.toml")
    assert from_path.source == str(tmp_path / "cleanup.toml")
    assert from_path.directives_for(scope()) == (app.db.cleanuphandler,)
    assert load_settings({}).source == "<mapping>"


def test_options_hold_only_the_keys_given_validated(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(
        tmp_path,
        "timeout = 2\n"
        "shutdown_timeout = false\n"
        "thread_limit = 3\n"
        'on_error = "settingsapp.db:report_failure"\n',
    )
    assert settings.options == {
        "timeout": 2.0,
        "shutdown_timeout": None,
        "thread_limit": 3,
        "on_error": app.db.report_failure,
    }
    assert isinstance(settings.options["timeout"], float)
    assert list(settings.options) == [n for n in OPTION_NAMES if n in settings.options]
    assert load_toml(tmp_path, "timeout = 1.5\n").options == {"timeout": 1.5}


@pytest.mark.parametrize("no_limit", ["false", "inf"])
def test_a_timeout_of_false_or_infinity_in_toml_means_no_limit(
    tmp_path: Path, no_limit: str
) -> None:
    assert load_toml(tmp_path, f"timeout = {no_limit}\n").options == {"timeout": None}


def test_a_mapping_takes_none_or_false_for_no_limit_and_a_callable_on_error() -> None:
    def on_error(cleanup: object, exception: BaseException, outcome: object) -> None:
        pass

    settings = load_settings(
        {"timeout": None, "shutdown_timeout": False, "thread_limit": 1, "on_error": on_error}
    )
    assert settings.options == {
        "timeout": None,
        "shutdown_timeout": None,
        "thread_limit": 1,
        "on_error": on_error,
    }
    assert load_settings({"on_error": None}).options == {"on_error": None}
    assert load_settings({"shutdown_timeout": 0}).options == {"shutdown_timeout": 0.0}


def test_settings_and_their_options_are_read_only(tmp_path: Path) -> None:
    settings = load_toml(tmp_path, "timeout = 1\n")
    with pytest.raises(AttributeError):
        settings.source = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        settings.directives_for = lambda scope: ()
    with pytest.raises(TypeError):
        settings.options["timeout"] = 2  # type: ignore[index]


def test_a_source_that_is_neither_path_nor_mapping_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="settings must be a path or a mapping, not int"):
        load_settings(42)  # type: ignore[arg-type]


def test_summary_counts_handlers_contexts_and_options(tmp_path: Path, app: SimpleNamespace) -> None:
    settings = load_toml(tmp_path, "timeout = 1\n" + FULL)
    assert settings.summary() == (
        "1 server-wide handler, 1 host, 2 locations, 4 distinct handlers; options: timeout=1.0"
    )


def _names(handlers: tuple[Callable[..., object], ...]) -> list[str]:
    return [handler.__name__ for handler in handlers]


def test_handlers_of_one_context_listed_twice_run_once(app: SimpleNamespace) -> None:
    settings = load_settings(
        {"handlers": ["settingsapp.db:close_pools", "settingsapp.db:flush", "settingsapp.db"]}
        | {"location": [{"path": "/", "handlers": ["settingsapp.db:flush", "settingsapp.db"]}]}
    )
    assert _names(settings.directives_for(scope())) == ["close_pools", "flush", "cleanuphandler"]
