"""Cleanup handlers for ASGI: code that runs after the response, whose failures go to the
log and never to the client."""

from .errors import SettingsError
from .middleware import CleanupMiddleware
from .outcome import CleanupReport, Outcome
from .registry import CleanupRegistry

__all__ = ["CleanupMiddleware", "CleanupRegistry", "CleanupReport", "Outcome", "SettingsError"]
__version__ = "0.1.0"
