"""Errors the trial side raises for bad user input (a file, a column, a label)."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut at ``limit``."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


class InputError(ValueError):
    """Bad data or configuration found on the trial side.

    The message is one line that names the task, file or field and what is wrong;
    the CLI prints it as is and exits with code 2.
    """
