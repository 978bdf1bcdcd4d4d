"""The recipes of docs/observability.md (examples/observability/) run with the real libraries and
no network, each in a process of its own (they set process-wide state: OpenTelemetry's global
provider, prometheus_client's registry, Sentry's client)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "observability"
PAGE = ROOT / "docs" / "observability.md"
EXCERPT = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)^```", re.DOTALL | re.MULTILINE)

# Imports the recipe, serves two requests in-process, then runs the check.
DRIVER = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import anyio
from otel_support import call
{setup}
from {module} import app

async def main():
    await call(app, "/")
    await call(app, "/")
    await app.drain()

anyio.run(main)
{check}
"""


def run_recipe(module: str, check: str, setup: str = "") -> str:
    script = DRIVER.format(
        module=module, setup=textwrap.dedent(setup), check=textwrap.dedent(check)
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(EXAMPLES), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_console_recipe_prints_each_cleanups_span() -> None:
    out = run_recipe("console", "")
    assert out.count('"name": "observed_app.close_session"') == 2
    assert out.count('"name": "observed_app.flush_audit"') == 2
    assert '"error.type": "ConnectionError"' in out


def test_the_prometheus_recipe_exposes_the_cleanup_duration_histogram() -> None:
    check = """
        from prometheus_client import generate_latest
        print(generate_latest().decode())
    """
    out = run_recipe("prometheus", check)
    count = re.compile(r"^asgi_cleanup_cleanup_duration_seconds_count\{(.*)\} (\S+)$", re.MULTILINE)
    found = {}
    for labels, value in count.findall(out):
        label = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        found[label["asgi_cleanup_cleanup_name"], label["error_type"]] = float(value)
        assert label["asgi_cleanup_cleanup_source"] == "registered"
    assert found == {
        ("observed_app.close_session", ""): 2.0,
        ("observed_app.flush_audit", "ConnectionError"): 2.0,
    }


def test_the_sentry_recipe_sends_each_failure_tagged_with_the_cleanups_name() -> None:
    setup = """
        import sentry_sdk
        from sentry_sdk.transport import Transport

        class Recording(Transport):
            events = []

            def capture_envelope(self, envelope):
                self.events.extend(item.payload.json for item in envelope.items)

        sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=Recording)
    """
    check = """
        sentry_sdk.flush()
        for event in Recording.events:
            if event and event.get("exception"):
                [error] = event["exception"]["values"]
                print(event["tags"]["cleanup"], error["type"], error["value"])
    """
    out = run_recipe("sentry", check, setup)
    assert (
        out.splitlines() == ["observed_app.flush_audit ConnectionError audit store unreachable"] * 2
    )


@pytest.mark.parametrize("name", ["console", "prometheus", "sentry"])
def test_the_page_quotes_each_recipe_as_it_is(name: str) -> None:
    quoted = {path: code for path, code in EXCERPT.findall(PAGE.read_text(encoding="utf-8"))}
    path = f"examples/observability/{name}.py"
    assert path in quoted
    assert quoted[path] in (ROOT / path).read_text(encoding="utf-8")
