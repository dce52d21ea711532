"""Finished trials give their checkpoints back, but for the best trials' weights.

Every epoch's report carries a checkpoint (orchestrator/runtime/trial.py): the whole training
state (``state.pt``), so that a trial that fails, or a driver that is killed, resumes where it
was, and the best epoch's weights (``model.pt``). Once a trial has *finished* nothing reads
its training state again: ``--resume`` does not rerun a finished trial, and results, curves
and the report come from MLflow and Ray's result files. Kept, they add up: a six-task
exhaustive transfer study (189 runs, tiny encoder) left 9.3 GB of them. A trial that fails
keeps its checkpoint (``--resume`` retries it from there).

A search keeps the weights of its current top ``keep`` finished trials (``model.keep``,
ranked by the best epoch's objective, the number the search ranks by): their last
checkpoint loses ``state.pt`` and keeps ``model.pt``, until a better trial pushes one out
of the top. Any other finished trial's weights go as it finishes, so the trials holding
weights are at most ``keep`` + the trials running. At the end the driver logs
the best trial's weights as an MLflow model (orchestrator/search/model.py).

A finished trial's checkpoints go only once the experiment state Ray saved (every 2 s, what
``--resume`` and a restore after a Ray error read) records it as finished: a state saved just
before it finished restores it as running, from its last checkpoint, which must still be
there (seen: a search restored 1 s after a trial finished retried it, found no checkpoint,
and failed it)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ray.tune import Callback

from orchestrator.display import err_console
from orchestrator.runtime.trial import MODEL_FILE, STATE_FILE, ended_early

CHECK_EVERY_S = 2.0  # Ray saves its experiment state every 2 s under mtlo (search/runner.py)


def trial_score(trial: Any) -> float | None:
    """A finished trial's rank: its best epoch's objective (Ray keeps each metric's maximum);
    None for a trial with nothing to rank (diverged, or no epoch ended)."""
    last = getattr(trial, "last_result", None) or {}
    if ended_early(last):
        return None
    best = (getattr(trial, "metric_analysis", None) or {}).get("objective", {}).get("max")
    return None if best is None else float(best)


class DropFinishedCheckpoints(Callback):
    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self.dropped: set[str] = set()  # trials with no checkpoint left
        self.kept: set[str] = set()  # trials whose last checkpoint holds only their weights
        self.unweighted: set[str] = set()  # finished trials whose weights are gone (out of the top)
        self.checked = 0.0

    def __getstate__(self) -> dict[str, Any]:  # saved with the experiment: a restore looks again
        return {"keep": self.keep, "dropped": set(), "kept": set(), "unweighted": set(), "checked": 0.0}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The weights of finished trials outside the top ``keep`` go at once (their training state
        waits for Ray's saved state, below): trials holding weights stay at most ``keep`` + the
        trials running."""
        finished = [t for t in trials if t.status == "TERMINATED" or t.trial_id == trial.trial_id]
        top = self.top(finished)
        try:
            for t in finished:
                if t.trial_id not in top and t.trial_id not in self.unweighted and t.trial_id not in self.dropped:
                    drop_weights(t.storage.storage_filesystem, t.path)
                    self.unweighted.add(t.trial_id)
        except OSError as exc:  # housekeeping: never stop a study for it
            err_console.print(f"[yellow]could not delete the weights of finished trials: {exc}[/yellow]")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.checked >= CHECK_EVERY_S:
            self._drop(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._drop(trials)  # after Ray's last save of a search that ended; a crashed one's last save

    def top(self, finished: list) -> set[str]:
        """The ``keep`` trials of ``finished`` with the best scores (ties: the earlier trial)."""
        ranked = [(s, i, t.trial_id) for i, t in enumerate(finished) if (s := trial_score(t)) is not None]
        ranked.sort(key=lambda x: (-x[0], x[1]))
        return {tid for _, _, tid in ranked[: self.keep]}

    def _drop(self, trials: list) -> None:
        top = self.top([t for t in trials if t.status == "TERMINATED"])
        finished = [t for t in trials if t.status == "TERMINATED" and t.trial_id not in self.dropped
                    and not (t.trial_id in self.kept and t.trial_id in top)]
        if not finished:
            return
        self.checked = time.monotonic()
        storage = finished[0].storage
        fs = storage.storage_filesystem
        try:
            saved = saved_finished(fs, storage.experiment_fs_path)
            for t in finished:
                if t.trial_id not in saved:
                    continue
                if t.trial_id in top:
                    if t.trial_id not in self.kept:
                        drop_checkpoints(fs, t.path, keep=registered(t))
                        self.kept.add(t.trial_id)
                else:
                    drop_checkpoints(fs, t.path)
                    self.dropped.add(t.trial_id)
                    self.kept.discard(t.trial_id)
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


def _link(fs: Any, path: str) -> bool:
    """Whether ``path`` on ``fs`` is a symbolic link (only a local folder has them). A clean-up
    never follows one: a ``checkpoint_*`` link planted in a shared storage folder would make it
    delete files outside the trial's folder."""
    return getattr(fs, "type_name", "") == "local" and os.path.islink(path)


def _checkpoints(fs: Any, trial_dir: str | None) -> list[str]:
    """The ``checkpoint_*`` folders of a trial's folder on the pyarrow filesystem ``fs`` (Ray's
    storage: a local folder, or a cloud bucket), oldest first; symbolic links are not folders."""
    from pyarrow import fs as pafs

    if not trial_dir or _link(fs, trial_dir):
        return []
    return sorted(info.path for info in fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
                  if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")
                  and not _link(fs, info.path))


def _delete(fs: Any, path: str) -> None:
    from pyarrow import fs as pafs

    if not _link(fs, path) and fs.get_file_info(path).type == pafs.FileType.File:
        fs.delete_file(path)


def drop_weights(fs: Any, trial_dir: str | None) -> None:
    """Remove the weights (``model.pt``) from every checkpoint of a finished trial."""
    for folder in _checkpoints(fs, trial_dir):
        _delete(fs, f"{folder}/{MODEL_FILE}")


def registered(trial: Any) -> str:
    """The folder of the trial's checkpoint that Ray registered with its last result (what the
    search's result points to): not always the newest folder, as a trial stopped while it
    reported (by the scheduler or the time budget) can leave a newer, unregistered one."""
    checkpoint = getattr(trial, "checkpoint", None)
    return str(getattr(checkpoint, "path", "") or "")


def drop_checkpoints(fs: Any, trial_dir: str | None, *, keep: str | None = None) -> int:
    """Remove the checkpoint folders of a finished trial's folder ``trial_dir``; returns how
    many. ``keep``: that folder (``registered``; "" for the newest) stays, with its weights and
    without its training state."""
    folders = _checkpoints(fs, trial_dir)
    if keep is not None and folders:
        kept = keep.rstrip("/") if keep.rstrip("/") in folders else folders[-1]
        folders.remove(kept)
        _delete(fs, f"{kept}/{STATE_FILE}")
    for path in folders:
        fs.delete_dir(path)  # not a link (_checkpoints): what is deleted lies inside the trial's folder
    return len(folders)
