"""The code on the recipe pages is the examples' own code, so the pages cannot drift from what
the other recipe tests run.

A fenced block right after ``<!-- example: PATH -->`` must appear, verbatim, in the file PATH
(relative to the repository root).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PAGES = REPO_ROOT / "docs" / "recipes"
EXCERPT = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)^```", re.DOTALL | re.MULTILINE)

EXPECTED_PAGES = {"index", "starlette", "fastapi", "litestar", "django", "quart", "raw-asgi"}


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
