"""Negative-transfer analysis: pure functions over a table of finished runs.

Definitions (docs/transfer.md, "Statistics"), for task t with main metric m_t and sign
s_t (+1 if higher is better):

- baseline b_t = m_t({t}) over seeds;
- relative gain of t in group S: Δ_t(S) = s_t · (mean m_t(S) − mean b_t) / |mean b_t|;
  undefined where b_t = 0 (``zero_baselines``: left out of the gains, counted 0 in a grouping);
- negative transfer of S on t: Δ_t(S) < 0 and significant across seeds (Welch's t-test
  on the per-seed scores of t in S against t alone, at least ``min_seeds`` each), under a
  false-discovery-rate control across the study's tests: the Benjamini-Hochberg adjusted p
  below alpha (an exhaustive six-task study makes 186 such tests: at a raw p < 0.05
  each, several would be flagged by seed noise alone);
- pairwise matrix A[i][j] = Δ_i({i, j});
- higher-order estimate (Standley et al. 2020): Δ_i(S) ≈ mean over j in S \\ {i} of A[i][j];
- grouping: at most K groups covering every task, each task scored in its best group,
  maximizing the total gain (exact dynamic programme over task subsets: ``transfer/grouping.py``).
"""

from __future__ import annotations

import itertools
import math
import statistics
import warnings
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from orchestrator.domain import ZERO_BASELINE, Group, Run, group_of, relative_gain
from orchestrator.transfer.grouping import MAX_EXACT_TASKS, Grouping, best_grouping
from orchestrator.transfer.shapes import GainRow, StatsRow

# the runs table and the grouping search, re-exported: callers read the analysis as one module
__all__ = ["MAX_EXACT_TASKS", "ZERO_BASELINE", "Group", "Grouping", "Run", "best_grouping", "group_of",
           "relative_gain"]


@dataclass(frozen=True)
class Stats:
    mean: float
    std: float
    n: int
    values: tuple[float, ...]

    def as_dict(self) -> StatsRow:
        return {"mean": self.mean, "std": self.std, "n": self.n}


@dataclass(frozen=True)
class Gain:
    task: str
    group: Group
    delta: float  # relative gain (+: helps), from the means
    ci: tuple[float, float] | None  # 95% (1 - alpha) Welch interval of delta
    p: float | None  # Welch's t-test, two-sided (raw)
    significant: bool  # p_adjusted < alpha, with enough seeds
    n: int  # seeds of the group
    estimated: bool = False  # True: not trained, estimated (Standley / affinity / surrogate)
    p_adjusted: float | None = None  # Benjamini-Hochberg over the study's tests

    def as_dict(self) -> GainRow:
        return {"task": self.task, "group": list(self.group), "delta": self.delta,
                "ci": list(self.ci) if self.ci else None, "p": self.p, "p_adjusted": self.p_adjusted,
                "significant": self.significant, "n": self.n, "estimated": self.estimated,
                "expected": None}


def _stats(values: Sequence[float]) -> Stats:
    vals = tuple(float(v) for v in values)
    return Stats(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals), vals)


def scores_by_group(runs: Iterable[Run]) -> dict[Group, dict[str, list[float]]]:
    """group -> task -> the task's score in that group, one per seed (finite scores only)."""
    table: dict[Group, dict[str, list[float]]] = {}
    for r in runs:
        for t, v in r.scores.items():
            if v is not None and math.isfinite(v):
                table.setdefault(r.group, {}).setdefault(t, []).append(float(v))
    return table


def baselines(runs: Iterable[Run]) -> dict[str, Stats]:
    return {g[0]: _stats(ts[g[0]]) for g, ts in scores_by_group(runs).items() if len(g) == 1 and ts.get(g[0])}


NOISY_BASELINE_CV = 0.10  # seed-to-seed std over |mean| of a baseline above which its task's gains are flagged


def zero_baselines(base: Mapping[str, Stats]) -> list[str]:
    """The tasks whose baseline is 0 (a task that learned nothing alone: span F1 0 at every
    seed, say). Δ_t divides by |b_t|, so their relative gains are undefined: ``gains`` leaves
    them out, and a grouping counts them 0 wherever they are placed (``gain_table``'s
    ``neutral``, ``grouping_totals``): they ride along without deciding it."""
    return sorted(t for t, s in base.items() if abs(s.mean) < ZERO_BASELINE)


def noisy_baselines(base: dict[str, Stats], cv: float = NOISY_BASELINE_CV) -> dict[str, float]:
    """The tasks whose baseline varies by more than ``cv`` of its size from seed to seed
    (std / |mean|, at least two seeds), with that ratio. A relative gain divides by |b_t|, so
    such a task's gains are noisy and, being large, weigh most in a grouping's total (a
    Pearson of 0.13 ± 0.024 on vader_nyt made every grouping's total of a six-task study
    swing by ±100 points from seed to seed: docs/research/task-affinity.md). A baseline of 0 is
    ``zero_baselines``' case, not this one's."""
    zero = set(zero_baselines(base))
    ratio = {t: s.std / abs(s.mean) for t, s in base.items() if s.n >= 2 and t not in zero}
    return {t: r for t, r in ratio.items() if r > cv}


def welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05
          ) -> tuple[float | None, tuple[float, float] | None]:
    """Welch's t-test of mean(a) − mean(b): (two-sided p, 1 − alpha interval of the difference).
    None where a side has fewer than two values; with zero variance on both sides the
    difference is exact (p 0 or 1, a point interval). Values are rounded to 12 decimals first:
    scores of a few hundred examples often repeat exactly across seeds, and float noise
    (0.1 + 0.2 against 0.3) would make a constant side vary by 1e-17."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None, None
    a, b = [round(x, 12) for x in a], [round(x, 12) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return (1.0 if diff == 0 else 0.0), (diff, diff)
    with warnings.catch_warnings():  # one constant side (the other varies) is a valid Welch test
        warnings.filterwarnings("ignore", "Precision loss occurred in moment calculation", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence_level=1 - alpha)
    return float(res.pvalue), (float(ci.low), float(ci.high))


MIN_SEEDS = 3  # seeds on each side below which no gain is declared significant


def gains(runs: Sequence[Run], higher_is_better: Mapping[str, bool], *, alpha: float = 0.05,
          min_seeds: int = MIN_SEEDS) -> list[Gain]:
    """Δ_t(S) for every trained group S of two or more tasks and every t in S (but a task
    whose baseline is 0: ``zero_baselines``); significant where the Benjamini-Hochberg
    adjusted p of its Welch test (over all these tests, ``scipy.stats.false_discovery_control``)
    is below ``alpha`` and both sides have ``min_seeds`` seeds."""
    table = scores_by_group(runs)
    base = baselines(runs)
    zero = set(zero_baselines(base))
    out = []
    for g in sorted(table, key=lambda g: (len(g), g)):
        if len(g) < 2:
            continue
        for t in g:
            if t not in base or t in zero or not table[g].get(t):
                continue
            vals, b, hib = table[g][t], base[t], higher_is_better[t]
            delta = relative_gain(statistics.fmean(vals), b.mean, hib)
            p, ci = welch(vals, b.values, alpha)  # ci: of the difference of the means, mapped like it
            ci_delta = tuple(sorted(relative_gain(b.mean + c, b.mean, hib) for c in ci)) if ci else None  # type: ignore[type-var]
            out.append(Gain(t, g, delta, ci_delta, p, False, len(vals)))  # type: ignore[arg-type]
    tested = [k for k, g in enumerate(out) if g.p is not None]
    if tested:
        for k, q in zip(tested, fdr_adjusted([out[k].p or 1.0 for k in tested]), strict=True):
            enough = out[k].n >= min_seeds and base[out[k].task].n >= min_seeds
            out[k] = replace(out[k], p_adjusted=float(q), significant=bool(q < alpha and enough))
    return out


def fdr_adjusted(pvalues: Sequence[float]) -> list[float]:
    """The p-values of a study's tests adjusted together (Benjamini-Hochberg): a gain is
    significant where its adjusted p is below alpha."""
    from scipy import stats

    return [float(q) for q in stats.false_discovery_control(list(pvalues), method="bh")] if pvalues else []


def negative_transfer(gs: Iterable[Gain]) -> list[Gain]:
    return [g for g in gs if g.significant and g.delta < 0 and not g.estimated]


def pairwise_matrix(gs: Iterable[Gain], tasks: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """A[i][j] = Δ_i({i, j}); None where the pair was not trained; A[i][i] = 0."""
    pair = {(g.task, next(x for x in g.group if x != g.task)): g.delta for g in gs
            if len(g.group) == 2 and not g.estimated}
    return {i: {j: 0.0 if i == j else pair.get((i, j)) for j in tasks} for i in tasks}


def standley_estimate(matrix: Mapping[str, Mapping[str, float | None]], task: str, group: Group) -> float | None:
    """Δ_task(group) ≈ mean of A[task][j] over the other members j (None if a pair is missing)."""
    others = [matrix[task][j] for j in group if j != task]
    if not others:
        return 0.0
    if any(v is None for v in others):
        return None
    return statistics.fmean(v for v in others if v is not None)


def gain_table(tasks: Sequence[str], measured: Iterable[Gain], *,
               estimate: Callable[[str, Group], float | None] | None = None,
               max_size: int | None = None, neutral: Collection[str] = ()) -> dict[Group, dict[str, float]]:
    """Δ_t(G) for every candidate group G: measured where trained, else ``estimate`` (if
    given); a single task's own group scores 0 (its baseline), and so does a ``neutral``
    task (``zero_baselines``) in every group that is a candidate for its other members."""
    table: dict[Group, dict[str, float]] = {(t,): {t: 0.0} for t in tasks}
    for g in measured:
        table.setdefault(g.group, {})[g.task] = g.delta
    for group, row in table.items():
        row.update({t: 0.0 for t in group if t in neutral})
    if estimate is not None:
        top = max_size or len(tasks)
        for k in range(2, top + 1):
            for combo in itertools.combinations(sorted(tasks), k):
                if combo in table and len(table[combo]) == k:
                    continue
                row = table.get(combo, {}).copy()
                for t in combo:
                    if t not in row:
                        est = 0.0 if t in neutral else estimate(t, combo)
                        if est is None:
                            break
                        row[t] = est
                else:
                    table[combo] = row
    # only complete groups (every member has a gain) are candidates
    return {g: row for g, row in table.items() if all(t in row for t in g)}


def grouping_totals(runs: Iterable[Run], assignment: Mapping[str, Sequence[str]],
                    higher_is_better: Mapping[str, bool]) -> dict[int, float]:
    """A grouping's total gain at each seed: Σ_t s_t · (m_t(G_t, s) − b_t(s)) / |mean b_t|
    (G_t: the group t is scored in, b_t(s): t alone at seed s), for the seeds at which every
    run is there. They average to the grouping's score. A task whose baseline is 0 counts 0."""
    runs = list(runs)
    score: dict[tuple[Group, int], Mapping[str, float]] = {(r.group, r.seed): r.scores for r in runs}
    stats_ = baselines(runs)
    zero = set(zero_baselines(stats_))
    base = {t: s.mean for t, s in stats_.items()}
    totals = {}
    for seed in sorted({r.seed for r in runs}):
        total = 0.0
        for t, g in assignment.items():
            own, alone = score.get((group_of(g), seed), {}).get(t), score.get(((t,), seed), {}).get(t)
            if own is None or alone is None or t not in base or not (math.isfinite(own) and math.isfinite(alone)):
                break
            if t not in zero:  # the seed's paired difference, relative to the mean baseline
                total += relative_gain(base[t] + (own - alone), base[t], higher_is_better[t]) or 0.0
        else:
            totals[seed] = total
    return totals


