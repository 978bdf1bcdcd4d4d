"""Every bad settings input is a SettingsError at load time whose message locates the problem:
the file, the table, the key, the entry, and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from asgi_cleanup.errors import SettingsError
from asgi_cleanup.settings import load_settings, validate_on_error

APP_DIR = Path(__file__).parent / "settings_app"


@pytest.fixture(autouse=True)
def _handler_modules_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP_DIR))


def error_for(tmp_path: Path, text: str | bytes, name: str = "cleanup.toml") -> tuple[str, str]:
    """Load ``text`` as a settings file; return ``(path, SettingsError message)``, the message
    without line numbers (``path:12: `` read as ``path: ``): tests/settings/test_settings_lines.py
    checks those."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(SettingsError) as raised:
        load_settings(str(path))
    message = re.sub(rf"^{re.escape(str(path))}:\d+: ", f"{path}: ", str(raised.value), flags=re.M)
    return str(path), message


def mapping_error(data: Any) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(data)
    return str(raised.value)


# --- the file itself ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(SettingsError) as raised:
        load_settings(path)
    assert str(raised.value) == f"{path}: cannot read settings file: No such file or directory"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path}: cannot read settings file: it is a directory, not a regular file"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        pytest.param(
            'handlers = ["a"\ntimeout = 1\n', "Unclosed array (at line 2, column 1)", id="unclosed"
        ),
        pytest.param("timeout = \n", "Invalid value (at line 1, column 11)", id="no-value"),
        pytest.param(
            "timeout = 1\ntimeout = 2\n",
            "Cannot overwrite a value (at line 2, column 12)",
            id="duplicate-key",
        ),
    ],
)
def test_toml_syntax_error_gives_line_and_column(tmp_path: Path, text: str, problem: str) -> None:
    path, message = error_for(tmp_path, text)
    assert message == f"{path}: invalid TOML: {problem}"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, b"timeout = 1 # \xff\n")
    assert message == f"{path}: invalid TOML: not UTF-8 text (invalid start byte)"


def test_pyproject_without_tool_table(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, '[project]\nname = "x"\n', name="pyproject.toml")
    assert message == f"{path}: no [tool.asgi-cleanup] table"


def test_pyproject_whose_tool_key_is_not_a_table(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, "tool = 3\n", name="pyproject.toml")
    assert message == f"{path}: no [tool.asgi-cleanup] table"


def test_pyproject_with_misspelt_tool_table_suggests_the_name(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, "[tool.asgi_cleanup]\ntimeout = 1\n", name="pyproject.toml")
    assert message == (
        f"{path}: no [tool.asgi-cleanup] table; found [tool.asgi_cleanup], "
        "did you mean [tool.asgi-cleanup]?"
    )


def test_pyproject_tool_entry_that_is_not_a_table(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, '[tool]\nasgi-cleanup = "x"\n', name="pyproject.toml")
    assert message == f"{path}: tool.asgi-cleanup must be a table, not a string ('x')"


def test_pyproject_errors_name_the_tool_table(tmp_path: Path) -> None:
    path, message = error_for(tmp_path, "[tool.asgi-cleanup]\nhandlerz = []\n", "pyproject.toml")
    assert message == (
        f"{path}: [tool.asgi-cleanup]: unknown key 'handlerz'; did you mean 'handlers'?"
    )


# --- keys and shapes ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "located"),
    [
        pytest.param(
            "handlerz = []\n",
            "top level: unknown key 'handlerz'; did you mean 'handlers'?",
            id="top-level",
        ),
        pytest.param(
            '[[host]]\nnmae = "a.example"\nhandlers = []\n',
            "host[0]: unknown key 'nmae'; did you mean 'name'?",
            id="host",
        ),
        pytest.param(
            '[[location]]\npath = "/a"\nextension = [".csv"]\nhandlers = []\n',
            "location[0]: unknown key 'extension'; did you mean 'extensions'?",
            id="location",
        ),
        pytest.param(
            "colour = 1\n",
            "top level: unknown key 'colour'; expected handlers, host, location, timeout, "
            "shutdown_timeout, thread_limit, async_limit, on_error, on_complete, telemetry, queue, "
            "arq_redis_url, durable_grace",
            id="no-close-match-lists-keys",
        ),
    ],
)
def test_unknown_key_suggests_the_close_match(tmp_path: Path, text: str, located: str) -> None:
    path, message = error_for(tmp_path, text)
    assert message == f"{path}: {located}"


