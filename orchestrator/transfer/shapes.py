"""The typed shape of a study's results: what ``transfer.results.analyse`` returns, what
``mtlo transfer --json`` and ``mtlo report --json`` print, and what the report renders. They
are TypedDicts (plain JSON data, checked by mypy at every key read)."""

from __future__ import annotations

from typing import Any, TypedDict


class StatsRow(TypedDict):
    mean: float
    std: float
    n: int


class GainRow(TypedDict):
    task: str
    group: list[str]
    delta: float
    ci: list[float] | None  # 95% Welch interval of the gain
    p: float | None  # Welch's t-test, two-sided (raw)
    p_adjusted: float | None  # Benjamini-Hochberg over the study's tests (what significant uses)
    significant: bool
    n: int  # seeds of the group
    estimated: bool  # not trained: estimated (Standley / affinity / surrogate)
    expected: float | None  # measured gains: the posterior mean given the task's seed noise (transfer/noise.py)


class GroupingRow(TypedDict, total=False):
    groups: list[list[str]]
    score: float | None  # total gain as measured on the seeds that chose it (None: not available)
    ci: list[float] | None  # 95% t interval over those seeds
    method: str
    confirmed: bool  # every group the estimates propose was trained
    assignment: dict[str, list[str]]  # task -> the group it is scored in
    note: str  # why it is not available
    test: float | None  # the same grouping's total gain on the held-out test split (chosen on validation)
    test_ci: list[float] | None
    expected: dict[str, Any] | None  # what new seeds should give: expected, interval, probability (noise.Headline)
    apart: bool  # every task alone: no grouping within the budget has a credible gain
    within_budget: GroupingRow  # with apart: the budget's least harmful grouping


class CostRow(TypedDict):
    trials: int  # finished runs
    train_steps: int  # optimizer steps to their best epochs
    planned: int  # runs of the method's task sets at every seed


class RunRow(TypedDict):
    group: list[str]
    seed: int
    scores: dict[str, float]  # validation, at the best epoch
    test: dict[str, float]  # the best epoch's weights on the test split
    best_step: int
    run_id: str | None


class FailedRun(TypedDict):
    group: list[str]
    seed: int
    status: str  # FAILED | DIVERGED
    error: str
    run_id: str


class CheckRow(TypedDict, total=False):
    """``--check-seeds K``: the recommendation trained again at K new seeds."""

    seeds: list[int]
    groups: list[list[str]]  # the groups checked (the recommendation, or the budget's grouping beside "apart")
    assignment: dict[str, list[str]]
    total: float | None  # its total gain on the new seeds (None: not all of its runs finished)
    ci: list[float] | None  # 95% t interval over the new seeds
    per_seed: dict[str, float]
    expected: float | None  # the study's estimate, and its interval for a check at K seeds
    interval: list[float] | None
    held: bool | None  # the new-seed total lies inside that interval
    runs: int
    note: str


class TransferResult(TypedDict, total=False):
    name: str
    parent_run_id: str
    method: str
    budget: int
    tasks: list[str]
    main_metric: dict[str, str]
    seeds: list[int]
    baselines: dict[str, StatsRow]
    noisy_baselines: dict[str, float]  # task -> std / |mean| of its baseline, above 10%
    zero_baselines: list[str]  # tasks that scored 0 alone: no relative gain
    gains: list[GainRow]
    negative_transfer: list[GainRow]
    pairwise: dict[str, dict[str, float | None]]
    estimated_gains: list[GainRow]
    affinity: dict[str, dict[str, float]]
    proposed: GroupingRow | None
    estimate_source: str  # what the method's estimate of untrained groups comes from (a report's words)
    proposes: bool  # the method proposes a grouping to confirm (not a study of given task sets)
    estimator: dict[str, Any] | None  # the affinity method's fit (dilution, residual, helper, carry, proposed)
    surrogate: dict[str, Any] | None  # the surrogate method's fit: tasks -> coefficients with intervals; cv
    grouping: GroupingRow
    noise: dict[str, dict[str, Any]]  # task -> its seed noise (sigma, df, tau) and power (noise.power_table)
    checked: GroupingRow | None  # a --groups study: the given task sets as a grouping
    check: CheckRow | None  # --check-seeds: the recommendation on new seeds
    cost: CostRow
    runs: list[RunRow]
    # added when the study ends or is read back
    failed_runs: list[FailedRun]
    affinity_signals: dict[str, Any]  # lookahead / gradient: runs, agreement, matrix
    status: str  # the parent run's (RUNNING while a study runs)
    seconds: float
