"""Search objectives: one number (or one per task for ``pareto``) from a trial's metrics.

Every objective is maximized: main metrics whose lower values are better (mse) enter with
a minus sign.

- ``mean_score``: mean over the trial's tasks of the signed main metric.
- ``mean_delta``: mean over the trial's tasks of the relative gain against the task's
  single-task baseline b_t: s_t * (m_t - b_t) / |b_t| (DESIGN, "Negative transfer"); a
  task whose baseline is 0 counts 0 (a gain relative to 0 is undefined).
- ``target``: the signed main metric of one task; the others are auxiliaries.
- ``pareto``: one objective per task (``obj/<task>``), for a multi-objective sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator.transfer.analysis import ZERO_BASELINE

OBJECTIVES = ("mean_delta", "mean_score", "target", "pareto")


@dataclass(frozen=True)
class Objective:
    kind: str
    tasks: tuple[str, ...]  # every task the search can train
    main_metric: dict[str, str]
    higher_is_better: dict[str, bool]
    target: str | None = None
    baselines: dict[str, float] = field(default_factory=dict)  # mean baseline main metric per task

    @property
    def metric_names(self) -> list[str]:
        """What Ray Tune and Optuna optimize (all maximized)."""
        if self.kind == "pareto":
            return [f"obj/{t}" for t in self.tasks]
        return ["objective"]

    def signed(self, task: str, row: dict[str, Any]) -> float:
        value = float(row[f"val/{task}/{self.main_metric[task]}"])
        return value if self.higher_is_better[task] else -value

    def delta(self, task: str, row: dict[str, Any]) -> float:
        b = self.baselines[task]
        m = float(row[f"val/{task}/{self.main_metric[task]}"])
        sign = 1.0 if self.higher_is_better[task] else -1.0
        return 0.0 if abs(b) < ZERO_BASELINE else sign * (m - b) / abs(b)

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        """The objective value(s) of one epoch's report."""
        if self.kind == "pareto":
            return {f"obj/{t}": self.signed(t, row) for t in trial_tasks}
        if self.kind == "target":
            assert self.target is not None
            return {"objective": self.signed(self.target, row)}
        if self.kind == "mean_delta":
            vals = [self.delta(t, row) for t in trial_tasks]
        else:
            vals = [self.signed(t, row) for t in trial_tasks]
        return {"objective": sum(vals) / len(vals)}
