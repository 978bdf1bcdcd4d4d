"""A handler module that fails while it is imported, as a misconfigured app would."""

raise RuntimeError("DATABASE_URL is not set")
