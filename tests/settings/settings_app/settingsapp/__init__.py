"""Handler modules that the settings and CLI tests reference by name."""
