class SettingsError(Exception):
    """A settings file or mapping is invalid.

    Raised when a :class:`~asgi_cleanup.CleanupMiddleware` is constructed, never at request
    time. The message names the file, the table (for example ``location[2]``), the key and
    the entry, and says what is wrong.
    """
