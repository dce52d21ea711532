"""Finished trials give their checkpoints back.

Every epoch's report carries a checkpoint of the whole training state (orchestrator/search/
trial.py), so that a trial that fails, or a driver that is killed, resumes where it was. Once
a trial has *finished* nothing reads its checkpoint again: ``--resume`` does not rerun a
finished trial, and results, curves and the report come from MLflow and Ray's result files.
Kept, they add up: a six-task exhaustive transfer study (189 runs, tiny encoder) left 9.3 GB
of them. A trial that fails keeps its checkpoint (``--resume`` retries it from there)."""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from orchestrator.display import err_console


class DropFinishedCheckpoints(Callback):
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        try:
            drop_checkpoints(trial.storage.storage_filesystem, trial.path)
        except OSError as exc:  # housekeeping: never stop a study for it
            err_console.print(f"[yellow]could not delete the checkpoints of finished trial {trial.trial_id}: "
                              f"{exc}[/yellow]")


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
