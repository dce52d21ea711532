"""Search objectives (``search.objective``): one number, or one per task for ``pareto``, from
a trial's per-epoch metrics. Every objective is maximized: main metrics whose lower values
are better (mse) enter with a minus sign.

- ``mean_score``: mean over the trial's tasks of the signed main metric.
- ``mean_delta``: mean over the trial's tasks of the relative gain against the task's
  single-task baseline (``store.runs.relative_gain``); a task whose baseline is 0 counts 0.
- ``target``: the signed main metric of one task; the others are auxiliaries.
- ``pareto``: one objective per task (``obj/<task>``), for a multi-objective sampler.

Each is a small class registered in :data:`OBJECTIVES`; :func:`make_objective` builds one by
name and names the valid ones for an unknown name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from orchestrator.domain import relative_gain, scored
from orchestrator.errors import ConfigError
from trainables.registry import Registry


@dataclass(frozen=True)
class Objective(ABC):
    name: ClassVar[str]
    multi: ClassVar[bool] = False  # one objective per task: a multi-objective sampler, no early stopping
    needs_baselines: ClassVar[bool] = False  # single-task baselines trained (or reused) first
    uses_target: ClassVar[bool] = False  # search.target is the task maximized; the others are auxiliaries

    tasks: tuple[str, ...]  # every task the search can train
    main_metric: dict[str, str]
    higher_is_better: dict[str, bool]
    target: str | None = None
    baselines: dict[str, float] = field(default_factory=dict)  # mean baseline main metric per task

    @property
    def kind(self) -> str:
        return self.name

    @property
    def metric_names(self) -> list[str]:
        """What Ray Tune and Optuna optimize (all maximized)."""
        return ["objective"]

    def signed(self, task: str, row: dict[str, Any]) -> float:
        value = float(row[f"val/{task}/{self.main_metric[task]}"])
        return value if self.higher_is_better[task] else -value

    def with_baselines(self, baselines: dict[str, float]) -> Objective:
        return dataclasses.replace(self, baselines=dict(baselines))

    @abstractmethod
    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        """The objective value(s) of one epoch's report."""


class MeanScore(Objective):
    name = "mean_score"

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        return {"objective": sum(self.signed(t, row) for t in trial_tasks) / len(trial_tasks)}


class MeanDelta(Objective):
    name = "mean_delta"
    needs_baselines = True

    def delta(self, task: str, row: dict[str, Any]) -> float:
        value = float(row[f"val/{task}/{self.main_metric[task]}"])
        return relative_gain(value, self.baselines[task], self.higher_is_better[task]) or 0.0

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        return {"objective": sum(self.delta(t, row) for t in trial_tasks) / len(trial_tasks)}


class Target(Objective):
    name = "target"
    uses_target = True

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        assert self.target is not None
        return {"objective": self.signed(self.target, row)}


class Pareto(Objective):
    name = "pareto"
    multi = True

    @property
    def metric_names(self) -> list[str]:
        return [f"obj/{t}" for t in self.tasks]

    def compute(self, row: dict[str, Any], trial_tasks: list[str]) -> dict[str, float]:
        return {f"obj/{t}": self.signed(t, row) for t in trial_tasks}


OBJECTIVES: Registry[type[Objective]] = Registry("search.objective")
for _o in (MeanDelta, MeanScore, Target, Pareto):
    OBJECTIVES.register(_o)


def objective_class(name: str, target: str | None) -> type[Objective]:
    """The objective ``name`` (one line, exit 2, for an unknown one), checked against
    ``search.target``: before any task's data is read."""
    cls = OBJECTIVES[name]
    if cls.uses_target and target is None:
        raise ConfigError(f"search.target is required with search.objective: {name}")
    return cls


def make_objective(name: str, tasks: tuple[str, ...], main_metric: dict[str, str],
                   higher_is_better: dict[str, bool], *, target: str | None = None,
                   baselines: dict[str, float] | None = None) -> Objective:
    return objective_class(name, target)(tuple(tasks), dict(main_metric), dict(higher_is_better), target=target,
                            baselines=dict(baselines or {}))


def pareto_front(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials (``objective``: {name: value}, all maximized) that no other trial matches on
    every objective and beats on one."""
    def dominated(a: dict[str, Any]) -> bool:
        return any(all(b["objective"].get(k, -1e9) >= v for k, v in a["objective"].items()) and
                   any(b["objective"].get(k, -1e9) > v for k, v in a["objective"].items())
                   for b in trials if b is not a)

    return [t for t in trials if not dominated(t)]


def best_trial(trials: list[dict[str, Any]], multi: bool) -> dict[str, Any] | None:
    """The finished or stopped trial with the highest objective; ``multi``: the Pareto front."""
    ok = scored(trials)
    if not ok:
        return None
    if multi:
        return {"pareto_front": pareto_front(ok)}
    return max(ok, key=lambda t: float(t["objective"]))
