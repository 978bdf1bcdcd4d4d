"""The ``asgi-cleanup`` command line: ``check`` and ``explain``, in a subprocess and in-process."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import asgi_cleanup
from asgi_cleanup.cli import main

REPO = Path(__file__).resolve().parents[2]
APP_DIR = Path(__file__).parent / "settings_app"

SETTINGS = """\
timeout = 2.5
handlers = ["settingsapp.db:close_pools"]

[[host]]
name = "*.example.com"
handlers = ["settingsapp.api:flush_audit"]

[[location]]
path = "/admin/reports"
extensions = [".csv"]
handlers = ["settingsapp.admin:export_log"]

[[location]]
path = "/admin"
handlers = ["settingsapp.admin", "settingsapp.db:close_pools"]
"""


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "cleanup.toml"
    path.write_text(SETTINGS, encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m asgi_cleanup ARGS`` in a fresh interpreter, the package importable."""
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "asgi_cleanup", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_subprocess_prints_one_summary_line_and_exits_0(
    tmp_path: Path, settings_file: Path
) -> None:
    result = run_cli("check", str(settings_file), "--app-dir", str(APP_DIR), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"{settings_file}: OK: 1 server-wide handler, 1 host, 2 locations, "
        "4 distinct handlers; options: timeout=2.5\n"
    )


def test_check_subprocess_prints_the_settings_error_to_stderr_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "cleanup.toml").write_text('handlerz = ["settingsapp.db"]\n', encoding="utf-8")
    result = run_cli("check", "cleanup.toml", cwd=tmp_path)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == (
        "cleanup.toml:1: top level: unknown key 'handlerz'; did you mean 'handlers'?\n"
    )


def test_explain_subprocess_lists_cleanups_in_run_order_with_their_contexts(
    tmp_path: Path, settings_file: Path
) -> None:
    result = run_cli(
        "explain",
        str(settings_file),
        "--app-dir",
        str(APP_DIR),
        "--host",
        "api.example.com:8000",
        "--path",
        "/admin/reports/q1.csv",
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "Directive cleanups for host 'api.example.com:8000', path '/admin/reports/q1.csv', "
        "in run order:",
        "1. settingsapp.db:close_pools        (server-wide)",
        "2. settingsapp.api:flush_audit       (host[0] *.example.com)",
        "3. settingsapp.admin:cleanuphandler  (location[1] /admin)",
        "4. settingsapp.admin:export_log      (location[0] /admin/reports | .csv)",
        "Left out as duplicates (a handler in several matching contexts runs once, first):",
        "   settingsapp.db:close_pools  (location[1] /admin): the same handler as 1.",
    ]


