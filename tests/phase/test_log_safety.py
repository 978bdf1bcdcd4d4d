"""What a log record says about a request is safe to write anywhere (SPEC 3): escaped, and
cut to at most 1 KiB saying how long it was."""

from __future__ import annotations

import pytest

from asgi_cleanup._describe import describe_request, log_safe


def http(path: str, method: str = "GET") -> dict[str, object]:
    return {"type": "http", "method": method, "path": path}


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        pytest.param("/a\nb", "/a\\x0ab", id="newline"),
        pytest.param("/a\x1b[31mb", "/a\\x1b[31mb", id="escape-sequence"),
        pytest.param("/a\x85b", "/a\\x85b", id="c1-next-line"),
        pytest.param("/a\u2028b", "/a\\u2028b", id="line-separator"),
        pytest.param("/a\u2029b", "/a\\u2029b", id="paragraph-separator"),
        pytest.param("/a\ud800b", "/a\\ud800b", id="lone-high-surrogate"),
        pytest.param("/a\udfffb", "/a\\udfffb", id="lone-low-surrogate"),
        pytest.param("/caf\u00e9/\u65e5\u672c", "/caf\u00e9/\u65e5\u672c", id="unicode-kept"),
    ],
)
def test_describe_request_escapes_what_could_split_or_drop_a_log_line(
    path: str, shown: str
) -> None:
    described = describe_request(http(path))
    assert described == f"GET {shown}"
    assert len(described.splitlines()) == 1
    described.encode("utf-8")  # a UTF-8 handler writes it


def test_describe_request_cuts_a_long_path_saying_how_long_it_was() -> None:
    described = describe_request(http("/" + "a" * (1024 * 1024 - 1)))
    assert described.endswith("… (1048576 characters)")
    assert described.startswith("GET /aaaa")
    assert len(described.encode()) <= 4 + 1024


def test_describe_request_bounds_bytes_of_escaped_and_wide_characters() -> None:
    for char in ("\x00", "\u65e5", "\ud800"):
        described = log_safe("/" + char * 5000)
        assert len(described.encode("utf-8")) <= 1024
        assert described.endswith("… (5001 characters)")
        # a cut never leaves half an escape
        assert not described.removesuffix("… (5001 characters)").endswith(("\\", "\\x", "\\u"))


def test_describe_request_keeps_a_path_of_exactly_1_kib() -> None:
    path = "/" + "a" * 1023
    assert describe_request(http(path)) == f"GET {path}"


def test_describe_request_of_a_websocket() -> None:
    assert describe_request({"type": "websocket", "path": "/ws\u2028"}) == "WEBSOCKET /ws\\u2028"
