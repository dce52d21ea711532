"""Optuna through Ray Tune, tolerant of a result without the objective.

A diverged trial's last result carries no objective (never a NaN); Ray's ``OptunaSearch``
indexes the metric of every intermediate result and would fail on it. Here such a result
is skipped, and the trial's completion without a value tells Optuna it was pruned.
"""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class Searcher(OptunaSearch):
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if isinstance(self.metric, str) and result.get(self.metric) is None:
            return
        super().on_trial_result(trial_id, result)