@pytest.mark.parametrize(
    ("text", "located"),
    [
        pytest.param(
            'handlers = "settingsapp.db"\n',
            """top level, key 'handlers': must be an array of handler references; """
            """write ["settingsapp.db"]""",
            id="handlers-string",
        ),
        pytest.param(
            "handlers = 3\n",
            "top level, key 'handlers': must be an array of handler references, not an integer (3)",
            id="handlers-integer",
        ),
        pytest.param(
            "handlers = [3]\n",
            "top level, key 'handlers', entry 3: must be a handler reference, not an integer (3)",
            id="handler-entry-integer",
        ),
        pytest.param(
            '[host]\nname = "a.example"\nhandlers = []\n',
            "top level, key 'host': must be an array of tables: write [[host]], not [host]",
            id="host-single-table",
        ),
        pytest.param(
            'location = ["/admin"]\n',
            "location[0]: must be a table, not a string ('/admin')",
            id="location-entry-string",
        ),
        pytest.param(
            "location = 1\n",
            "top level, key 'location': must be an array of tables ([[location]]), "
            "not an integer (1)",
            id="location-integer",
        ),
    ],
)
def test_wrong_shapes_are_named(tmp_path: Path, text: str, located: str) -> None:
    path, message = error_for(tmp_path, text)
    assert message == f"{path}: {located}"


# --- hosts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "located"),
    [
        pytest.param("handlers = []", "host[1]: missing key 'name'", id="missing-name"),
        pytest.param(
            'name = "b.example"', "host[1]: missing key 'handlers'", id="missing-handlers"
        ),
        pytest.param(
            'name = "b.example:8000"\nhandlers = []',
            "host[1], key 'name': 'b.example:8000' must not include a port: hosts are compared "
            "with the port removed",
            id="port",
        ),
        pytest.param(
            'name = "a.*.example"\nhandlers = []',
            "host[1], key 'name': 'a.*.example' may only use '*' as its whole first label, "
            "as in '*.example.com'",
            id="wildcard-inside",
        ),
        pytest.param(
            'name = "*example.com"\nhandlers = []',
            "host[1], key 'name': '*example.com' may only use '*' as its whole first label, "
            "as in '*.example.com'",
            id="wildcard-without-dot",
        ),
        pytest.param(
            'name = ""\nhandlers = []', "host[1], key 'name': '' is not a host name", id="empty"
        ),
        pytest.param(
            'name = "a b"\nhandlers = []',
            "host[1], key 'name': 'a b' is not a host name",
            id="space",
        ),
        pytest.param(
            "name = 1\nhandlers = []",
            "host[1], key 'name': must be a host name string, not an integer (1)",
            id="not-string",
        ),
    ],
)
def test_bad_host_table(tmp_path: Path, table: str, located: str) -> None:
    text = f'[[host]]\nname = "a.example"\nhandlers = []\n\n[[host]]\n{table}\n'
    path, message = error_for(tmp_path, text)
    assert message == f"{path}: {located}"


