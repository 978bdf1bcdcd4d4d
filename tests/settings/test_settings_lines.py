"""A settings error reports every problem in the source, one line each, and gives the line in
the file where the table or key can be found (issue 17 item 9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_cleanup.cli import main
from asgi_cleanup.errors import SettingsError
from asgi_cleanup.settings import load_settings

APP_DIR = Path(__file__).parent / "settings_app"

SEVERAL_PROBLEMS = """\
timeout = "5"
handlers = ["settingsapp.db:close_pools", "settingsapp.nope:f"]

[[host]]
name = "api.example.com:8000"
handlers = []

[[location]]
path = "/admin"
handlers = ["settingsapp.admin"]

[[location]]
# a comment, then the key
handlers = ["settingsapp.db:missing"]
path = "admin"
colour = "red"
"""


@pytest.fixture(autouse=True)
def _handler_modules_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(APP_DIR))


def message_of(path: Path) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(path)
    return str(raised.value)


def test_every_problem_is_reported_each_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(SEVERAL_PROBLEMS, encoding="utf-8")
    assert message_of(path).splitlines() == [
        f"{path}:1: top level, key 'timeout': must be a number of seconds > 0, or false for no "
        "limit; got a string ('5')",
        f"{path}:2: top level, key 'handlers', entry 'settingsapp.nope:f': cannot import module "
        "'settingsapp.nope': No module named 'settingsapp.nope'",
        f"{path}:5: host[0], key 'name': 'api.example.com:8000' must not include a port: hosts "
        "are compared with the port removed",
        f"{path}:16: location[1]: unknown key 'colour'; expected path, host, extensions, handlers",
        f"{path}:15: location[1], key 'path': 'admin' must start with '/'",
        f"{path}:14: location[1], key 'handlers', entry 'settingsapp.db:missing': module "
        "'settingsapp.db' has no attribute 'missing'",
    ]


def test_check_prints_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(SEVERAL_PROBLEMS, encoding="utf-8")
    assert main(["check", str(path), "--app-dir", str(APP_DIR)]) == 1
    *problems, hint = capsys.readouterr().err.splitlines()
    assert len(problems) == 6
    assert all(line.startswith(f"{path}:") for line in problems)
    assert hint.startswith("hint: ")  # settingsapp.nope cannot be imported


def test_pyproject_lines_count_from_the_top_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n\n[tool.asgi-cleanup]\ntimeout = -1\n\n'
        '[[tool.asgi-cleanup.location]]\npath = "x"\nhandlers = []\n',
        encoding="utf-8",
    )
    assert message_of(path).splitlines() == [
        f"{path}:5: [tool.asgi-cleanup], key 'timeout': must be a number of seconds > 0, or "
        "false for no limit; got an integer (-1)",
        f"{path}:8: location[0], key 'path': 'x' must start with '/'",
    ]


def test_a_header_inside_a_multiline_string_is_not_taken_for_a_table(tmp_path: Path) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text(
        'handlers = []\nnote = """\n[[location]]\npath = "/"\n"""\n\n'
        '[[location]]\npath = "nope"\nhandlers = []\n',
        encoding="utf-8",
    )
    assert message_of(path).splitlines() == [
        f"{path}:2: top level: unknown key 'note'; expected handlers, host, location, timeout, "
        "shutdown_timeout, thread_limit, async_limit, on_error, on_complete, telemetry, queue, "
        "arq_redis_url, durable_grace",
        f"{path}:8: location[0], key 'path': 'nope' must start with '/'",
    ]


def test_no_line_is_given_where_tables_are_not_plain_headers(tmp_path: Path) -> None:
    # An inline array of tables: no [[location]] header to count, so no line rather than a
    # wrong one.
    path = tmp_path / "cleanup.toml"
    path.write_text('location = [{path = "x", handlers = []}]\n', encoding="utf-8")
    assert message_of(path) == f"{path}: location[0], key 'path': 'x' must start with '/'"


def test_a_mapping_reports_every_problem_too() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"timeout": 0, "thread_limit": 0, "handlers": [1, "settingsapp.db"]})
    assert str(raised.value).splitlines() == [
        "<mapping>: top level, key 'timeout': must be a number of seconds > 0, or None or False "
        "for no limit; got an integer (0)",
        "<mapping>: top level, key 'thread_limit': thread_limit must be >= 1, got 0",
        "<mapping>: top level, key 'handlers', entry 1: must be a handler reference or a "
        "callable, not an integer (1)",
    ]
