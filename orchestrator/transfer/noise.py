"""Seed noise in a study's gains, and estimates that account for it (docs/transfer.md,
"Noise, shrinkage and the headline").

A study's relative gains are measured on a few seeds. The best grouping of many, scored on
the seeds it was chosen on, is biased upward (the winner's curse), and a weak task's
relative gain (a small baseline in the denominator) swings by tens of points from seed to
seed and decides a summed total. Pure functions over the runs table:

- :func:`seed_gains`: each task's paired relative gain in each group at each seed,
  s · (m_t(G, seed) − b_t(seed)) / |mean b_t| (what ``analysis.grouping_totals`` sums);
- :func:`task_noise`: per task, the seed-to-seed sd σ_t of one seed's gain, pooled within its
  groups (many degrees of freedom where one group has two), and τ_t, the spread of its true
  gains across groups around 0 (a moment estimate);
- :func:`shrink`: a normal-normal empirical-Bayes posterior for one measured gain: prior
  N(0, τ_t²), measurement N(θ, σ_t²/n) → mean k·Δ, variance k·σ_t²/n, k = τ²/(τ² + σ²/n).
  A posterior mean needs no correction for having been selected as the largest (Dawid 1994;
  Efron 2011, "Tweedie's formula and selection bias"), which is what a chosen grouping is;
- :func:`headline`: a grouping's expected total gain on new seeds (the sum of its shrunk
  gains) with a 95% interval for what a check at ``check_seeds`` new seeds will measure
  (the estimate's own uncertainty plus the new seeds' noise);
- :func:`null_headlines`, :func:`against_noise`: is a headline more than noise and selection
  give? The study simulated with no transfer at all (each task's run and baseline noise
  apart: a task's gains share its baseline's error), shrunk, chosen and summed the same way;
  a grouping is *credible* where its headline is above 95% of those (a posterior probability
  would not do: on pure noise, the moment estimate of τ is often above 0 and the posterior then
  calls 7 studies in 10 credible, tests/orchestrator/test_noise.py);
- :func:`detectable_gain`, :func:`seeds_needed`: power, from each task's σ_t.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.domain import ZERO_BASELINE, Group, Run, group_of

SeedGains = dict[Group, dict[str, dict[int, float]]]


def seed_gains(runs: Iterable[Run], higher_is_better: Mapping[str, bool]) -> SeedGains:
    """group (two or more tasks) -> task -> seed -> that seed's paired relative gain, at the
    seeds where the task alone was trained too (a task whose baseline is 0 has none)."""
    runs = list(runs)
    alone: dict[str, dict[int, float]] = {}
    for r in runs:
        if len(r.group) == 1 and _finite(r.scores.get(r.group[0])):
            alone.setdefault(r.group[0], {})[r.seed] = float(r.scores[r.group[0]])
    base = {t: statistics.fmean(v.values()) for t, v in alone.items()}
    out: SeedGains = {}
    for r in runs:
        if len(r.group) < 2:
            continue
        for t, v in r.scores.items():
            b = alone.get(t, {}).get(r.seed)
            if b is None or not _finite(v) or abs(base[t]) < ZERO_BASELINE:
                continue
            sign = 1.0 if higher_is_better[t] else -1.0
            out.setdefault(r.group, {}).setdefault(t, {})[r.seed] = sign * (float(v) - b) / abs(base[t])
    return out


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


@dataclass(frozen=True)
class TaskNoise:
    """One task's seed noise: ``sigma`` is the sd of one seed's relative gain (within a group,
    pooled over its groups, ``df`` degrees of freedom); ``tau`` the sd of its true gains
    across groups around 0 (0: the gains measured are consistent with none at all)."""

    task: str
    sigma: float
    df: int
    tau: float
    groups: int

    def as_dict(self) -> dict[str, float | int]:
        return {"sigma": self.sigma, "df": self.df, "tau": self.tau, "groups": self.groups}


def task_noise(gains: SeedGains) -> dict[str, TaskNoise]:
    """Each task's :class:`TaskNoise`, from every group it was measured in at two or more seeds
    (pooled variance); τ² = mean Δ² − mean σ²/n over its groups, floored at 0."""
    per: dict[str, list[list[float]]] = {}
    for rows in gains.values():
        for t, by_seed in rows.items():
            per.setdefault(t, []).append(list(by_seed.values()))
    out = {}
    for t, groups in per.items():
        sigma, df = pooled_sd(groups)
        if df == 0:
            continue
        excess = statistics.fmean(statistics.fmean(v) ** 2 - sigma ** 2 / len(v) for v in groups)
        out[t] = TaskNoise(t, sigma, df, math.sqrt(max(0.0, excess)), len(groups))
    return out


def pooled_sd(groups: Sequence[Sequence[float]]) -> tuple[float, int]:
    """(sd, degrees of freedom) of the values around their own group's mean, pooled over the
    groups of two or more values."""
    df = sum(len(v) - 1 for v in groups if len(v) > 1)
    if df == 0:
        return 0.0, 0
    ss = sum(sum((x - statistics.fmean(v)) ** 2 for x in v) for v in groups if len(v) > 1)
    return math.sqrt(ss / df), df


def shrink(delta: float, n: int, noise: TaskNoise | None) -> tuple[float, float]:
    """(posterior mean, posterior variance) of a gain measured as ``delta`` at ``n`` seeds.
    Without a noise estimate (a task measured at one seed only) the gain is kept as measured,
    with an unknown (infinite) variance."""
    if noise is None or n < 1:
        return delta, math.inf
    se2 = noise.sigma ** 2 / n
    if se2 == 0.0:
        return delta, 0.0
    k = noise.tau ** 2 / (noise.tau ** 2 + se2)
    return k * delta, k * se2


def shrunk_table(table: Mapping[Group, Mapping[str, float]], gains: SeedGains,
                 noise: Mapping[str, TaskNoise]) -> dict[Group, dict[str, float]]:
    """A gain table (``analysis.gain_table``) with every measured gain replaced by its posterior
    mean; a task alone, and a task without measured seeds (neutral), stay as they are."""
    out: dict[Group, dict[str, float]] = {}
    for g, row in table.items():
        out[g] = {t: shrink(v, len(gains[g][t]), noise.get(t))[0] if len(g) > 1 and t in gains.get(g, {}) else v
                  for t, v in row.items()}
    return out


@dataclass(frozen=True)
class Headline:
    """What a grouping is expected to give on new seeds: ``expected`` (the sum of its shrunk
    gains), ``interval`` (95%: what a check at ``check_seeds`` new seeds will measure: the
    estimate's own uncertainty, ``sd_estimate``, plus the check's noise, ``sd_check``) and
    ``in_sample`` (its total as measured on the seeds that chose it: optimistic)."""

    expected: float
    interval: tuple[float, float]
    sd_estimate: float
    sd_check: float
    check_seeds: int
    in_sample: float
    per_task: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {"expected": self.expected, "interval": list(self.interval), "sd_estimate": self.sd_estimate,
                "sd_check": self.sd_check, "check_seeds": self.check_seeds, "in_sample": self.in_sample,
                "per_task": self.per_task}


def headline(assignment: Mapping[str, Sequence[str]], gains: SeedGains, noise: Mapping[str, TaskNoise],
             *, check_seeds: int = 3, alpha: float = 0.05) -> Headline | None:
    """The expected total gain of a grouping (each task in the group it is scored in) on new
    seeds, with a 1 − alpha interval for a check at ``check_seeds`` new seeds: the sum of
    posterior variances (the estimate) plus Σ σ_t² / check_seeds (the check's own noise), t
    quantile on the fewest degrees of freedom among the tasks. Tasks alone, and tasks of
    baseline 0, count 0. None where a task in a group has no noise estimate."""
    from scipy import stats

    expected = raw = var_post = var_new = 0.0
    per_task: dict[str, float] = {}
    dfs = []
    for t, grp in sorted(assignment.items()):
        by_seed = gains.get(group_of(grp), {}).get(t) if len(grp) > 1 else None
        if not by_seed:
            per_task[t] = 0.0
            continue
        nz = noise.get(t)
        if nz is None:
            return None
        mean, var = shrink(statistics.fmean(by_seed.values()), len(by_seed), nz)
        per_task[t] = mean
        expected += mean
        raw += statistics.fmean(by_seed.values())
        var_post += var
        var_new += nz.sigma ** 2 / check_seeds
        dfs.append(nz.df)
    q = float(stats.t.ppf(1 - alpha / 2, min(dfs))) if dfs else 0.0
    half = q * math.sqrt(var_post + var_new)
    return Headline(expected, (expected - half, expected + half), math.sqrt(var_post), math.sqrt(var_new),
                    check_seeds, raw, per_task)


def detectable_gain(noise: TaskNoise, seeds: int, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest true relative gain a two-sided paired t-test over ``seeds`` seeds (raw
    ``alpha``) detects with probability ``power``, for a task of this seed noise (noncentral t)."""
    if seeds < 2:
        return None
    return noise.sigma * _detectable_in_sigmas(seeds, alpha, power)


@functools.lru_cache(maxsize=4096)
def _detectable_in_sigmas(seeds: int, alpha: float, power: float) -> float:
    """:func:`detectable_gain` in units of the task's seed noise, which it scales: the same for
    every task at the same seeds (a study's power table asks for each task and seed count)."""
    from scipy import optimize, stats

    df, crit = seeds - 1, float(stats.t.ppf(1 - alpha / 2, seeds - 1))

    def miss(d: float) -> float:  # d: the gain in units of sigma
        nc = d * math.sqrt(seeds)
        if df > 100:  # scipy's noncentral t turns NaN at many degrees of freedom; the normal is exact enough
            return float(stats.norm.sf(crit - nc) + stats.norm.cdf(-crit - nc)) - power
        lower = float(stats.nct.cdf(-crit, df, nc))  # the wrong-sided rejections: NaN where it is about 0
        return float(stats.nct.sf(crit, df, nc)) + (0.0 if math.isnan(lower) else lower) - power

    hi = 1.0
    while miss(hi) < 0:
        hi *= 2
    # at d = 0 the power is alpha (and scipy's noncentral t is NaN there): start just above it
    return float(optimize.brentq(miss, 1e-6, hi))


def seeds_needed(noise: TaskNoise, gain: float, *, alpha: float = 0.05, power: float = 0.8,
                 most: int = 1000) -> int | None:
    """The fewest seeds at which a true gain of ``gain`` is detected with ``power`` (None: more
    than ``most``); the detectable gain falls as the seeds grow, so a bisection finds it."""
    def enough(n: int) -> bool:
        found = detectable_gain(noise, n, alpha=alpha, power=power)
        return found is not None and found <= abs(gain)

    if abs(gain) == 0 or not enough(most):
        return None
    lo, hi = 1, most  # enough(hi), not enough(lo) (one seed detects nothing)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def power_table(noise: Mapping[str, TaskNoise], seeds: int, gains: Sequence[float] = (0.05, 0.10)
                ) -> dict[str, dict[str, object]]:
    """Per task: its seed noise, the smallest gain ``seeds`` seeds detect (paired t-test, raw
    alpha 0.05, power 80%), and the seeds a true gain of each of ``gains`` needs."""
    return {t: {"sigma": nz.sigma, "df": nz.df, "detectable": detectable_gain(nz, seeds),
                "seeds_for": {f"{g:g}": seeds_needed(nz, g) for g in gains}}
            for t, nz in sorted(noise.items())}