def test_explain_removes_root_path_before_matching_locations(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", str(settings_file), "--app-dir", str(APP_DIR)]
    assert main([*argv, "--path", "/mount/admin/x", "--root-path", "/mount"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Directive cleanups for no host, path '/mount/admin/x', root_path '/mount', in run order:",
        "1. settingsapp.db:close_pools        (server-wide)",
        "2. settingsapp.admin:cleanuphandler  (location[1] /admin)",
        "Left out as duplicates (a handler in several matching contexts runs once, first):",
        "   settingsapp.db:close_pools  (location[1] /admin): the same handler as 1.",
    ]


def test_explain_says_when_nothing_would_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text('[[location]]\npath = "/admin"\nhandlers = []\n', encoding="utf-8")
    assert main(["explain", str(path), "--host", "www.example.com", "--path", "/public"]) == 0
    assert capsys.readouterr().out == (
        "No directive cleanups for host 'www.example.com', path '/public'.\n"
    )


def test_explain_of_an_invalid_file_exits_1_with_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["explain", str(missing), "--path", "/"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{missing}: cannot read settings file: No such file or directory\n"


def test_check_reads_pyproject_tool_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(
        '[project]\nname = "x"\n\n[tool.asgi-cleanup]\nhandlers = ["settingsapp.db"]\n',
        encoding="utf-8",
    )
    assert main(["check", str(path), "--app-dir", str(APP_DIR)]) == 0
    assert capsys.readouterr().out == (
        f"{path}: OK: 1 server-wide handler, 0 hosts, 0 locations, 1 distinct handler\n"
    )


def test_handlers_are_imported_from_the_current_directory_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = f"cli_cwd_handlers_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("def close(outcome):\n    pass\n", encoding="utf-8")
    (tmp_path / "cleanup.toml").write_text(f'handlers = ["{module}:close"]\n', encoding="utf-8")
    here = {"", ".", str(tmp_path)}
    monkeypatch.setattr(sys, "path", [entry for entry in sys.path if entry not in here])
    monkeypatch.chdir(tmp_path)
    assert main(["check", "cleanup.toml"]) == 0, capsys.readouterr().err
    assert str(tmp_path) not in sys.path


def test_app_dir_is_where_handlers_are_imported_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = f"cli_app_dir_handlers_{uuid.uuid4().hex}"
    app_dir = tmp_path / "src"
    app_dir.mkdir()
    (app_dir / f"{module}.py").write_text("def close(outcome):\n    pass\n", encoding="utf-8")
    (tmp_path / "cleanup.toml").write_text(f'handlers = ["{module}:close"]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "cleanup.toml"]) == 1
    assert f"cannot import module {module!r}" in capsys.readouterr().err
    assert main(["check", "cleanup.toml", "--app-dir", "src"]) == 0
    assert str(app_dir) not in sys.path


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param([], id="no-command"),
        pytest.param(["explain", "cleanup.toml"], id="explain-without-path"),
        pytest.param(["lint", "cleanup.toml"], id="unknown-command"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err.startswith("usage: asgi-cleanup")


def test_installed_console_script_checks_a_file(tmp_path: Path, settings_file: Path) -> None:
    script = Path(sys.executable).with_name("asgi-cleanup")
    if not script.exists():
        pytest.skip("the asgi-cleanup console script is not installed (pip install -e .)")
    result = subprocess.run(
        [str(script), "check", str(settings_file), "--app-dir", str(APP_DIR)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"{settings_file}: OK: ")


# --- issue 17 item 9 and 8, issue 15: CLI edges ---------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["--version"])
    assert raised.value.code == 0
    assert capsys.readouterr().out == f"asgi-cleanup {asgi_cleanup.__version__}\n"


def test_explain_shows_a_bare_module_reference_with_the_function_that_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text('handlers = ["settingsapp.admin"]\n', encoding="utf-8")
    assert main(["explain", str(path), "--app-dir", str(APP_DIR), "--path", "/"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == (
        "1. settingsapp.admin:cleanuphandler  (server-wide)"
    )


@pytest.mark.parametrize("option", ["--path", "--root-path"])
def test_explain_rejects_a_path_without_a_leading_slash(
    settings_file: Path, option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", str(settings_file), "--path", "/admin/x", option, "admin"]
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    assert capsys.readouterr().err.endswith(
        f"error: {option} must start with '/', as scope paths do: try '/admin'\n"
    )


def test_check_of_an_empty_file_says_it_names_no_handlers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text("", encoding="utf-8")
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().out == (
        f"{path}: OK: 0 server-wide handlers, 0 hosts, 0 locations, 0 distinct handlers\n"
        "It names no handlers: no directive cleanups will run.\n"
    )


def test_check_failing_to_import_a_module_mentions_app_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cleanup.toml").write_text('handlers = ["h"]\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["check", "cleanup.toml"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "cleanup.toml:1: top level, key 'handlers', entry 'h': cannot import module 'h': "
        "No module named 'h'",
        f"hint: handler modules are imported with {tmp_path} first on sys.path; "
        "pass --app-dir DIR if they live elsewhere",
    ]


def test_check_of_a_missing_relative_path_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["check", "cleanup.toml"]) == 1
    assert capsys.readouterr().err == (
        "cleanup.toml: cannot read settings file: No such file or directory (looked for "
        f"{tmp_path / 'cleanup.toml'}: relative to the working directory {tmp_path})\n"
    )
