"""User-facing errors of the driver side."""

from __future__ import annotations

from trainables.errors import InputError


class ConfigError(InputError):
    """A bad config file, ``--set`` override or search space: exit code 2, one line."""


class ServiceError(RuntimeError):
    """A service the run needs (the MLflow tracking store) does not answer: one line, exit 1,
    nothing lost (the message says how to continue)."""


class Interrupted(Exception):
    """Ctrl-C (SIGINT) during the trials of a search or study: Ray Tune saved its state and
    stopped; what finished is recorded, and ``--resume`` goes on from there (exit 130)."""

    def __str__(self) -> str:
        return "interrupted: what finished is recorded; run the same command with --resume to go on"
