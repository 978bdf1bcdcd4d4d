"""A module without a ``cleanuphandler`` attribute."""

VALUE = 1