def run_noise(runs: Iterable[Run], higher_is_better: Mapping[str, bool]) -> dict[str, tuple[float, float]]:
    """Per task, (σ_run, σ_base): the seed-to-seed sd of its score in a group (pooled within its
    groups) and alone, both relative to |mean baseline|. A study's gains of one task share its
    baseline, so the baseline's error moves all of them together: :func:`null_headlines`
    simulates the two apart."""
    runs = list(runs)
    alone: dict[str, list[float]] = {}
    grouped: dict[str, list[list[float]]] = {}
    by_group: dict[tuple[Group, str], list[float]] = {}
    for r in runs:
        for t, v in r.scores.items():
            if _finite(v):
                if len(r.group) == 1:
                    alone.setdefault(t, []).append(float(v))
                else:
                    by_group.setdefault((r.group, t), []).append(float(v))
    for (_, t), vals in by_group.items():
        grouped.setdefault(t, []).append(vals)
    out = {}
    for t, base in alone.items():
        b = statistics.fmean(base)
        sd, df = pooled_sd(grouped.get(t, []))
        if len(base) < 2 or df == 0 or abs(b) < ZERO_BASELINE:
            continue
        out[t] = (sd / abs(b), statistics.stdev(base) / abs(b))
    return out


def null_headlines(shape: Mapping[Group, Mapping[str, int]], tasks: Sequence[str], budget: int,
                   sd: Mapping[str, tuple[float, float]], *, seeds: int, sims: int = 200,
                   rng_seed: int = 0) -> list[float]:
    """The expected totals this procedure reports when no task helps or hurts any other: the
    study's measured groups (``shape``: group -> task -> seeds), each task's run and baseline
    noise (``run_noise``), simulated ``sims`` times, each time shrunk, chosen and summed as
    the study is. A headline inside this distribution is what noise and selection alone give."""
    import numpy as np

    from orchestrator.transfer.analysis import best_grouping

    rng = np.random.default_rng(rng_seed)
    out = []
    for _ in range(sims):
        base = {t: rng.normal(0.0, sd[t][1], seeds) for t in sd}
        sim: SeedGains = {}
        for g, row in shape.items():
            for t, n in row.items():
                if t in sd:
                    err = rng.normal(0.0, sd[t][0], n) - base[t][:n]
                    sim.setdefault(g, {})[t] = dict(enumerate(err.tolist()))
        noise = task_noise(sim)
        table: dict[Group, dict[str, float]] = {(t,): {t: 0.0} for t in tasks}
        for g, row2 in sim.items():
            table[g] = {t: statistics.fmean(v.values()) for t, v in row2.items()}
            table[g].update({t: 0.0 for t in g if t not in row2})  # tasks without a gain (baseline 0) count 0
        choice = best_grouping(tasks, shrunk_table(table, sim, noise), budget)
        h = headline(choice.assignment, sim, noise)
        out.append(h.expected if h is not None else 0.0)
    return out


