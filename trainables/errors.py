"""Errors the trial side raises for bad user input (a file, a column, a label)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad data or configuration found on the trial side.

    The message is one line that names the task, file or field and what is wrong;
    the CLI prints it as is and exits with code 2.
    """
