"""A Unicode ``[[host]]`` name matches its IDNA (punycode) form in the Host header (SPEC 4;
issue 16 item 12)."""

from __future__ import annotations

import pytest

from asgi_cleanup.errors import SettingsError
from asgi_cleanup.settings import load_settings


def cleanup(outcome: object) -> None:
    pass


def directives(name: str, host: bytes) -> tuple[object, ...]:
    settings = load_settings({"host": [{"name": name, "handlers": [cleanup]}]})
    scope = {"type": "http", "path": "/", "root_path": "", "headers": [(b"host", host)]}
    return settings.directives_for(scope)


@pytest.mark.parametrize(
    ("name", "host"),
    [
        pytest.param("bücher.example", b"xn--bcher-kva.example", id="punycode-header"),
        pytest.param("bücher.example", b"XN--BCHER-KVA.example:8000", id="case-and-port"),
        pytest.param("Bücher.Example", "bücher.example".encode(), id="utf-8-header"),
        pytest.param("*.bücher.example", b"shop.xn--bcher-kva.example", id="wildcard"),
        pytest.param("xn--bcher-kva.example", "bücher.example".encode(), id="punycode-name"),
    ],
)
def test_a_unicode_host_name_matches_its_idna_form(name: str, host: bytes) -> None:
    assert directives(name, host) == (cleanup,)


def test_a_unicode_host_name_does_not_match_another_name() -> None:
    assert directives("bücher.example", b"bucher.example") == ()


def test_explain_takes_a_unicode_or_punycode_host() -> None:
    settings = load_settings({"host": [{"name": "bücher.example", "handlers": [cleanup]}]})
    assert len(settings.explain("bücher.example", "/")) == 1
    assert len(settings.explain("xn--bcher-kva.example:443", "/")) == 1


def test_an_invalid_internationalised_name_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="is not a valid internationalised host name"):
        load_settings({"host": [{"name": "ü" + "a" * 70 + ".example", "handlers": []}]})


def test_a_huge_non_ascii_host_header_matches_nothing() -> None:
    assert directives("bücher.example", "ü".encode() * 100_000) == ()
