"""Grouping methods (``mtlo transfer --method``): which task sets a study trains first, whether
its all-tasks runs measure the affinity, and how it estimates the gains of groups it never
trained. Each is a small class registered in :data:`METHODS` that owns all of this: the task
sets (``subsets``), whether it measures the affinity, and its estimate of the gains of groups
it never trained (``estimate``), with the words a report uses for it; :func:`method` names the
valid ones. A new method is one class registered with ``@METHODS.register``.

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
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.domain import Group, Run, group_of
from orchestrator.errors import ConfigError
from trainables.registry import Registry

if TYPE_CHECKING:
    from orchestrator.transfer.analysis import Gain
    from orchestrator.transfer.study import Study

# an estimate of Δ_t(G) for a task t in a group G never trained (None: no estimate)
Estimate = Callable[[str, Group], "float | None"]


class Method(ABC):
    name: ClassVar[str]
    measures_affinity: ClassVar[bool] = False  # its all-tasks runs measure the lookahead affinity
    reads_curves: ClassVar[bool] = False  # its estimate reads the tasks' learning curves alone
    proposes: ClassVar[bool] = True  # it proposes a grouping to confirm (the given task sets do not)
    samples: ClassVar[bool] = False  # it samples task subsets (its constructor takes --runs and a seed)
    sizes: ClassVar[tuple[int, ...] | None] = None  # group sizes trained first; None: every size
    label: ClassVar[str] = "Standley (estimated from pairs)"  # the proposed grouping's method, in a report
    source: ClassVar[str] = "the pairs (Standley et al. 2020)"  # what the estimate comes from, in a report
    fit_key: ClassVar[str | None] = None  # the result's key for what the estimate's fit says
    shows_trained: ClassVar[bool] = False  # the fit's report also covers the groups trained

    def subsets(self, tasks: list[str]) -> list[Group]:
        sizes = self.sizes or tuple(range(1, len(tasks) + 1))
        return [group_of(c) for k in sizes for c in itertools.combinations(tasks, k)]

    def estimate(self, study: Study, runs: list[Run], gains: list[Gain],
                 matrix: Mapping[str, Mapping[str, float | None]],
                 affinity: dict[str, dict[str, float]] | None) -> tuple[Estimate | None, dict[str, Any] | None]:
        """The estimate of an untrained group's gains, and what its fit says (for the report):
        Standley's, from the pairs."""
        from orchestrator.transfer.analysis import standley_estimate

        return (lambda t, g: standley_estimate(matrix, t, g)), None


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
    reads_curves = True
    label = "affinity (estimated)"
    source = "the affinity"
    fit_key = "estimator"
    shows_trained = True  # only confirmations are trained

    def subsets(self, tasks: list[str]) -> list[Group]:
        return [group_of((t,)) for t in tasks] + [group_of(tasks)]

    def estimate(self, study: Study, runs: list[Run], gains: list[Gain],
                 matrix: Mapping[str, Mapping[str, float | None]],
                 affinity: dict[str, dict[str, float]] | None) -> tuple[Estimate | None, dict[str, Any] | None]:
        """Built on the affinity, the baselines' learning curves and the gains measured in the
        all-tasks group (``transfer/predict.py``)."""
        if not affinity:
            return None, None
        est = self.estimator(study, runs, gains, affinity)
        return est, {"dilution": {t: est.dilution(t, study.tasks) for t in study.tasks},
                     "residual": dict(est.residual), "helper": {t: est.helper(t) for t in study.tasks},
                     "carry": dict(est.carry)}

    @staticmethod
    def estimator(study: Study, runs: list[Run], gains: list[Gain], affinity: dict[str, dict[str, float]]) -> Any:
        """The estimator (``transfer.predict.Estimator``), fitted to the gains measured in the
        all-tasks group."""
        from orchestrator.transfer.analysis import baselines
        from orchestrator.transfer.predict import Estimator

        curves: dict[str, list[Any]] = {}
        for r in runs:
            if len(r.group) == 1 and r.curve:
                curves.setdefault(r.group[0], []).append(r.curve)
        base = {t: s.mean for t, s in baselines(runs).items()}
        everyone = group_of(study.tasks)
        est = Estimator(list(study.tasks), study.higher_is_better, base, curves, affinity, study.max_steps,
                        study.schedule, study.batches, study.temperature)
        return est.fit({g.task: g.delta for g in gains if g.group == everyone})


class Surrogate(Method):
    """Every task alone, then ``runs`` subsets (default 2n) proposed by Optuna (seeded by the
    study's first seed)."""

    name = "surrogate"
    samples = True
    label = "surrogate (estimated)"
    source = "the surrogate model"
    fit_key = "surrogate"

    def __init__(self, runs: int | None = None, seed: int = 0) -> None:
        self.runs, self.seed = runs, seed

    def subsets(self, tasks: list[str]) -> list[Group]:
        from orchestrator.transfer.surrogate import default_runs, propose_subsets

        m = self.runs if self.runs is not None else default_runs(len(tasks))
        return [group_of((t,)) for t in tasks] + propose_subsets(tasks, m, self.seed)

    def estimate(self, study: Study, runs: list[Run], gains: list[Gain],
                 matrix: Mapping[str, Mapping[str, float | None]],
                 affinity: dict[str, dict[str, float]] | None) -> tuple[Estimate | None, dict[str, Any] | None]:
        """Each task's regularized linear model, fitted on the trained subsets."""
        from orchestrator.transfer.surrogate import fit

        fitted = fit(study.tasks, runs, study.higher_is_better)
        return fitted, fitted.as_dict()


class Groups(Method):
    """The task sets given (``given_subsets``); not a ``--method`` of its own."""

    name = "groups"
    proposes = False

    def subsets(self, tasks: list[str]) -> list[Group]:
        raise ConfigError("--groups: give the task sets to train (a+b,c)")

    def estimate(self, study: Study, runs: list[Run], gains: list[Gain],
                 matrix: Mapping[str, Mapping[str, float | None]],
                 affinity: dict[str, dict[str, float]] | None) -> tuple[Estimate | None, dict[str, Any] | None]:
        return None, None


METHODS: Registry[type[Method]] = Registry("--method")
for _m in (Pairwise, Exhaustive, Affinity, Surrogate):
    METHODS.register(_m)


def method(name: str, runs: int | None = None, seed: int = 0) -> Method:
    """The method ``name``; ``runs`` (``--runs``): the subsets of a method that samples them
    (one whose constructor takes ``runs``)."""
    if name == Groups.name:
        cls: type[Method] = Groups
    else:
        cls = METHODS[name]
    if cls.samples:
        return cls(runs, seed)  # type: ignore[call-arg]
    if runs is not None:
        raise ConfigError(f"--runs: only a method that samples task subsets takes it (the method is {name})")
    return cls()


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
