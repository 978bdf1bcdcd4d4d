"""The admin area's cleanups: ``settingsapp.admin`` alone means ``cleanuphandler``."""

from typing import Any


def cleanuphandler(outcome: Any) -> None:
    pass


def audit(outcome: Any) -> None:
    pass


def export_log(outcome: Any) -> None:
    pass
