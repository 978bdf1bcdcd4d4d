"""``python -m asgi_cleanup``: the same command line as ``asgi-cleanup``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