# --- locations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "located"),
    [
        pytest.param("handlers = []", "location[2]: missing key 'path'", id="missing-path"),
        pytest.param('path = "/c"', "location[2]: missing key 'handlers'", id="missing-handlers"),
        pytest.param(
            'path = "admin"\nhandlers = []',
            "location[2], key 'path': 'admin' must start with '/'",
            id="path-without-slash",
        ),
        pytest.param(
            'path = "/search?q=1"\nhandlers = []',
            "location[2], key 'path': '/search?q=1' must be a path alone: request paths never "
            "hold a query string or fragment, so it could never match",
            id="path-with-query",
        ),
        pytest.param(
            'path = "/docs#top"\nhandlers = []',
            "location[2], key 'path': '/docs#top' must be a path alone: request paths never "
            "hold a query string or fragment, so it could never match",
            id="path-with-fragment",
        ),
        pytest.param(
            "path = 1\nhandlers = []",
            "location[2], key 'path': must be a URL path string, not an integer (1)",
            id="path-not-string",
        ),
        pytest.param(
            'path = "/c"\nhost = "c.example:80"\nhandlers = []',
            "location[2], key 'host': 'c.example:80' must not include a port: hosts are "
            "compared with the port removed",
            id="host-with-port",
        ),
        pytest.param(
            'path = "/c"\nextensions = ["csv"]\nhandlers = []',
            "location[2], key 'extensions', entry 'csv': "
            "must be a dot and a suffix without '/', as in '.csv'",
            id="extension-without-dot",
        ),
        pytest.param(
            'path = "/c"\nextensions = ["."]\nhandlers = []',
            "location[2], key 'extensions', entry '.': "
            "must be a dot and a suffix without '/', as in '.csv'",
            id="extension-only-dot",
        ),
        pytest.param(
            'path = "/c"\nextensions = [".d/x"]\nhandlers = []',
            "location[2], key 'extensions', entry '.d/x': "
            "must be a dot and a suffix without '/', as in '.csv'",
            id="extension-with-slash",
        ),
        pytest.param(
            'path = "/c"\nextensions = [1]\nhandlers = []',
            "location[2], key 'extensions', entry 1: must be a string, not an integer (1)",
            id="extension-not-string",
        ),
        pytest.param(
            'path = "/c"\nextensions = ".csv"\nhandlers = []',
            "location[2], key 'extensions': must be a non-empty array like ['.csv'], "
            "not a string ('.csv')",
            id="extensions-string",
        ),
        pytest.param(
            'path = "/c"\nextensions = []\nhandlers = []',
            "location[2], key 'extensions': must be a non-empty array like ['.csv'], "
            "not an empty array",
            id="extensions-empty",
        ),
        pytest.param(
            'path = "/c"\nhandlers = ["settingsapp.admin:nope"]',
            "location[2], key 'handlers', entry 'settingsapp.admin:nope': "
            "module 'settingsapp.admin' has no attribute 'nope'",
            id="handler",
        ),
    ],
)
def test_bad_location_table_is_named_by_its_index(tmp_path: Path, table: str, located: str) -> None:
    good = '[[location]]\npath = "/a"\nhandlers = []\n\n'
    text = good + good.replace("/a", "/b") + f"[[location]]\n{table}\n"
    path, message = error_for(tmp_path, text)
    assert message == f"{path}: {located}"


