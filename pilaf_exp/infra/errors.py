"""The errors a user sees as one line (`error: ...`) instead of a traceback."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad config value; the message is one line naming the value and what is accepted."""
