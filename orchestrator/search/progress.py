"""Progress of a search on stderr: a line whenever a trial starts, ends or fails, with the
counts, the best objective so far and the elapsed time."""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from orchestrator.display import err_console


class Progress(Callback):
    def __init__(self, total: int, role: str, metric: str | None) -> None:
        self.total = total
        self.role = role
        self.metric = metric
        self.start = time.time()
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()
        self.best: tuple[float, str] | None = None

    def _line(self, event: str) -> None:
        best = f"best {self.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "best -"
        err_console.print(
            f"[{time.time() - self.start:6.0f}s] {self.role}s: {len(self.running)} running, {len(self.done)} done, "
            f"{len(self.failed)} failed of {self.total} | {best} | {event}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.add(trial.trial_id)
        self._line(f"started {trial.trial_id}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric) if self.metric else None
        if value is not None and (self.best is None or value > self.best[0]):
            self.best = (float(value), trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self._line(f"finished {trial.trial_id}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self._line(f"FAILED {trial.trial_id}")
