"""Seed noise, shrinkage and the headline (orchestrator/transfer/noise.py), against tables
computed by hand and simulated studies whose true gains are known."""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from orchestrator.domain import Run
from orchestrator.transfer import analysis as an
from orchestrator.transfer import noise as nz
from orchestrator.transfer.results import recommend
from orchestrator.transfer.study import Study


def _runs(table: dict[tuple[str, ...], dict[str, list[float]]]) -> list[Run]:
    """group -> task -> its score at seeds 0, 1, 2, ..."""
    out = []
    for g, by_task in table.items():
        for s in range(len(next(iter(by_task.values())))):
            out.append(Run(g, s, {t: v[s] for t, v in by_task.items()}))
    return out


def test_seed_gains_are_paired_by_seed_and_relative_to_the_mean_baseline():
    runs = _runs({("a",): {"a": [0.50, 0.60]}, ("b",): {"b": [2.0, 2.0]},
                  ("a", "b"): {"a": [0.55, 0.60], "b": [1.0, 3.0]}})
    sg = nz.seed_gains(runs, {"a": True, "b": False})  # b: lower is better
    assert sg[("a", "b")]["a"] == pytest.approx({0: 0.05 / 0.55, 1: 0.0})
    assert sg[("a", "b")]["b"] == pytest.approx({0: 0.5, 1: -0.5})  # sign flipped: a lower loss is a gain


def test_task_noise_pools_within_group_variance_and_estimates_the_spread_of_true_gains():
    sg = {("a", "b"): {"a": {0: 0.1, 1: 0.3, 2: 0.2}}, ("a", "c"): {"a": {0: -0.1, 1: 0.0, 2: 0.1}},
          ("a", "b", "c"): {"a": {0: 0.0, 1: 0.0}}}
    n = nz.task_noise(sg)["a"]
    ss = 0.02 + 0.02 + 0.0  # within-group sums of squares
    assert n.df == 2 + 2 + 1 and n.sigma == pytest.approx(math.sqrt(ss / 5))
    means, sizes = [0.2, 0.0, 0.0], [3, 3, 2]
    excess = statistics.fmean(m ** 2 - n.sigma ** 2 / k for m, k in zip(means, sizes))
    assert n.tau == pytest.approx(math.sqrt(max(0.0, excess))) and n.groups == 3


def test_shrinkage_follows_the_normal_posterior():
    noise = nz.TaskNoise("a", sigma=0.3, df=10, tau=0.1, groups=5)
    mean, var = nz.shrink(0.2, 9, noise)  # se² = 0.01 = τ²: halfway to 0
    assert mean == pytest.approx(0.1) and var == pytest.approx(0.005)
    assert nz.shrink(0.2, 9, nz.TaskNoise("a", 0.3, 10, 0.0, 5)) == (0.0, 0.0)  # no spread of true gains: all 0
    assert nz.shrink(0.2, 3, None) == (0.2, math.inf)  # no noise estimate: kept as measured, unknown variance


def test_headline_sums_shrunk_gains_and_its_interval_adds_the_checks_noise():
    sg = {("a", "b"): {"a": {0: 0.1, 1: 0.3, 2: 0.2}, "b": {0: 0.0, 1: 0.02, 2: 0.04}}}
    noise = {"a": nz.TaskNoise("a", 0.1, 20, 0.2, 4), "b": nz.TaskNoise("b", 0.02, 30, 0.01, 4)}
    h = nz.headline({"a": ["a", "b"], "b": ["a", "b"], "c": ["c"]}, sg, noise, check_seeds=4)
    (ma, va), (mb, vb) = nz.shrink(0.2, 3, noise["a"]), nz.shrink(0.02, 3, noise["b"])
    assert h is not None and h.expected == pytest.approx(ma + mb) and h.in_sample == pytest.approx(0.22)
    assert h.per_task == pytest.approx({"a": ma, "b": mb, "c": 0.0})
    half = 2.0859634 * math.sqrt(va + vb + 0.1 ** 2 / 4 + 0.02 ** 2 / 4)  # t(0.975, 20): the fewer df
    assert h.interval == pytest.approx((ma + mb - half, ma + mb + half), rel=1e-6)
    assert h.sd_check == pytest.approx(math.sqrt(0.1 ** 2 / 4 + 0.02 ** 2 / 4))


def _study(tasks: list[str], budget: int, seeds: int = 3) -> Study:
    return Study("s", "", tasks, {t: "m" for t in tasks}, {t: True for t in tasks}, "exhaustive",
                 list(range(seeds)), budget)


def _simulated(truth: dict[tuple[str, ...], dict[str, float]], sigma: dict[str, float], seeds: int,
               rng: np.random.Generator, tasks: list[str]) -> list[Run]:
    """Every subset of ``tasks`` at ``seeds`` seeds: a task scores 1 alone, 1 + its true gain
    (``truth``, default 0) in a group, plus seed noise of sd ``sigma``."""
    runs = []
    for k in range(1, len(tasks) + 1):
        for g in itertools.combinations(tasks, k):
            for s in range(seeds):
                runs.append(Run(g, s, {t: 1.0 + truth.get(g, {}).get(t, 0.0) + rng.normal(0, sigma[t]) for t in g}))
    return runs


