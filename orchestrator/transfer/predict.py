"""Estimated gains of untrained groups for the affinity method, under the equal-budget rule.

TAG (Fifty et al. 2021) scores task t in group G by the mean affinity of the other members
onto it, mean over j in G \\ {t} of Z[j -> t]. Under mtlo's equal-budget rule (every run,
alone or in a group, gets the same cap C of optimizer steps) that score misses what decided
the groupings of our studies (docs/research/task-affinity.md): in a group, t gets only its share of the cap for
its own batches (1/k of it with round-robin in a group of k), and a task that needs many steps
loses more from that than any positive affinity gives back (wnut_ner: positive affinity from
every sentence task, yet -46% in the five-task group).

The estimate, for task t in a group G of two or more tasks:

    Δ̂_t(G) = D_t(G) + r_t · P_t(G)

- D_t(G) = s_t · (curve_t(e_t(G) · C) − b_t) / |b_t|, the *dilution*: curve_t(s) is the
  best validation score t's own single-task runs (the baselines, which every method trains)
  had reached within s optimizer steps, mean over seeds; b_t is the baseline; s_t the sign
  (+1 when higher is better). D_t(G) <= 0: fewer own steps can only cost. Without learning
  curves (studies recorded before they were read) D is 0. e_t(G) = share_t(G) + λ_t · (1 −
  share_t(G)) is t's *effective* share of the cap: its own batches' share plus a part λ_t of
  the other members' steps, which train the shared encoder too. λ_t is fitted per task on
  the all-tasks group (``fit_carry``): the smallest λ_t (0, 0.01, ..., 1) at which the
  dilution there is no worse than what t measured there, min(0, Δ_t(all)).
- r_t = Δ_t(all) − D_t(all), the *transfer* t received in the all-tasks group beyond its
  dilution there: *measured* (the affinity method trains the all-tasks group at every seed).
- P_t(G) in [0, 1], the *presence* in G of what caused it, from the affinity: with
  R[j -> t] = Z[j -> t] / Z*_t (what a step on j is worth to t; Z[t -> t] is measured on
  another batch of t; the yardstick Z*_t is the largest |Z[j -> t]| over every j, t included,
  so R is within [-1, 1]), P_t(G) is the best helper's R in G over the best helper's R among
  all tasks when r_t >= 0, and the same with the most harmful task when r_t < 0 (one task
  that helps is enough: a twin of a small task lifted it by the same amount in every group
  it was in, whatever else was there; benchmarks/results/grouping_planted_tiny.json). If no
  task helps (harms) t by the affinity, P_t(G) is the share of the other tasks that are in G.

So the affinity says only *which* tasks a measured transfer came from; the sizes come from
measurements the method makes anyway (baselines with their learning curves, and the
all-tasks group).

Why λ_t: on a six-task study wnut_ner's own curve said -49% at a sixth of the cap, yet it lost
only 17% in the all-tasks group; with own steps only (λ = 0, the estimate before) the
difference was credited to its best helper by the affinity, and the estimates correlated 0.22
with the measured gains. λ_t was chosen after that study; on a new six-task study, held out
under a rule fixed in advance, it raised the correlation from 0.34 to 0.61
(docs/research/task-affinity.md).

Everything here is an estimate; the runner trains the groups it proposes before it
recommends them (``analyse``), and the report says which figures were estimated.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from orchestrator.domain import relative_gain

Curve = Sequence[tuple[int, float]]  # (optimizer steps, validation score) at the end of each epoch


def step_shares(schedule: str, batches: Mapping[str, int], group: Sequence[str], temperature: float = 1.0
                ) -> dict[str, float]:
    """The fraction of a run's optimizer steps in which each member's own batch is trained: the
    schedule's own answer (``trainables/schedules.py``, ``Schedule.shares``)."""
    from trainables.schedules import schedule as schedule_of

    return schedule_of(schedule).shares(batches, group, temperature=temperature)


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
    """Δ̂_t(G) for a study (the module doc); ``residual`` is set by ``fit``."""

    tasks: list[str]
    higher_is_better: Mapping[str, bool]
    baseline: Mapping[str, float]  # b_t
    curves: Mapping[str, list[Curve]]  # t -> the single-task runs' curves (one per seed)
    affinity: Mapping[str, Mapping[str, float]]  # Z[i][j]: a step on i, the loss of j
    cap: int
    schedule: str = "round_robin"
    batches: Mapping[str, int] = field(default_factory=dict)
    temperature: float = 1.0
    residual: dict[str, float] = field(default_factory=dict)  # r_t: measured in the all-tasks group − dilution
    carry: dict[str, float] = field(default_factory=dict)  # λ_t (effective steps), set by ``fit``
    _strengths: dict[str, dict[str, float | None]] = field(default_factory=dict, repr=False)

    def dilution(self, t: str, group: Sequence[str]) -> float | None:
        share = step_shares(self.schedule, self.batches, group, self.temperature)[t]
        return self.dilution_at(t, share + self.carry.get(t, 0.0) * (1.0 - share))

    def dilution_at(self, t: str, share: float) -> float | None:
        """What t's own learning curve says of ``share`` of the step cap, against its best."""
        reached = [best_within(c, share * self.cap, self.higher_is_better[t]) for c in self.curves.get(t, [])]
        vals = [v for v in reached if v is not None]
        b = self.baseline.get(t)
        if b is None or b == 0:  # b = 0: a relative gain is undefined (analysis.zero_baselines)
            return None
        if not vals or not self.cap:
            return 0.0  # no learning curve (a study recorded before curves were read): not estimated
        return min(0.0, relative_gain(statistics.fmean(vals), b, self.higher_is_better[t]) or 0.0)

    def yardstick(self, t: str) -> float:
        """The largest |Z[j -> t]| over every j, t itself included: usually Z[t -> t]; a task
        whose own steps no longer generalise (it overfits, or has nothing left to learn) is
        measured against the task that moves its loss most, so that R stays within [-1, 1]
        and one near-zero Z[t -> t] cannot blow a ratio up."""
        return max((abs(self.affinity[j][t]) for j in self.affinity if t in self.affinity[j]), default=0.0)

    def ratio(self, j: str, t: str) -> float | None:
        """R[j -> t] = Z[j -> t] / Z*_t: what a step on j is worth to t against the yardstick."""
        z = self.affinity.get(j, {}).get(t)
        if z is None:
            return None
        scale = self.yardstick(t)
        return z / scale if scale > 0 else 0.0

    def strengths(self, t: str) -> dict[str, float | None]:
        """Per other task j, how much it carries t's all-tasks transfer by the affinity: R[j -> t]
        for a gain (r_t >= 0), −R[j -> t] for a loss, floored at 0 (None: not measured).
        Affinity and residual are fixed once fitted, so this is computed once per task."""
        if t not in self._strengths:
            sign = 1.0 if self.residual.get(t, 0.0) >= 0 else -1.0
            self._strengths[t] = {j: None if v is None else max(0.0, sign * v)
                                  for j in self.tasks if j != t for v in [self.ratio(j, t)]}
        return self._strengths[t]

    def presence(self, t: str, group: Sequence[str]) -> float | None:
        """How much of what moved t in the all-tasks group is in ``group``: the strongest
        member's strength over the strongest among all tasks. Where no task helps (or harms) t
        by the affinity, the share of the other tasks that are in the group."""
        strength = self.strengths(t)
        inside = [strength.get(j) for j in group if j != t]
        if any(v is None for v in inside):
            return None
        full = max((v for v in strength.values() if v is not None), default=0.0)
        if full <= 0:
            return len(inside) / max(1, len(strength))
        return max((v for v in inside if v is not None), default=0.0) / full

    def transfer(self, t: str, group: Sequence[str]) -> float | None:
        """r_t × presence: the transfer part of the estimate (0 without an all-tasks measurement)."""
        if t not in self.residual:
            return 0.0
        p = self.presence(t, group)
        return None if p is None else self.residual[t] * p

    def __call__(self, t: str, group: Sequence[str]) -> float | None:
        if len(group) < 2:
            return 0.0
        d, r = self.dilution(t, group), self.transfer(t, group)
        if d is None or r is None:
            return None
        return d + r

    def fit(self, measured_all: Mapping[str, float]) -> Estimator:
        """r_t = Δ_t(all) − D_t(all) for every task measured in the all-tasks group; with
        λ_t first (``fit_carry``: the part of the others' steps counted as t's own)."""
        self.residual = {}
        self._strengths = {}
        self.carry = {t: self.fit_carry(t, gain) for t, gain in measured_all.items()}
        for t, gain in measured_all.items():
            d = self.dilution(t, self.tasks)
            if d is not None:
                self.residual[t] = gain - d
        return self

    def fit_carry(self, t: str, gain_all: float) -> float:
        """λ_t: the smallest fraction (0, 0.01, ..., 1) of the other tasks' steps that, counted
        as t's own, makes the dilution in the all-tasks group no worse than what t measured
        there, min(0, Δ_t(all)); 1 if none does."""
        share = step_shares(self.schedule, self.batches, self.tasks, self.temperature)[t]
        target = min(0.0, gain_all)
        for i in range(101):
            d = self.dilution_at(t, share + i / 100 * (1.0 - share))
            if (d or 0.0) >= target - 1e-9:
                return i / 100
        return 1.0

    def helper(self, t: str) -> str | None:
        """The task whose presence carries t's all-tasks transfer (best helper, or worst harm)."""
        cands = [(v, j) for j, v in self.strengths(t).items() if v]
        return max(cands)[1] if cands else None
