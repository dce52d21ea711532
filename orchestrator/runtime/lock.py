"""One driver per search or study: a lock file beside its folder in Ray's storage
(``<storage>/.<name>.lock``), taken once the config, space and data passed their checks
(:func:`orchestrator.runtime.session.open_parent`) and held until the command ends (trials,
recording, report).

Two drivers of the same name (two ``--resume`` of an interrupted search, or two fresh starts
racing) would share one Ray folder and one set of MLflow runs, and each could delete the
checkpoints the other restores from. The second one is refused (exit 2) with one line naming
the one that runs: its host, pid, command and start time (written beside the lock). The lock
is an OS file lock (``filelock``), which the kernel releases when its process dies, so a lock
left by a SIGKILLed driver is stale and simply taken over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from orchestrator.config import Config
from orchestrator.errors import ConfigError


def lock_path(cfg: Config) -> Path:
    storage = Path(cfg.ray.storage or "ray_results").expanduser().resolve()
    return storage / f".{cfg.name}.lock"


_HELD: dict[Path, FileLock] = {}  # the locks this process holds, until release_all


def acquire(cfg: Config, what: str) -> None:
    """Take the lock of the search or study ``cfg.name`` for this process (again: a no-op);
    :class:`ConfigError` if another driver holds it."""
    path = lock_path(cfg)
    if path in _HELD:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    info = _info(path)
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{what} '{cfg.name}' is being run by another mtlo ({_read(info)}); wait for it to "
                          "end or stop it, then run this command again") from None
    _HELD[path] = lock
    from orchestrator.redact import redact

    # the command line may hold a --set URL: redacted, and the file this user's alone
    fd = os.open(info, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                            "command": redact(" ".join(["mtlo", *sys.argv[1:]]))[:300],
                            "started": dt.datetime.now().isoformat(timespec="seconds")}))
    os.chmod(info, 0o600)


@contextlib.contextmanager
def released_at_end() -> Iterator[None]:
    """A command's body: every lock it took is given back when it ends, however it ends."""
    try:
        yield
    finally:
        for path, lock in list(_HELD.items()):
            _info(path).unlink(missing_ok=True)
            lock.release()
            del _HELD[path]


def _info(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _read(info: Path) -> str:
    try:
        d = json.loads(info.read_text())
        return f"pid {d['pid']} on {d['host']}, since {d['started']}: {d['command']}"
    except (OSError, ValueError, KeyError):
        return f"lock {info.with_suffix('')}"
