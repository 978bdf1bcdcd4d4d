"""Host names: a request's Host header and the ``[[host]]`` names it is compared with.

Both sides are compared in their ASCII form: a Unicode name (``bücher.example``) as its IDNA
form (``xn--bcher-kva.example``), which is what browsers send (SPEC 4).
"""

from __future__ import annotations

#: The longest DNS name; a longer Host header matches no name and is not IDNA-encoded (whose
#: cost grows with the length: the header is the client's).
MAX_NAME = 253


def to_ascii(host: str) -> str:
    """``host`` in its IDNA (punycode) form if it is not ASCII.

    :raises ValueError: if it is not a valid internationalised domain name.
    """
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"is not a valid internationalised host name ({exc})") from None


def normalize_host(value: str) -> str:
    """A Host header value (or server address) as compared with ``[[host]]`` names.

    Lower-cased, the port removed (``example.com:8000`` → ``example.com``,
    ``[::1]:8000`` → ``::1``), IPv6 brackets removed, a trailing dot (fully qualified
    name) removed, a Unicode name in its IDNA form. A bare IPv6 address without brackets is
    kept whole.
    """
    host = value.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end != -1 else host[1:]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".")
    if len(host) > MAX_NAME:
        return host  # no DNS name is this long: it matches nothing, and is not encoded
    try:
        return to_ascii(host)
    except ValueError:
        return host  # matches no [[host]] name, all of which are ASCII


def parse_host_pattern(name: str) -> str:
    """Validate and normalise a ``[[host]]`` ``name`` (or a location's ``host``).

    Lower-cased, a trailing dot removed, a Unicode name in its IDNA form. ``"*.example.com"``
    is a wildcard for any name below ``example.com``; ``"[::1]"`` and ``"::1"`` are the same
    IPv6 literal.

    :raises ValueError: for an empty name, a port, whitespace or ``/``, or a ``*`` anywhere
        but as the whole first label.
    """
    host = name.lower()
    if not host or any(c.isspace() or c == "/" for c in host):
        raise ValueError("is not a host name")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif host.count(":") == 1:
        raise ValueError("must not include a port: hosts are compared with the port removed")
    wildcard = host.startswith("*.")
    rest = host[2:] if wildcard else host
    if "*" in rest:
        raise ValueError("may only use '*' as its whole first label, as in '*.example.com'")
    rest = rest.rstrip(".")
    if not rest:
        raise ValueError("is not a host name")
    rest = to_ascii(rest)
    return "*." + rest if wildcard else rest


def host_matches(pattern: str, host: str | None) -> bool:
    """Whether a normalised host matches a pattern from :func:`parse_host_pattern`.

    ``*.example.com`` matches ``a.example.com`` and ``a.b.example.com``, not
    ``example.com``. No host (``None``) matches nothing.
    """
    if host is None:
        return False
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern
