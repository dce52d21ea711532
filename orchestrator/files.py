"""Files written whole or not at all (reports, runs tables, predictions)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path


def write_whole(path: Path, text: str, halfway: Callable[[], None] | None = None) -> None:
    """Whole or not at all: a reader never sees a half-written report (a temporary file,
    flushed to disk, then renamed over ``path``). The temporary file is a new one that
    ``mkstemp`` makes in the same folder (never a name given in advance, which a link planted in
    a shared folder could point elsewhere), and the rename replaces ``path`` itself, not what a
    link there points to. ``halfway``: called when half the text is in the temporary file
    (a test-only fault point)."""
    import tempfile

    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # a write killed halfway left it
        with contextlib.suppress(OSError):
            if stale.is_file() and not stale.is_symlink() and stale.stat().st_uid == os.getuid():
                stale.unlink()
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            if halfway is not None:
                f.write(text[:len(text) // 2])
                f.flush()
                halfway()
                text = text[len(text) // 2:]
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(name, 0o644)  # mkstemp's 0600: a report or predictions file reads as any other file
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
