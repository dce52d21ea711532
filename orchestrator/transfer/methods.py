"""Grouping methods (``mtlo transfer --method``): which task sets a study trains first, whether
its all-tasks runs measure the affinity, and how it estimates the gains of groups it never
trained. Each is a small class in :data:`METHODS`; :func:`method` names the valid ones.

- ``pairwise``: every task alone and every pair; Standley et al. (2020) estimate larger
  groups from the pairs.
- ``exhaustive``: every non-empty subset (nothing left to estimate); its all-tasks runs
  measure the affinity too, for comparison.
- ``affinity``: every task alone and all tasks together, whose run measures the lookahead
  inter-task affinity (Fifty et al. 2021, TAG); groups estimated from it
  (``transfer/predict.py``).
- ``surrogate``: every task alone and ``--runs`` task subsets proposed by Optuna's
  space-filling sampler; a regularized linear model of each task's gain on which other tasks
  are in its group (Li, Nguyen and Zhang 2023) estimates the rest (``transfer/surrogate.py``).
- ``groups``: the task sets the user gives (``--groups``), e.g. a recommendation checked on
  new seeds; no estimate.
"""

from __future__ import annotations

import itertools
from abc import ABC
from typing import ClassVar

from orchestrator.domain import Group, group_of
from orchestrator.errors import ConfigError


class Method(ABC):
    name: ClassVar[str]
    measures_affinity: ClassVar[bool] = False  # its all-tasks runs measure the lookahead affinity
    # how untrained groups are estimated: standley | affinity | surrogate | None
    estimate: ClassVar[str | None] = "standley"
    sizes: ClassVar[tuple[int, ...] | None] = None  # group sizes trained first; None: every size

    def subsets(self, tasks: list[str]) -> list[Group]:
        sizes = self.sizes or tuple(range(1, len(tasks) + 1))
        return [group_of(c) for k in sizes for c in itertools.combinations(tasks, k)]


class Pairwise(Method):
    name = "pairwise"
    sizes = (1, 2)


class Exhaustive(Method):
    name = "exhaustive"
    measures_affinity = True

    def subsets(self, tasks: list[str]) -> list[Group]:
        from orchestrator.transfer.grouping import MAX_EXACT_TASKS

        n = len(tasks)
        if n > MAX_EXACT_TASKS:  # refused before 2^n - 1 subsets are built
            raise ConfigError(f"--method exhaustive: {n} tasks have {2 ** n - 1:,} subsets; it handles up to "
                              f"{MAX_EXACT_TASKS} tasks (use --method pairwise or surrogate)")
        return super().subsets(tasks)


class Affinity(Method):
    name = "affinity"
    measures_affinity = True
    estimate = "affinity"

    def subsets(self, tasks: list[str]) -> list[Group]:
        return [group_of((t,)) for t in tasks] + [group_of(tasks)]


class Surrogate(Method):
    """Every task alone, then ``runs`` subsets (default 2n) proposed by Optuna (seeded by the
    study's first seed)."""

    name = "surrogate"
    estimate = "surrogate"

    def __init__(self, runs: int | None = None, seed: int = 0) -> None:
        self.runs, self.seed = runs, seed

    def subsets(self, tasks: list[str]) -> list[Group]:
        from orchestrator.transfer.surrogate import default_runs, propose_subsets

        m = self.runs if self.runs is not None else default_runs(len(tasks))
        return [group_of((t,)) for t in tasks] + propose_subsets(tasks, m, self.seed)


class Groups(Method):
    """The task sets given (``given_subsets``); not a ``--method`` of its own."""

    name = "groups"
    estimate = None

    def subsets(self, tasks: list[str]) -> list[Group]:
        raise ConfigError("--groups: give the task sets to train (a+b,c)")


METHODS: dict[str, type[Method]] = {m.name: m for m in (Pairwise, Exhaustive, Affinity, Surrogate)}


def method(name: str, runs: int | None = None, seed: int = 0) -> Method:
    """The method ``name``; ``runs`` (``--runs``): the surrogate method's subsets."""
    if runs is not None and name != Surrogate.name:
        raise ConfigError(f"--runs: only --method surrogate samples task subsets (the method is {name})")
    if name == Groups.name:
        return Groups()
    if name not in METHODS:
        raise ConfigError(f"--method: '{name}' is not one of {', '.join(METHODS)}")
    if name == Surrogate.name:
        return Surrogate(runs, seed)
    return METHODS[name]()


def parse_groups(text: str) -> list[list[str]]:
    """``--groups``: task sets separated by commas, tasks within a set by '+': "a+b,c"."""
    return [[t.strip() for t in g.split("+") if t.strip()] for g in text.split(",")]


def check_groups(tasks: list[str], groups: list[list[str]], flag: str) -> None:
    """Every given task set names tasks of the config, and is not empty (``flag``: what the
    error line names, ``groups`` or ``--groups``)."""
    for g in groups:
        unknown = [t for t in g if t not in tasks]
        if unknown or not g:
            raise ConfigError(f"{flag}: {'+'.join(g) or '(empty)'}: "
                              + (f"no task {unknown[0]!r} in the config" if unknown else "an empty task set"))


def given_subsets(tasks: list[str], groups: list[list[str]], singles: bool = True) -> list[Group]:
    """Every task alone (unless ``singles`` is false), then the given task sets (each once,
    in order); names checked."""
    out = [group_of((t,)) for t in tasks] if singles else []
    check_groups(tasks, groups, "groups")
    for g in groups:
        if group_of(g) not in out and (singles or len(g) > 1):
            out.append(group_of(g))
    return out
