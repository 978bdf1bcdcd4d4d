"""The built docs site works offline, in a real browser: Debian's chromium, headless, with
every request that is not for 127.0.0.1 failed. The home page's Mermaid diagram renders (an
SVG in place of the ``sequenceDiagram`` text), no page asks for anything from outside (a CDN,
Google Fonts), no page logs a console error, and code in tables breaks only at spaces.

CI installs chromium first (``.ci/install-chromium``); elsewhere the test is skipped without
it.
"""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, chromium

pytestmark = pytest.mark.real_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = chromium()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from the sources as ``make docs`` does, into a temporary directory."""
    site_dir = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=True,
        capture_output=True,
        timeout=120,
    )
    return site_dir


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def base_url(site: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_address[1]}/"
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run this test: .ci/run installs chromium first")
        pytest.skip("chromium is not installed (.ci/install-chromium installs Debian's, as root)")
    with Browser(CHROMIUM).running() as running:
        yield running


def pages(site: Path) -> list[str]:
    return sorted(
        str(path.parent.relative_to(site)).removeprefix(".") + "/"
        for path in site.rglob("index.html")
    )


def find(node: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """``node`` and every node below it named ``name`` (shadow roots included)."""
    if node.get("nodeName", "").lower() == name:
        yield node
    for child in [*node.get("children", ()), *node.get("shadowRoots", ())]:
        yield from find(child, name)


def text(node: dict[str, Any]) -> str:
    own = node.get("nodeValue", "") if node.get("nodeType") == 3 else ""
    return own + "".join(text(child) for child in node.get("children", ()))


def is_mermaid_host(node: dict[str, Any]) -> bool:
    attributes = node.get("attributes", [])
    return dict(zip(attributes[::2], attributes[1::2], strict=True)).get("class") == "mermaid"


@pytest.mark.timeout(120)
def test_home_page_diagram_renders_offline_without_console_errors(
    browser: Browser, base_url: str
) -> None:
    browser.load(base_url)
    for _ in range(100):  # Material renders Mermaid after the load event
        if browser.evaluate("document.querySelector('pre.mermaid, div.mermaid:empty') === null"):
            break
        browser.settle(0.1)
    browser.settle(0.5)

    hosts = [div for div in find(browser.document(), "div") if is_mermaid_host(div)]
    assert hosts, "the diagram is still its text: Mermaid did not run"
    [host] = hosts
    svgs = [svg for root in host.get("shadowRoots", ()) for svg in find(root, "svg")]
    assert svgs, "no SVG in place of the diagram"
    drawn = text(svgs[0])
    assert "CleanupMiddleware" in drawn
    assert "sequenceDiagram" not in drawn
    assert "Syntax error" not in drawn
    assert browser.evaluate("document.body.innerText.includes('sequenceDiagram')") is False
    assert browser.outside == []
    assert browser.errors == []


@pytest.mark.timeout(180)
def test_every_page_loads_offline_without_console_errors(
    browser: Browser, base_url: str, site: Path
) -> None:
    problems = {}
    for page in pages(site):
        browser.outside.clear()
        browser.errors.clear()
        browser.load(base_url + page.lstrip("/"))
        browser.settle(0.3)
        if browser.outside or browser.errors:
            problems[page] = (list(browser.outside), list(browser.errors))

    assert len(pages(site)) >= 13
    assert problems == {}


#: The names in a page's tables that a browser broke across lines, in page order.
BROKEN_CODE = """
[...document.querySelectorAll('.md-typeset table code')]
  .filter(code => !/\\s/.test(code.textContent.trim()))
  .filter(code => new Set([...code.getClientRects()].map(rect => rect.top)).size > 1)
  .map(code => code.textContent)
"""


@pytest.mark.timeout(120)
def test_code_in_the_comparison_table_is_never_broken_inside_a_name(
    browser: Browser, base_url: str
) -> None:
    browser.page.call("Emulation.setDeviceMetricsOverride", width=1024, height=768,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip
    try:
        browser.load(base_url + "comparison/")
        names = browser.evaluate("document.querySelectorAll('.md-typeset table code').length")
        broken = browser.evaluate(BROKEN_CODE)
    finally:
        browser.page.call("Emulation.clearDeviceMetricsOverride")

    assert names > 10
    assert broken == []