# --- handler references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        pytest.param(
            "settingsapp.db:",
            "not a handler reference; expected 'package.module:attribute', "
            "'package.module::attribute' or 'package.module' (meaning its cleanuphandler)",
            id="malformed-empty-attribute",
        ),
        pytest.param(
            "settingsapp.db:::close_pools",
            "not a handler reference; expected 'package.module:attribute', "
            "'package.module::attribute' or 'package.module' (meaning its cleanuphandler)",
            id="malformed-triple-colon",
        ),
        pytest.param(
            " settingsapp.db",
            "not a handler reference; expected 'package.module:attribute', "
            "'package.module::attribute' or 'package.module' (meaning its cleanuphandler)",
            id="malformed-whitespace",
        ),
        pytest.param(
            "settingsapp.nope:close",
            "cannot import module 'settingsapp.nope': No module named 'settingsapp.nope'",
            id="module-not-found",
        ),
        pytest.param(
            "nopkg_for_settings_tests.mod::close",
            "cannot import module 'nopkg_for_settings_tests.mod': "
            "No module named 'nopkg_for_settings_tests'",
            id="package-not-found",
        ),
        pytest.param(
            "settingsapp.broken:close",
            "importing module 'settingsapp.broken' raised RuntimeError: DATABASE_URL is not set",
            id="module-raises-on-import",
        ),
        pytest.param(
            "settingsapp.needs_missing:close",
            "importing module 'settingsapp.needs_missing' raised ModuleNotFoundError: "
            "No module named 'settingsapp_missing_dependency'",
            id="module-dependency-missing",
        ),
        pytest.param(
            "settingsapp.db:close_pool",
            "module 'settingsapp.db' has no attribute 'close_pool'",
            id="missing-attribute",
        ),
        pytest.param(
            "settingsapp.db:pool.closed",
            "'settingsapp.db:pool' has no attribute 'closed'",
            id="missing-nested-attribute",
        ),
        pytest.param(
            "settingsapp.plain",
            "module 'settingsapp.plain' has no attribute 'cleanuphandler' "
            "(a reference without ':' means the module's cleanuphandler)",
            id="bare-module-without-cleanuphandler",
        ),
        pytest.param(
            "settingsapp.db:POOL_SIZE",
            "not callable (it is int 5)",
            id="not-callable",
        ),
        pytest.param(
            "settingsapp.db:no_args",
            "cannot be called with one positional argument (the Outcome): its parameters are ()",
            id="takes-no-argument",
        ),
        pytest.param(
            "settingsapp.db:two_args",
            "cannot be called with one positional argument (the Outcome): "
            "its parameters are (outcome, extra)",
            id="takes-two-arguments",
        ),
        pytest.param(
            "settingsapp.db:keyword_only",
            "cannot be called with one positional argument (the Outcome): "
            "its parameters are (outcome, *, required)",
            id="required-keyword-only",
        ),
    ],
)
def test_bad_handler_reference_is_named_with_what_is_wrong(
    tmp_path: Path, reference: str, problem: str
) -> None:
    path, message = error_for(tmp_path, f'handlers = ["settingsapp.db", "{reference}"]\n')
    assert message == f"{path}: top level, key 'handlers', entry {reference!r}: {problem}"


def test_import_error_keeps_the_original_exception_as_cause(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"handlers": ["settingsapp.broken"]})
    original = raised.value.__cause__
    assert original is not None
    assert isinstance(original.__cause__, RuntimeError)


def test_syntax_error_in_handler_module_gives_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "settings_syntax_error_mod.py").write_text("def f(:\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    path, message = error_for(tmp_path, 'handlers = ["settings_syntax_error_mod:f"]\n')
    assert message.startswith(
        f"{path}: top level, key 'handlers', entry 'settings_syntax_error_mod:f': "
        "importing module 'settings_syntax_error_mod' raised SyntaxError: "
    )
    assert re.search(r"settings_syntax_error_mod\.py, line 1\)$", message)


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param(
            'timeout = "5"',
            "key 'timeout': must be a number of seconds > 0, or false for no limit; "
            "got a string ('5')",
            id="timeout-string",
        ),
        pytest.param(
            "shutdown_timeout = -1",
            "key 'shutdown_timeout': must be a number of seconds >= 0, or false for no limit; "
            "got an integer (-1)",
            id="timeout-negative",
        ),
        pytest.param(
            "timeout = true",
            "key 'timeout': must be a number of seconds > 0, or false for no limit; "
            "got a boolean (True)",
            id="timeout-true",
        ),
        pytest.param(
            "timeout = nan",
            "key 'timeout': must be a number of seconds > 0, or false for no limit; "
            "got a float (nan)",
            id="timeout-nan",
        ),
        pytest.param(
            "timeout = 0",
            "key 'timeout': must be a number of seconds > 0, or false for no limit; "
            "got an integer (0)",
            id="timeout-zero",
        ),
        pytest.param(
            "thread_limit = 0",
            "key 'thread_limit': thread_limit must be >= 1, got 0",
            id="thread-limit-zero",
        ),
        pytest.param(
            "thread_limit = 2.5",
            "key 'thread_limit': thread_limit must be an int >= 1, got 2.5",
            id="thread-limit-float",
        ),
        pytest.param(
            "thread_limit = true",
            "key 'thread_limit': thread_limit must be an int >= 1, got True",
            id="thread-limit-bool",
        ),
        pytest.param(
            "on_error = 1",
            "key 'on_error': must be a handler reference, not an integer (1)",
            id="on-error-integer",
        ),
        pytest.param(
            'on_error = "settingsapp.db:close_pools"',
            "key 'on_error', entry 'settingsapp.db:close_pools': cannot be called with three "
            "positional arguments (cleanup, exception, outcome): its parameters are (outcome)",
            id="on-error-wrong-signature",
        ),
        pytest.param(
            'on_error = "settingsapp.nope:report"',
            "key 'on_error', entry 'settingsapp.nope:report': cannot import module "
            "'settingsapp.nope': No module named 'settingsapp.nope'",
            id="on-error-unimportable",
        ),
    ],
)
def test_bad_option_value(tmp_path: Path, line: str, problem: str) -> None:
    path, message = error_for(tmp_path, line + "\n")
    assert message == f"{path}: top level, {problem}"


