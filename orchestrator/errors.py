"""User-facing errors of the driver side."""

from __future__ import annotations

from trainables.errors import InputError


class ConfigError(InputError):
    """A bad config file, ``--set`` override or search space: exit code 2, one line."""
