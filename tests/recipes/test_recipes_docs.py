"""The code on the docs pages runs as shown.

On the recipe pages it is the examples' own code, so the pages cannot drift from what the other
recipe tests run: a fenced block right after ``<!-- example: PATH -->`` must appear, verbatim,
in the file PATH (relative to the repository root). The README's examples, the home page's and
getting-started's are written to files as shown (a block titled ``myapp/main.py`` is that file)
and served in-process.
"""

from __future__ import annotations

import importlib
import logging
import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from recipe_support import client_for
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_cleanup import CleanupMiddleware

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = REPO_ROOT / "docs" / "recipes"
EXCERPT = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)^```", re.DOTALL | re.MULTILINE)

EXPECTED_PAGES = {
    *("index", "starlette", "fastapi", "litestar", "django", "quart", "raw-asgi"),
    *("celery", "arq"),  # job queues (docs/queues.md)
}


def excerpts() -> list[tuple[str, str, str]]:
    found = []
    for page in sorted(PAGES.glob("*.md")):
        for match in EXCERPT.finditer(page.read_text(encoding="utf-8")):
            found.append((page.name, match.group(1), match.group(2)))
    return found


def test_every_framework_has_a_recipe_page_quoting_its_example() -> None:
    quoted = {page.removesuffix(".md") for page, _, _ in excerpts()}

    assert {page.stem for page in PAGES.glob("*.md")} == EXPECTED_PAGES
    assert quoted == EXPECTED_PAGES


@pytest.mark.parametrize(
    ("page", "source", "code"),
    excerpts(),
    ids=[f"{page}:{source}:{n}" for n, (page, source, _) in enumerate(excerpts())],
)
def test_recipe_page_code_is_verbatim_from_its_example(page: str, source: str, code: str) -> None:
    assert code in (REPO_ROOT / source).read_text(encoding="utf-8"), f"{page} quotes {source}"


# --- the README's and the other pages' own examples run as shown ---------------------------------

BLOCK = re.compile(r'^```(\w+)(?: title="([^"]+)")?\n(.*?)^```', re.DOTALL | re.MULTILINE)


def blocks(page: str, language: str) -> list[tuple[str | None, str]]:
    """The (title, code) of each ``language`` block of ``page`` (relative to the root)."""
    text = (REPO_ROOT / page).read_text(encoding="utf-8")
    return [(title or None, code) for lang, title, code in BLOCK.findall(text) if lang == language]


@pytest.fixture
def fresh_myapp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path`` as the working directory and first on ``sys.path``, for a ``myapp``
    package written there; no ``myapp`` module is left imported before or after."""

    def forget() -> None:
        for name in [name for name in sys.modules if name.split(".")[0] == "myapp"]:
            del sys.modules[name]

    forget()
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    forget()


def write(root: Path, files: dict[str, str]) -> None:
    for name, code in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code, encoding="utf-8")


async def get(app: Any, *paths: str) -> list[tuple[int, str]]:
    answers = []
    async with client_for(app) as client:
        for path in paths:
            response = await client.get(path)
            answers.append((response.status_code, response.text))
    return answers


@pytest.mark.anyio
@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
async def test_first_example_serves_hello_then_closes_the_session(
    page: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [(_, code)] = blocks(page, "python")
    write(tmp_path, {"example.py": code})
    app = runpy.run_path(str(tmp_path / "example.py"))["app"]

    assert await get(app, "/") == [(200, "hello")]
    assert capsys.readouterr().out == "session closed\n"


@pytest.mark.anyio
async def test_readme_settings_example_runs_its_handlers_where_it_says(
    fresh_myapp: Path,
) -> None:
    [(_, toml)] = blocks("README.md", "toml")
    handler = "calls = []\n\n\ndef {name}(outcome):\n    calls.append(outcome.scope['path'])\n"
    write(
        fresh_myapp,
        {
            "cleanup.toml": toml,
            "myapp/__init__.py": "",
            "myapp/db.py": handler.format(name="close_pools"),
            "myapp/admin.py": handler.format(name="audit"),
        },
    )
    app = CleanupMiddleware(PlainTextResponse("ok"), settings="cleanup.toml")
    await get(app, "/", "/admin/users")

    assert sys.modules["myapp.db"].calls == ["/", "/admin/users"]
    assert sys.modules["myapp.admin"].calls == ["/admin/users"]


def getting_started_project() -> dict[str, str]:
    """The files of getting-started.md's titled blocks."""
    titled = [
        *blocks("docs/getting-started.md", "python"),
        *blocks("docs/getting-started.md", "toml"),
    ]
    files = {title: code for title, code in titled if title is not None}
    assert set(files) == {"myapp/main.py", "myapp/cleanups.py", "cleanup.toml"}
    return {"myapp/__init__.py": "", **files}


def import_main(root: Path, files: dict[str, str]) -> ModuleType:
    """``myapp.main`` of the project ``files``, written under ``root``."""
    write(root, files)
    return importlib.import_module("myapp.main")


def untitled_python(page: str) -> list[str]:
    return [code for title, code in blocks(page, "python") if title is None]


@pytest.mark.anyio
async def test_getting_started_app_serves_hello_then_writes_the_audit_line(
    fresh_myapp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    main = import_main(fresh_myapp, getting_started_project())

    assert await get(main.app, "/") == [(200, "hello")]
    assert "audit: / served" in caplog.messages


@pytest.mark.anyio
async def test_getting_started_report_endpoint_logs_how_the_request_ended(
    fresh_myapp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    main = import_main(fresh_myapp, getting_started_project())
    report, _settings_line = untitled_python("docs/getting-started.md")
    exec(report, vars(main))
    app = CleanupMiddleware(Starlette(routes=[Route("/report", main.report)]))

    assert await get(app, "/report") == [(200, "done")]
    assert "status 200, exception None" in caplog.messages


def with_settings(project: dict[str, str]) -> dict[str, str]:
    """The project once main.py's last line is the page's line that gives it the settings."""
    _report, settings_line = untitled_python("docs/getting-started.md")
    main = project["myapp/main.py"].rstrip("\n").splitlines()
    assert main[-1].startswith("app = ")
    assert settings_line.startswith("app = ")
    return {**project, "myapp/main.py": "\n".join([*main[:-1], settings_line])}


@pytest.mark.anyio
async def test_getting_started_settings_run_the_directive_handlers_after_the_dynamic_cleanup(
    fresh_myapp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    main = import_main(fresh_myapp, with_settings(getting_started_project()))

    assert await get(main.app, "/", "/admin/users") == [(200, "hello"), (404, "Not Found")]
    messages = [m for m in caplog.messages if m.startswith(("audit", "GET", "admin"))]
    assert [m.split(" in ")[0] for m in messages] == [
        "audit: / served",
        "GET /: status 200",
        "GET /admin/users: status 404",
        "admin: /admin/users ended with status 404",
    ]


def test_getting_started_cli_commands_work_from_the_project_directory(tmp_path: Path) -> None:
    write(tmp_path, with_settings(getting_started_project()))
    cli = Path(sys.executable).with_name("asgi-cleanup")

    def run(*args: str) -> str:
        done = subprocess.run(
            [str(cli), *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run("check", "cleanup.toml")
    explained = run("explain", "cleanup.toml", "--path", "/admin/users")
    assert explained.index("myapp.cleanups:log_request") < explained.index(
        "myapp.cleanups:audit_admin"
    )