# --- mappings -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "located"),
    [
        pytest.param(
            {"timeout": "x"},
            "top level, key 'timeout': must be a number of seconds > 0, or None or False "
            "for no limit; got a string ('x')",
            id="timeout-string",
        ),
        pytest.param({1: []}, "top level: key 1 is not a string", id="non-string-key"),
        pytest.param(
            {"handlers": [3]},
            "top level, key 'handlers', entry 3: must be a handler reference or a callable, "
            "not an integer (3)",
            id="handler-integer",
        ),
        pytest.param(
            {"on_error": 5},
            "top level, key 'on_error': must be a handler reference, a callable or None, "
            "not an integer (5)",
            id="on-error-integer",
        ),
        pytest.param(
            {"location": {"path": "/"}},
            "top level, key 'location': must be an array of tables: write [[location]], "
            "not [location]",
            id="location-single-table",
        ),
        pytest.param(
            {"host": [{"name": "a.example", "handlers": [], "extensions": [".x"]}]},
            "host[0]: unknown key 'extensions'; expected name, handlers",
            id="host-with-location-key",
        ),
    ],
)
def test_bad_mapping_is_located_like_a_file(data: Any, located: str) -> None:
    assert mapping_error(data) == f"<mapping>: {located}"


def test_callable_with_wrong_signature_in_a_mapping_is_named_by_its_qualified_name() -> None:
    def needs_two(outcome: object, extra: object) -> None:
        pass

    assert mapping_error({"handlers": [needs_two]}) == (
        f"<mapping>: top level, key 'handlers', entry {__name__}:{needs_two.__qualname__}: "
        "cannot be called with one positional argument (the Outcome): "
        "its parameters are (outcome, extra)"
    )


# --- validate_on_error, for keyword arguments -----------------------------------------------


def test_validate_on_error_resolves_a_reference() -> None:
    from settingsapp.db import report_failure

    assert validate_on_error("settingsapp.db:report_failure") is report_failure
    assert validate_on_error(None) is None


def test_validate_on_error_rejects_a_wrong_signature_with_type_error() -> None:
    with pytest.raises(TypeError, match=r"^on_error 'settingsapp.db:close_pools': cannot be"):
        validate_on_error("settingsapp.db:close_pools")
    with pytest.raises(TypeError, match=r"^on_error 5: not callable \(it is int 5\)$"):
        validate_on_error(5)


def test_validate_on_error_rejects_an_unresolvable_reference_with_value_error() -> None:
    with pytest.raises(ValueError, match=r"^on_error 'settingsapp.nope:f': cannot import module"):
        validate_on_error("settingsapp.nope:f")
