"""A headless Debian chromium driven over the DevTools protocol (a websocket; wsproto speaks
it), for the test that loads the built docs site offline (``test_docs_site.py``).

:class:`Browser` starts chromium on an empty profile with the network cut off: every request
that is not for 127.0.0.1 is failed and recorded (``outside``), and names resolve to nothing
but 127.0.0.1 as a backstop. :meth:`Browser.load` opens a page and collects its console
errors, uncaught exceptions and failed loads (``errors``). Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import wsproto
import wsproto.events as ws_events

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # runs as root in CI
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
START_TIMEOUT = 30.0
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium() -> str | None:
    """The chromium executable on PATH, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


class DevTools:
    """One websocket to a DevTools target: commands, and ``on_event`` called for each event
    as it comes (it may :meth:`send`, not :meth:`call`)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.port is not None, url
        self.sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port), 10.0)
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.CLIENT)
        self.ids = itertools.count(1)
        self.on_event: Callable[[str, dict[str, Any]], None] = lambda method, params: None
        self._text: list[str] = []
        self._send(ws_events.Request(host=parts.netloc, target=parts.path))
        self._next(lambda event: isinstance(event, ws_events.AcceptConnection), 10.0)

    def _send(self, event: ws_events.Event) -> None:
        self.sock.sendall(self.ws.send(event))

    def _next(self, done: Any, timeout: float) -> Any:
        """Read until ``done(event)`` holds for a wsproto event or a whole message; that one."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.ws.events():
                if isinstance(event, ws_events.TextMessage):
                    self._text.append(event.data)
                    if not event.message_finished:
                        continue
                    message = json.loads("".join(self._text))
                    self._text.clear()
                    if done(message):
                        return message
                    if "method" in message:
                        self.on_event(message["method"], message.get("params", {}))
                elif isinstance(event, ws_events.Ping):
                    self._send(event.response())
                elif done(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from chromium's DevTools in time")
            self.sock.settimeout(remaining)
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("chromium closed its DevTools connection")
            self.ws.receive_data(data)

    def send(self, method: str, **params: Any) -> int:
        """Send one command without waiting for its result; its id."""
        call_id = next(self.ids)
        message = {"id": call_id, "method": method, "params": params}
        self._send(ws_events.TextMessage(json.dumps(message)))
        return call_id

    def call(self, method: str, timeout: float = 15.0, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its result."""
        call_id = self.send(method, **params)
        reply: dict[str, Any] = self._next(
            lambda m: isinstance(m, dict) and m.get("id") == call_id, timeout
        )
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def pump(self, seconds: float) -> None:
        """Take in the events of the next ``seconds``."""
        with contextlib.suppress(TimeoutError):
            self._next(lambda message: False, seconds)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


@dataclass
class Browser:
    """A headless chromium with one page (see the module's docstring)."""

    executable: str
    outside: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    loaded: bool = False
    page: DevTools = field(init=False)

    @contextlib.contextmanager
    def running(self) -> Iterator[Browser]:
        # Chromium's helper processes may still write to the profile while they die.
        profiles = tempfile.TemporaryDirectory(prefix="chromium-", ignore_cleanup_errors=True)
        with profiles as profile:
            proc = subprocess.Popen(
                [self.executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its helper processes go with it
            )
            try:
                self.page = DevTools(self._page_url(self._browser_url(proc)))
                try:
                    self._start()
                    yield self
                finally:
                    self.page.close()
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10.0)
                assert proc.stderr is not None
                proc.stderr.close()

    @staticmethod
    def _browser_url(proc: subprocess.Popen[str]) -> str:
        assert proc.stderr is not None
        deadline = time.monotonic() + START_TIMEOUT
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                break
            seen.append(line)
            if match := LISTENING.search(line):
                return match.group(1)
        raise RuntimeError("chromium did not open DevTools:\n" + "".join(seen[-20:]))

    @staticmethod
    def _page_url(browser_url: str) -> str:
        browser = DevTools(browser_url)
        try:
            targets = browser.call("Target.getTargets")["targetInfos"]
            [page] = [target for target in targets if target["type"] == "page"]
        finally:
            browser.close()
        port = urlsplit(browser_url).port
        return f"ws://127.0.0.1:{port}/devtools/page/{page['targetId']}"

    def _start(self) -> None:
        self.page.on_event = self._on_event
        for domain in ("Page", "Runtime", "Log"):
            self.page.call(f"{domain}.enable")
        self.page.call("Fetch.enable", patterns=[{"urlPattern": "*"}])

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        """Let requests for 127.0.0.1 through and fail the others; record errors."""
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if urlsplit(url).hostname == "127.0.0.1":
                self.page.send("Fetch.continueRequest", requestId=params["requestId"])
            else:
                self.outside.append(url)
                self.page.send(
                    "Fetch.failRequest",
                    requestId=params["requestId"],
                    errorReason="InternetDisconnected",
                )
        elif method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            args = [str(arg.get("value", arg.get("description"))) for arg in params["args"]]
            self.errors.append(" ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"{entry['text']} ({entry.get('url', '')})")

    def load(self, url: str, timeout: float = 20.0) -> None:
        """Open ``url`` and wait for its load event, serving its requests meanwhile."""
        self.loaded = False
        self.page.call("Page.navigate", url=url, timeout=timeout)
        deadline = time.monotonic() + timeout
        while not self.loaded:
            assert time.monotonic() < deadline, f"{url} did not load within {timeout} s"
            self.page.pump(0.05)

    def settle(self, seconds: float) -> None:
        """Serve the page's requests and record its errors for ``seconds``."""
        self.page.pump(seconds)

    def evaluate(self, expression: str) -> Any:
        result = self.page.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def document(self) -> dict[str, Any]:
        """The page's whole DOM, closed shadow roots included (Material renders Mermaid's SVG
        into one)."""
        root: dict[str, Any] = self.page.call("DOM.getDocument", depth=-1, pierce=True)["root"]
        return root
