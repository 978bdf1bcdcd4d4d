"""A handler module whose own dependency is missing."""

import settingsapp_missing_dependency  # type: ignore[import-not-found]  # noqa: F401
