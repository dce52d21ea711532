"""Estimated gains of untrained groups for the affinity method, under the equal-budget rule.

TAG (Fifty et al. 2021) scores task t in group G by the mean affinity of the other members
onto it, mean over j in G \\ {t} of Z[j -> t]. Under mtlo's equal-budget rule (every run,
alone or in a group, gets the same cap C of optimizer steps) that score misses what decided
the groupings of our studies (BENCHMARKS.md): in a group, t gets only its share of the cap for
its own batches (1/k of it with round-robin in a group of k), and a task that needs many steps
loses more from that than any positive affinity gives back (wnut_ner: positive affinity from
every sentence task, yet -46% in the five-task group).

The estimate, for task t in a group G of two or more tasks:

    Δ̂_t(G) = D_t(G) + α · R_t(G)

- D_t(G) = s_t · (curve_t(share_t(G) · C) − b_t) / |b_t|, the *dilution*: curve_t(s) is the
  best validation score t's own single-task runs (the baselines, which every method trains)
  had reached within s optimizer steps, mean over seeds; b_t is the baseline; s_t the sign
  (+1 when higher is better). D_t(G) <= 0: fewer own steps can only cost. Without learning
  curves (studies recorded before they were read) D is 0.
- R_t(G) = mean over j in G \\ {t} of Z[j -> t] / Z*_t, the *transfer*: what a step on j is
  worth to t against a step on t itself. Z[t -> t] is measured on another batch of t; the
  yardstick Z*_t is the largest |Z[j -> t]| over every j, t included (usually Z[t -> t]), so
  that R is within [-1, 1] even for a task whose own steps have stopped generalising.
- α >= 0, one number for the study, fitted by least squares through the origin to the gains
  measured in the all-tasks run (which the affinity method trains anyway):
  Δ_t(all) − D_t(all) ≈ α · R_t(all). Without those gains α is 0 (dilution only).

Everything here is an estimate; the runner trains the groups it proposes before it
recommends them (``analyse``), and the report says which figures were estimated.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Curve = Sequence[tuple[int, float]]  # (optimizer steps, validation score) at the end of each epoch


def step_shares(schedule: str, batches: Mapping[str, int], group: Sequence[str], temperature: float = 1.0
                ) -> dict[str, float]:
    """The fraction of a run's optimizer steps in which each member's own batch is trained
    (trainables/schedules.py): ``joint`` trains every task at every step."""
    if schedule == "joint":
        return {t: 1.0 for t in group}
    if schedule in ("proportional", "temperature") and all(batches.get(t) for t in group):
        power = 1.0 if schedule == "proportional" else 1.0 / temperature
        weight = {t: float(batches[t]) ** power for t in group}
        total = sum(weight.values())
        return {t: w / total for t, w in weight.items()}
    return {t: 1.0 / len(group) for t in group}  # round_robin (and the fallback when sizes are unknown)


def best_within(curve: Curve, steps: float, higher_is_better: bool) -> float | None:
    """The best score a run had reached within ``steps`` optimizer steps (its first
    evaluation if it had not been evaluated yet: an optimistic reading)."""
    if not curve:
        return None
    pts = sorted(curve)
    seen = [v for s, v in pts if s <= steps] or [pts[0][1]]
    return max(seen) if higher_is_better else min(seen)


@dataclass
class Estimator:
    """Δ̂_t(G) for a study; ``alpha``, ``dilution`` and ``transfer`` are kept for the report."""

    tasks: list[str]
    higher_is_better: Mapping[str, bool]
    baseline: Mapping[str, float]  # b_t
    curves: Mapping[str, list[Curve]]  # t -> the single-task runs' curves (one per seed)
    affinity: Mapping[str, Mapping[str, float]]  # Z[i][j]: a step on i, the loss of j
    cap: int
    schedule: str = "round_robin"
    batches: Mapping[str, int] = field(default_factory=dict)
    temperature: float = 1.0
    alpha: float = 0.0

    def dilution(self, t: str, group: Sequence[str]) -> float | None:
        share = step_shares(self.schedule, self.batches, group, self.temperature)[t]
        reached = [best_within(c, share * self.cap, self.higher_is_better[t]) for c in self.curves.get(t, [])]
        vals = [v for v in reached if v is not None]
        b = self.baseline.get(t)
        if b is None:
            return None
        if not vals or not self.cap:
            return 0.0  # no learning curve (a study recorded before curves were read): not estimated
        sign = 1.0 if self.higher_is_better[t] else -1.0
        return min(0.0, sign * (statistics.fmean(vals) - b) / max(abs(b), 1e-12))

    def transfer(self, t: str, group: Sequence[str]) -> float | None:
        found = [self.affinity.get(j, {}).get(t) for j in group if j != t]
        others = [v for v in found if v is not None]
        if not others or len(others) < len(found):
            return None
        scale = self.yardstick(t)
        return statistics.fmean(others) / scale if scale > 0 else 0.0

    def yardstick(self, t: str) -> float:
        """The largest |Z[j -> t]| over every j, t itself included: usually Z[t -> t]; a task
        whose own steps no longer generalise (it overfits, or has nothing left to learn) is
        measured against the task that moves its loss most, so that R stays within [-1, 1]
        and one near-zero Z[t -> t] cannot blow a ratio up."""
        return max((abs(self.affinity[j][t]) for j in self.affinity if t in self.affinity[j]), default=0.0)

    def __call__(self, t: str, group: Sequence[str]) -> float | None:
        if len(group) < 2:
            return 0.0
        d, r = self.dilution(t, group), self.transfer(t, group)
        if d is None or r is None:
            return None
        return d + self.alpha * r

    def fit(self, measured_all: Mapping[str, float]) -> Estimator:
        """α from the gains measured in the all-tasks group (least squares through the
        origin, clipped at 0); unchanged (0) where there is nothing to fit."""
        xs, ys = [], []
        for t, gain in measured_all.items():
            d, r = self.dilution(t, self.tasks), self.transfer(t, self.tasks)
            if d is not None and r is not None:
                xs.append(r)
                ys.append(gain - d)
        denom = sum(x * x for x in xs)
        self.alpha = max(0.0, sum(x * y for x, y in zip(xs, ys, strict=True)) / denom) if denom > 0 else 0.0
        return self
