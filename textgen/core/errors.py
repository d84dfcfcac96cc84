"""The error type that entry points print as `textgen: error: <what> (<where>)`."""

from __future__ import annotations


class TextgenError(Exception):
    """A problem with the user's input: a config, path, corpus, checkpoint or argument.

    Args:
        what: What is wrong, in words a user can act on.
        where: The file, key or argument it concerns.
    """

    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        """Returns the message without the `textgen: error:` prefix."""
        return f"{self.what} ({self.where})" if self.where else self.what


class ConfigError(TextgenError):
    """A bad config file, key or value."""
