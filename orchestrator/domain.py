"""The domain's arithmetic over trained runs, with no MLflow and no Ray: what a run is (a task
set at a seed and its scores), a task group, the one definition of the relative gain (DESIGN,
"Negative transfer": Δ = s · (m − b) / |b|, undefined where the baseline b is 0), the trials a
search ranks, the mean of affinity matrices. ``search/`` and ``transfer/`` add numbers here;
``store/`` reads these types back from MLflow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Group = tuple[str, ...]
FAILED = ("FAILED", "DIVERGED")  # a trial's mtlo.status when it has no result to rank
DONE = ("FINISHED", "STOPPED")  # a trial's mtlo.status when it trained to its end or was stopped early
ZERO_BASELINE = 1e-12  # |baseline| below which a relative gain is undefined


def group_of(tasks: Iterable[str]) -> Group:
    return tuple(sorted(tasks))


def relative_gain(value: float, baseline: float, higher_is_better: bool) -> float | None:
    """s · (value − baseline) / |baseline| (s = +1 if higher is better); None where the
    baseline is 0 (a task that learned nothing alone: a gain relative to 0 is undefined)."""
    if abs(baseline) < ZERO_BASELINE:
        return None
    return (1.0 if higher_is_better else -1.0) * (value - baseline) / abs(baseline)


@dataclass(frozen=True)
class Run:
    """One trained group at one seed: each task's main metric at the run's best epoch."""

    group: Group
    seed: int
    scores: Mapping[str, float]
    steps: int = 0
    best_epoch: int = 0
    run_id: str | None = None
    curve: tuple[tuple[int, float], ...] = ()  # single-task runs: (steps, score) at every epoch
    test: Mapping[str, float] = field(default_factory=dict)  # the best epoch's weights on the test split
    trained: int = 0  # optimizer steps in all (a single-task run: its own batches, the budget it sets its groups)


def mean_matrix(ms: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for i in sorted({i for m in ms for i in m}):
        for j in sorted({j for m in ms for j in m.get(i, {})}):
            vals = [m[i][j] for m in ms if j in m.get(i, {})]
            out.setdefault(i, {})[j] = sum(vals) / len(vals)
    return out


def scored(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials a search ranks: ended with an objective (finished or stopped early), not
    failed or diverged."""
    return [t for t in trials if t["objective"] is not None and t["status"] not in FAILED]
