"""User-facing errors of the driver side."""

from __future__ import annotations

from trainables.errors import InputError


class ConfigError(InputError):
    """A bad config file, ``--set`` override or search space: exit code 2, one line."""


class ServiceError(RuntimeError):
    """A service the run needs (the MLflow tracking store) does not answer: one line, exit 1,
    nothing lost (the message says how to continue)."""