def on_test(grouping: Grouping, runs: Iterable[Run], higher_is_better: Mapping[str, bool]) -> Grouping:
    """``grouping`` (chosen on validation) with its total gain on the held-out test split: the
    same assignment scored on each run's test scores, at the seeds where every run has them."""
    test_runs = [replace(r, scores=r.test) for r in runs if r.test and set(r.test) == set(r.scores)]
    totals = list(grouping_totals(test_runs, grouping.assignment, higher_is_better).values()) \
        if grouping.assignment else []
    if totals:
        grouping.test = sum(totals) / len(totals)
        grouping.test_ci = t_interval(totals)
    return grouping


def t_interval(values: Sequence[float], alpha: float = 0.05) -> tuple[float, float] | None:
    """1 − alpha t interval of the mean; None with fewer than two values."""
    from scipy import stats

    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = float(stats.t.ppf(1 - alpha / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return (mean - half, mean + half)


def grouping_interval(runs: Iterable[Run], assignment: Mapping[str, Sequence[str]],
                      higher_is_better: Mapping[str, bool], alpha: float = 0.05) -> tuple[float, float] | None:
    """1 − alpha t interval of a grouping's total gain over the seeds (``grouping_totals``:
    the seeds are independent repetitions)."""
    return t_interval(list(grouping_totals(runs, assignment, higher_is_better).values()), alpha)


def agreement(matrices: Sequence[Mapping[str, Mapping[str, float]]], tasks: Sequence[str]) -> float | None:
    """How far several measurements of an affinity (one per all-tasks run, i.e. per seed)
    agree on *who helps whom*: for each task t, the Spearman correlation between two runs of
    Z[j -> t] over the other tasks j; mean over tasks and over pairs of runs. 1: the same
    ranking of helpers at every seed; near 0: the ranking is seed noise. None with fewer than
    two runs or four tasks (three helpers per task, the fewest a ranking can say much of)."""
    from scipy import stats

    if len(matrices) < 2 or len(tasks) < 4:
        return None
    vals = []
    for a, b in itertools.combinations(matrices, 2):
        for t in tasks:
            xa = [a.get(j, {}).get(t) for j in tasks if j != t]
            xb = [b.get(j, {}).get(t) for j in tasks if j != t]
            if any(v is None for v in xa + xb) or len(set(xa)) < 2 or len(set(xb)) < 2:
                continue
            vals.append(float(stats.spearmanr(xa, xb)[0]))
    return statistics.fmean(vals) if vals else None
