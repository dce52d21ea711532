"""The grouping search: at most ``budget`` groups covering every task, each task scored in its
best chosen group, maximizing the total gain over a table of candidate groups (measured,
estimated or shrunk gains alike), and the :class:`Grouping` it returns."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.domain import Group
from orchestrator.transfer.shapes import GroupingRow


@dataclass
class Grouping:
    groups: list[list[str]]
    score: float  # total gain as measured (on the seeds that chose it): Σ_t Δ_t in the task's chosen group
    assignment: dict[str, list[str]] = field(default_factory=dict)  # task -> the group it is scored in
    method: str = ""
    confirmed: bool = False
    note: str = ""
    ci: tuple[float, float] | None = None  # of score, over seeds (grouping_interval)
    test: float | None = None  # the same assignment's total gain on the held-out test split
    test_ci: tuple[float, float] | None = None
    expected: dict[str, Any] | None = None  # what new seeds should give (transfer/noise.py, Headline)
    apart: bool = False  # train every task alone: no grouping within the budget has a credible gain
    within_budget: GroupingRow | None = None  # with ``apart``: the budget's least harmful grouping

    def as_dict(self) -> GroupingRow:
        out: GroupingRow = {"groups": self.groups, "score": None if math.isnan(self.score) else self.score,
               "ci": list(self.ci) if self.ci else None,
               "method": self.method, "confirmed": self.confirmed, "assignment": self.assignment,
               "test": self.test, "test_ci": list(self.test_ci) if self.test_ci else None,
               "expected": self.expected, "apart": self.apart}
        if self.within_budget is not None:
            out["within_budget"] = self.within_budget
        if self.note:
            out["note"] = self.note
        return out



MAX_EXACT_TASKS = 14


def best_grouping(tasks: Sequence[str], table: Mapping[Group, Mapping[str, float]], budget: int) -> Grouping:
    """At most ``budget`` groups (from the candidates in ``table``) covering every task,
    maximizing the total gain, each task counted in its best chosen group.

    Exact: a solution is equivalent to a partition of the tasks into at most ``budget``
    blocks, each block B scored by its best candidate superset G (sum of Δ_t(G) over t in
    B); a dynamic programme over subsets finds the best partition (O(budget · 3^n))."""
    names = sorted(tasks)
    n = len(names)
    if n == 0:
        return Grouping([], 0.0)
    if n > MAX_EXACT_TASKS:
        raise ValueError(f"exact grouping handles up to {MAX_EXACT_TASKS} tasks, got {n}")
    if budget < 1:
        raise ValueError("budget must be at least 1")
    index = {t: i for i, t in enumerate(names)}
    full = (1 << n) - 1
    # v[B] = best total gain of block B over candidate groups G ⊇ B, with that G
    v: dict[int, tuple[float, int]] = {}
    for g, row in table.items():
        if any(t not in index for t in g):
            continue
        gmask = sum(1 << index[t] for t in g)
        members = [index[t] for t in g]
        gains_by_bit = {index[t]: float(row[t]) for t in g}
        # every non-empty subset B of G
        for r in range(1, len(members) + 1):
            for sub in itertools.combinations(members, r):
                b = sum(1 << i for i in sub)
                val = sum(gains_by_bit[i] for i in sub)
                if b not in v or val > v[b][0] + 1e-15 or (abs(val - v[b][0]) <= 1e-15 and gmask < v[b][1]):
                    v[b] = (val, gmask)
    missing = [names[i] for i in range(n) if (1 << i) not in v]
    if missing:
        raise ValueError(f"no candidate group contains task(s) {', '.join(missing)}")
    neg = -math.inf
    best: list[dict[int, tuple[float, int, int]]] = [{0: (0.0, 0, 0)}]  # k -> mask -> (score, block, group)
    for k in range(1, min(budget, n) + 1):
        layer: dict[int, tuple[float, int, int]] = {}
        for mask in range(1, full + 1):
            low = mask & -mask
            rest = mask ^ low
            # blocks containing the lowest bit of mask: low | s for every subset s of rest
            s = rest
            top = (neg, 0, 0)
            while True:
                block = low | s
                prev = best[k - 1].get(mask ^ block)
                if block in v and prev is not None:
                    score = prev[0] + v[block][0]
                    if score > top[0] + 1e-12:
                        top = (score, block, v[block][1])
                if s == 0:
                    break
                s = (s - 1) & rest
            if top[0] > neg:
                layer[mask] = top
        best.append(layer)
    feasible = [k for k in range(1, len(best)) if full in best[k]]
    if not feasible:
        raise ValueError(f"no {budget} candidate group(s) cover every task")
    k_best = max(feasible, key=lambda k: (best[k][full][0], -k))
    groups: list[list[str]] = []
    assignment: dict[str, list[str]] = {}
    mask, k = full, k_best
    while mask:
        _, block, gmask = best[k][mask]
        chosen = [names[i] for i in range(n) if gmask >> i & 1]
        if chosen not in groups:
            groups.append(chosen)
        for i in range(n):
            if block >> i & 1:
                assignment[names[i]] = chosen
        mask ^= block
        k -= 1
    score = best[k_best][full][0]
    return Grouping(sorted(groups, key=lambda g: (-len(g), g)), score, assignment)
