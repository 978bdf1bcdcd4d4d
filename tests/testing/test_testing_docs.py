"""docs/testing.md's examples run as shown: its titled blocks are the files of a small
project, run with ``pytester``; the failure it shows is the one pytest prints."""

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```', re.DOTALL | re.MULTILINE)


def blocks() -> list[tuple[str, str | None, str]]:
    """(language, title or None, code) of each fenced block of the page."""
    text = PAGE.read_text(encoding="utf-8")
    return [(language, title or None, code) for language, title, code in BLOCK.findall(text)]


@pytest.fixture
def project(pytester: pytest.Pytester, anyio_backend: str) -> pytest.Pytester:
    """The page's files, but for ``pyproject.toml``; async tests run on ``anyio_backend``."""
    files = {title: code for _, title, code in blocks() if title is not None}
    assert set(files) == {
        "myapp.py",
        "test_myapp.py",
        "test_myapp_testclient.py",
        "test_myapp_strict.py",
        "pyproject.toml",
    }
    for name, code in files.items():
        if name != "pyproject.toml":
            (pytester.path / name).write_text(code, encoding="utf-8")
    pytester.makeconftest(
        f"import pytest\n\n\n@pytest.fixture\ndef anyio_backend():\n    return {anyio_backend!r}\n"
    )
    pytester.syspathinsert()
    return pytester


def test_the_examples_pass_but_for_the_failing_cleanup_shown(project: pytest.Pytester) -> None:
    result = project.runpytest()
    result.assert_outcomes(passed=4, failed=1)
    [shown] = [code for language, _, code in blocks() if language == "text"]
    expected = []
    for line in shown.splitlines():
        if line.startswith("_"):
            expected.append(f"*_ {line.strip('_ ')} _*")
        elif line.strip() != "...":
            expected.append(line.replace("...", "*"))
    result.stdout.fnmatch_lines(expected)


def test_the_ini_option_makes_every_test_strict(project: pytest.Pytester) -> None:
    [toml] = [code for _, title, code in blocks() if title == "pyproject.toml"]
    project.makefile(".toml", pyproject=toml)
    unmarked = "def test_unmarked(client):\n    client.get('/orders')\n"
    strict = (project.path / "test_myapp_strict.py").read_text(encoding="utf-8")
    project.makepyfile(test_myapp_strict=strict.replace("@pytest.mark.asgi_cleanup_strict\n", ""))
    project.makepyfile(test_unmarked=f"from test_myapp_strict import client\n\n\n{unmarked}")
    result = project.runpytest("test_myapp_strict.py", "test_unmarked.py")
    result.assert_outcomes(passed=1, failed=2)


def test_the_recorder_without_pytest_runs(project: pytest.Pytester) -> None:
    [code] = [code for language, title, code in blocks() if language == "python" and not title]
    import myapp

    exec(code, {"app": myapp.app})