def _recommend(study: Study, runs: list[Run], table: dict | None = None) -> an.Grouping:
    """``table``: the runs' gain table where the caller has it (Welch's tests are not run twice)."""
    table = table or an.gain_table(study.tasks, an.gains(runs, study.higher_is_better))
    sg = nz.seed_gains(runs, study.higher_is_better)
    return recommend(study, runs, table, sg, nz.task_noise(sg))


def test_with_no_true_gain_the_raw_choice_is_optimistic_and_the_study_advises_training_apart():
    """The winner's curse: on pure noise the best of many groupings scores well on the seeds
    that chose it. Shrinkage takes part of that back, not all (the spread of true gains is
    estimated from the same noise); the test against simulated studies without transfer
    catches the rest: the study advises training apart about 19 times in 20."""
    tasks = ["a", "b", "c", "d", "e"]
    rng = np.random.default_rng(7)
    raw, shrunk, apart = [], [], 0
    for _ in range(20):
        runs = _simulated({}, {t: 0.05 for t in tasks}, 3, rng, tasks)
        study = _study(tasks, budget=2)
        table = an.gain_table(tasks, an.gains(runs, study.higher_is_better))
        raw.append(an.best_grouping(tasks, table, 2).score)
        rec = _recommend(study, runs, table)
        shrunk.append((rec.within_budget or rec.as_dict())["expected"]["expected"])
        apart += rec.apart
    assert statistics.fmean(raw) > 0.15  # the raw choice looks like a gain of 15 points or more
    assert 0 < statistics.fmean(shrunk) < statistics.fmean(raw) * 0.6
    assert apart >= 17  # at most 3 false alarms in 20 (5% expected)


def test_a_real_consistent_gain_is_recommended_with_a_credible_headline():
    tasks = ["a", "b", "c", "d"]
    truth = {g: {t: 0.10 for t in g} for k in (2, 3, 4) for g in itertools.combinations(tasks, k)
             if set(g) <= {"a", "b"}}  # only a and b help each other, by 10% each
    runs = _simulated(truth, {t: 0.02 for t in tasks}, 3, np.random.default_rng(1), tasks)
    rec = _recommend(_study(tasks, budget=3), runs)
    assert not rec.apart and ["a", "b"] in rec.groups
    assert rec.expected is not None and rec.expected["credible"] and rec.expected["p_noise"] < 0.01
    lo, hi = rec.expected["interval"]
    # shrunk toward 0 (a and b gain in 1 of their 7 groups: a small spread of true gains), not by much
    assert lo < 0.2 < hi and 0.12 < rec.expected["expected"] < 0.2


def test_a_weak_task_with_a_large_noisy_gain_does_not_decide_the_grouping():
    """weak gains +30% in {weak, x} on average, at a seed noise of 60%; solid gains a steady
    +8% in {solid, x}. Raw, the noisy +30% wins; shrunk, the steady gain does."""
    tasks = ["solid", "weak", "x"]
    runs = _runs({("solid",): {"solid": [1.0, 1.0, 1.0]}, ("weak",): {"weak": [1.0, 1.0, 1.0]},
                  ("x",): {"x": [1.0, 1.0, 1.0]},
                  ("weak", "x"): {"weak": [2.4, 0.3, 1.2], "x": [1.0, 1.0, 1.0]},
                  ("solid", "x"): {"solid": [1.07, 1.08, 1.09], "x": [1.0, 1.0, 1.0]},
                  ("solid", "weak"): {"solid": [1.0, 1.0, 1.0], "weak": [0.4, 1.9, 0.7]},
                  ("solid", "weak", "x"): {"solid": [1.0, 1.0, 1.0], "weak": [1.5, 0.2, 1.3], "x": [1.0] * 3}})
    study = _study(tasks, budget=2)
    table = an.gain_table(tasks, an.gains(runs, study.higher_is_better))
    assert an.best_grouping(tasks, table, 2).assignment["weak"] == ["weak", "x"]  # raw: the noisy gain decides
    rec = _recommend(study, runs)
    chosen = (rec.within_budget or rec.as_dict())["assignment"]  # the choice within the budget
    assert chosen["solid"] == ["solid", "x"] and chosen["weak"] == ["weak"]


def test_power_matches_the_normal_approximation_and_seeds_needed_is_the_first_enough():
    noise = nz.TaskNoise("a", sigma=0.1, df=40, tau=0.0, groups=5)
    big = nz.detectable_gain(noise, 400)
    assert big == pytest.approx((1.959964 + 0.841621) * 0.1 / 20, rel=0.01)
    small = [nz.detectable_gain(noise, n) for n in (2, 3, 5, 10)]
    assert all(x > y for x, y in zip(small, small[1:]))  # more seeds, smaller detectable gains
    assert nz.detectable_gain(noise, 1) is None
    n = nz.seeds_needed(noise, 0.05)
    assert n is not None and nz.detectable_gain(noise, n) <= 0.05 < nz.detectable_gain(noise, n - 1)
    assert nz.seeds_needed(noise, 1e-6, most=50) is None
    table = nz.power_table({"a": noise}, 3)
    assert table["a"]["detectable"] == pytest.approx(nz.detectable_gain(noise, 3))
    assert table["a"]["seeds_for"] == {"0.05": n, "0.1": nz.seeds_needed(noise, 0.1)}
