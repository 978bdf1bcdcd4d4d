"""Settings files that would hang or crash a reader are prompt SettingsErrors naming the file
(SPEC 4; issue 16 item 9), and so is every handler module that raises at import; ``check``
exits 1 with the message in each case."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from asgi_cleanup.cli import main
from asgi_cleanup.errors import SettingsError
from asgi_cleanup.settings import load_settings


def settings_error(source: Any) -> str:
    """The SettingsError message of loading ``source``, within 5 s (a hang fails the test)."""
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            load_settings(source)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(5)
    assert outcome, "load_settings() hung"
    assert isinstance(outcome[0], SettingsError), repr(outcome[0])
    return str(outcome[0])


def check_exits_1_with(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["check", str(path), "--app-dir", str(path.parent)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def module_raising_at_import(tmp_path: Path, body: str) -> str:
    name = f"raises_at_import_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(body, encoding="utf-8")
    return name


def test_deep_nesting_is_a_settings_error_not_a_recursion_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("timeout = 1\nhandlers = " + "[" * 3000 + "]" * 3000 + "\n", encoding="utf-8")
    assert settings_error(path) == (
        f"{path}: line 2: nested more than 16 arrays or tables deep; "
        "a settings file needs at most 3"
    )
    assert check_exits_1_with(path, capsys).startswith(f"{path}: line 2: nested more than 16")


def test_brackets_inside_strings_and_comments_are_not_nesting(tmp_path: Path) -> None:
    path = tmp_path / "brackets.toml"
    opened = "[" * 40
    path.write_text(
        f'# {opened}\n[[location]]\npath = "/{opened}"\nhandlers = []\n'
        f"extensions = ['.{opened}', \"\"\"\n.{opened}\"\"\", '''.{opened}''']\n",
        encoding="utf-8",
    )
    assert load_settings(path).summary().startswith("0 server-wide handlers, 0 hosts, 1 location")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_at_once_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cleanup.toml"
    os.mkfifo(path)
    assert settings_error(path) == (
        f"{path}: cannot read settings file: it is a FIFO (named pipe), not a regular file"
    )
    assert "FIFO" in check_exits_1_with(path, capsys)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_dev_zero_is_refused_without_reading_it() -> None:
    assert settings_error("/dev/zero") == (
        "/dev/zero: cannot read settings file: it is a device, not a regular file"
    )


def test_a_file_over_1_mib_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "big.toml"
    path.write_bytes(b"#" * (1024 * 1024) + b"\n")
    assert settings_error(path) == (
        f"{path}: settings file is larger than 1 MiB ({1024 * 1024 + 1} bytes)"
    )
    assert "larger than 1 MiB" in check_exits_1_with(path, capsys)


def test_a_file_of_exactly_1_mib_is_read(tmp_path: Path) -> None:
    path = tmp_path / "full.toml"
    path.write_bytes(b"timeout = 1\n" + b"#" * (1024 * 1024 - 13) + b"\n")
    assert load_settings(path).options == {"timeout": 1.0}


@pytest.mark.parametrize(
    ("body", "raised"),
    [
        pytest.param("import sys\nsys.exit(0)\n", "SystemExit: 0", id="sys-exit-0"),
        pytest.param("raise SystemExit('bye')\n", "SystemExit: bye", id="system-exit"),
        pytest.param("raise KeyboardInterrupt\n", "KeyboardInterrupt: ", id="keyboard-interrupt"),
        pytest.param("class Mine(BaseException): pass\nraise Mine('x')\n", "Mine: x", id="own"),
    ],
)
def test_a_module_raising_any_base_exception_at_import_is_a_settings_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    raised: str,
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = module_raising_at_import(tmp_path, body)
    path = tmp_path / "cleanup.toml"
    path.write_text(f'handlers = ["{module}:f"]\n', encoding="utf-8")
    expected = (
        f"{path}:1: top level, key 'handlers', entry '{module}:f': "
        f"importing module '{module}' raised {raised}"
    )
    assert settings_error(path) == expected
    sys.modules.pop(module, None)
    assert check_exits_1_with(path, capsys) == expected + "\n"


def test_check_exits_1_when_a_handler_module_calls_sys_exit_in_a_subprocess(
    tmp_path: Path,
) -> None:
    import subprocess

    module = module_raising_at_import(tmp_path, "import sys\nsys.exit(0)\n")
    (tmp_path / "cleanup.toml").write_text(f'handlers = ["{module}"]\n', encoding="utf-8")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "asgi_cleanup", "check", "cleanup.toml"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert f"importing module '{module}' raised SystemExit: 0" in result.stderr


@pytest.mark.parametrize("where", ["handlers", "on_error", "key"])
def test_a_huge_reference_is_echoed_cut_short(where: str) -> None:
    huge = "a" * 10_000_000
    data: dict[str, Any] = {
        "handlers": {"handlers": [huge]},
        "on_error": {"on_error": huge},
        "key": {huge: 1},
    }[where]
    message = settings_error(data)
    assert len(message) < 2000
    assert "(10000002 characters)" in message


def test_a_relative_path_that_does_not_exist_says_where_it_was_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert settings_error("conf/cleanup.toml") == (
        "conf/cleanup.toml: cannot read settings file: No such file or directory "
        f"(looked for {tmp_path / 'conf' / 'cleanup.toml'}: relative to the working directory "
        f"{tmp_path})"
    )
