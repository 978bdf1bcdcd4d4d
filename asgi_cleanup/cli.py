"""The ``asgi-cleanup`` command line: check a settings file, explain what it runs.

``asgi-cleanup check FILE`` loads the file exactly as the middleware would (every handler
imported and checked) and prints a one-line summary; ``asgi-cleanup explain FILE --host H
--path P`` prints the directive cleanups that would run for such a request, in order, each
with the context it came from. Handler modules are imported relative to ``--app-dir``
(default: the current directory), which goes first on ``sys.path`` as uvicorn does for
``module:attr``. Exit status: 0 when the file is valid, 1 with the ``SettingsError`` message
on stderr when it is not, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._handlers import DEFAULT_ATTRIBUTE
from .errors import SettingsError
from .settings import Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "explain":
        for option, value in (("--path", args.path), ("--root-path", args.root_path)):
            if value and not value.startswith("/"):
                # scope["path"] always starts with "/": a path without it would silently
                # match no location.
                parser.error(f"{option} must start with '/', as scope paths do: try '/{value}'")
    app_dir = os.path.abspath(args.app_dir)
    sys.path.insert(0, app_dir)
    try:
        settings = load_settings(args.file)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        if "cannot import module" in str(exc):
            print(
                f"hint: handler modules are imported with {app_dir} first on sys.path; "
                "pass --app-dir DIR if they live elsewhere",
                file=sys.stderr,
            )
        return 1
    finally:
        # Leave sys.path as found when main() is called in-process (tests, embedding).
        sys.path.remove(app_dir)
    if args.command == "check":
        print(f"{settings.source}: OK: {settings.summary()}")
        if not settings.distinct_handlers:
            print("It names no handlers: no directive cleanups will run.")
    else:
        _explain(settings, args.host, args.path, args.root_path)
    return 0


def shown(ref: str) -> str:
    """A reference as the function it runs: a bare module ``pkg.mod`` as
    ``pkg.mod:cleanuphandler``."""
    return ref if ":" in ref else f"{ref}:{DEFAULT_ATTRIBUTE}"


def _explain(settings: Settings, host: str | None, path: str, root_path: str) -> None:
    request = f"host {host!r}" if host else "no host"
    request += f", path {path!r}" + (f", root_path {root_path!r}" if root_path else "")
    entries = settings.explain(host, path, root_path)
    if not entries:
        print(f"No directive cleanups for {request}.")
        return
    print(f"Directive cleanups for {request}, in run order:")
    width = max(len(shown(ref)) for ref, _, _ in entries)
    number_width = len(str(len(entries)))
    for number, (ref, _, context) in enumerate(entries, 1):
        print(f"{number:>{number_width}}. {shown(ref):<{width}}  ({context})")
    dropped = settings.dropped(host, path, root_path)
    if dropped:
        print("Left out as duplicates (a handler in several matching contexts runs once, first):")
        numbers = {id(entry): number for number, entry in enumerate(entries, 1)}
        for (ref, _, context), kept in dropped:
            first = numbers.get(id(kept))
            same = f"the same handler as {first}." if first else f"the same handler as {kept[0]}."
            print(f"   {shown(ref)}  ({context}): {same}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asgi-cleanup",
        description="Check and explain asgi-cleanup settings files (directive cleanups).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", help="settings file: a .toml file, or pyproject.toml")
    common.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="import handler modules from DIR, put first on sys.path (default: current directory)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "check",
        parents=[common],
        help="validate a settings file and import every handler",
        description="Exit 0 and print a summary when FILE is valid; otherwise exit 1.",
    )
    explain = commands.add_parser(
        "explain",
        parents=[common],
        help="list the directive cleanups that would run for a request",
        description="Print the directive cleanups for a request, in run order, with the "
        "context (server-wide, host[i], location[i]) each comes from.",
    )
    explain.add_argument(
        "--path", required=True, help="request path, as scope['path'] (starting with '/')"
    )
    explain.add_argument(
        "--host", help="Host header value (a port is ignored); without it no [[host]] matches"
    )
    explain.add_argument(
        "--root-path",
        default="",
        metavar="ROOT",
        help="scope['root_path'] (mount point or proxy prefix), removed from --path first",
    )
    return parser