NULL_SIMS = 200  # simulated studies without transfer behind a credibility check
CREDIBLE_P = 0.05  # a grouping is credible where noise alone reaches its headline at most this often


@dataclass(frozen=True)
class NoiseTest:
    """A headline against what noise and selection alone give: ``p`` (the share of simulated
    studies without transfer whose headline is at least as high), ``noise_95`` (their 95th
    percentile), ``credible`` (a gain, and ``p`` at most :data:`CREDIBLE_P`)."""

    p: float
    noise_95: float
    credible: bool
    sims: int

    def as_dict(self) -> dict[str, Any]:
        return {"p_noise": self.p, "noise_95": self.noise_95, "credible": self.credible, "sims": self.sims}


def against_noise(expected: float, runs: Iterable[Run], gains: SeedGains, tasks: Sequence[str], budget: int,
                  higher_is_better: Mapping[str, bool], *, seeds: int, sims: int = NULL_SIMS) -> NoiseTest | None:
    """The :class:`NoiseTest` of a headline ``expected`` (None without a noise estimate)."""
    sd = run_noise(runs, higher_is_better)
    shape = {g: {t: len(v) for t, v in row.items()} for g, row in gains.items()}
    if not sd or not shape:
        return None
    null = sorted(null_headlines(shape, tasks, budget, sd, seeds=seeds, sims=sims))
    p = (1 + sum(x >= expected - 1e-12 for x in null)) / (1 + len(null))
    return NoiseTest(p, null[min(len(null) - 1, int(0.95 * len(null)))], expected > 0 and p <= CREDIBLE_P, len(null))
