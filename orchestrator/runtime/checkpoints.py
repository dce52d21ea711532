"""Finished trials give their checkpoints back.

Every epoch's report carries a checkpoint of the whole training state (orchestrator/runtime/
trial.py), so that a trial that fails, or a driver that is killed, resumes where it was. Once
a trial has *finished* nothing reads its checkpoint again: ``--resume`` does not rerun a
finished trial, and results, curves and the report come from MLflow and Ray's result files.
Kept, they add up: a six-task exhaustive transfer study (189 runs, tiny encoder) left 9.3 GB
of them. A trial that fails keeps its checkpoint (``--resume`` retries it from there).

A finished trial's checkpoints go only once the experiment state Ray saved (every 2 s, what
``--resume`` and a restore after a Ray error read) records it as finished: a state saved just
before it finished restores it as running, from its last checkpoint, which must still be
there (seen: a search restored 1 s after a trial finished retried it, found no checkpoint,
and failed it)."""

from __future__ import annotations

import json
import time
from typing import Any

from ray.tune import Callback

from orchestrator.display import err_console

CHECK_EVERY_S = 2.0  # Ray saves its experiment state every 2 s under mtlo (search/runner.py)


class DropFinishedCheckpoints(Callback):
    def __init__(self) -> None:
        self.dropped: set[str] = set()
        self.checked = 0.0

    def __getstate__(self) -> dict[str, Any]:  # saved with the experiment: a restore looks again
        return {"dropped": set(), "checked": 0.0}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.checked >= CHECK_EVERY_S:
            self._drop(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._drop(trials)  # after Ray's last save of a search that ended; a crashed one's last save

    def _drop(self, trials: list) -> None:
        finished = [t for t in trials if t.status == "TERMINATED" and t.trial_id not in self.dropped]
        if not finished:
            return
        self.checked = time.monotonic()
        storage = finished[0].storage
        try:
            saved = saved_finished(storage.storage_filesystem, storage.experiment_fs_path)
            for t in finished:
                if t.trial_id in saved:
                    drop_checkpoints(storage.storage_filesystem, t.path)
                    self.dropped.add(t.trial_id)
        except OSError as exc:  # housekeeping: never stop a study for it
            err_console.print(f"[yellow]could not delete the checkpoints of finished trials: {exc}[/yellow]")


def saved_finished(fs: Any, experiment_dir: str) -> set[str]:
    """Ids of the trials that the newest experiment state saved in ``experiment_dir`` (Ray's
    ``experiment_state-<session>.json``) records as finished (TERMINATED)."""
    from pyarrow import fs as pafs

    states = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(experiment_dir, allow_not_found=True))
                    if i.type == pafs.FileType.File and i.base_name.startswith("experiment_state-")
                    and i.base_name.endswith(".json"))
    if not states:
        return set()
    with fs.open_input_stream(states[-1]) as f:
        text = f.read()
    try:
        trials = [json.loads(t) if isinstance(t, str) else t for t, _ in json.loads(text)["trial_data"]]
    except (ValueError, KeyError, TypeError):  # caught while Ray writes it: the next look reads it whole
        return set()
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def drop_checkpoints(fs: Any, trial_dir: str | None) -> int:
    """Remove the ``checkpoint_*`` folders of a finished trial's folder ``trial_dir`` on the
    pyarrow filesystem ``fs`` (Ray's storage: a local folder, or a cloud bucket); returns how
    many."""
    from pyarrow import fs as pafs

    if not trial_dir:
        return 0
    gone = 0
    for info in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_"):
            fs.delete_dir(info.path)
            gone += 1
    return gone
