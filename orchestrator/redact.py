"""Passwords never leave the URL they were given in: every URL that mtlo prints, logs, tags,
records as a param, writes into an artifact or a report, or puts in an error line goes through
:func:`redact` first (``user:password@`` becomes ``user:***@``; a ``password=``/``token=`` query
value becomes ``***``). The stored config keeps the redacted URL; the connection itself uses the
one the user gave.

:class:`RedactingStream` wraps stdout and stderr for a whole command (``orchestrator.cli``), so
that what libraries print (MLflow's own error text holds the URL it failed on) is covered too.
"""

from __future__ import annotations

import re
from typing import Any, TextIO

MASK = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'\"<>]*):(?P<secret>[^@/\s'\"<>]+)@")
_QUERY = re.compile(r"(?i)(?P<head>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key)=)"
                    r"(?P<secret>[^&;\s'\"<>]+)")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it (and secret query values) masked."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def redact_data(value: Any) -> Any:
    """Every string in a nest of dicts, lists and tuples redacted (keys too)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_data(k): redact_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_data(v) for v in value)
    return value


class RedactingStream:
    """A text stream whose writes are redacted; everything else is the wrapped stream's."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
