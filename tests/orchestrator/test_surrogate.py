"""The surrogate method's parts on synthetic runs tables (no training): Optuna's proposals,
the per-task linear models recovering planted helpers and hurters, its cross-validated fit,
and the false-discovery-rate control of a study's many tests."""

import itertools
import random

import pytest

from orchestrator.errors import ConfigError
from orchestrator.transfer import analysis as an
from orchestrator.transfer import surrogate as sg

TASKS = ["a", "b", "c", "d", "e", "f"]
# planted: b helps a, c hurts a, e helps d, a hurts f; every group dilutes (size term)
PLANTED = {("a", "b"): 0.10, ("a", "c"): -0.12, ("d", "e"): 0.08, ("f", "a"): -0.10}
SIZE = -0.05


def planted_runs(subsets, seeds=3, noise=0.01, rng_seed=1):
    """Runs of every task alone and of ``subsets`` at ``seeds`` seeds: task t's score in S is
    its baseline times (1 + Σ planted θ[t][j] over j in S + SIZE · (1 − 1/|S|)), plus noise."""
    rng = random.Random(rng_seed)
    base = {t: 0.5 + 0.05 * i for i, t in enumerate(TASKS)}
    runs = []
    for s in range(seeds):
        runs += [an.Run((t,), s, {t: base[t] + rng.gauss(0, noise)}) for t in TASKS]
        for g in subsets:
            gain = {t: sum(PLANTED.get((t, j), 0.0) for j in g if j != t) + SIZE * (1 - 1 / len(g)) for t in g}
            runs.append(an.Run(g, s, {t: base[t] * (1 + gain[t]) + rng.gauss(0, noise) for t in g}))
    return runs


@pytest.mark.parametrize("noise", [0.005, 0.01, 0.02])
def test_the_surrogate_recovers_planted_helpers_and_hurters(noise):
    subsets = sg.propose_subsets(TASKS, 12, seed=0)
    fit = sg.fit(TASKS, planted_runs(subsets, noise=noise), {t: True for t in TASKS}).as_dict()
    found = {(t, j, "helps") for t, m in fit["tasks"].items() for j in m["helpers"]}
    found |= {(t, j, "hurts") for t, m in fit["tasks"].items() for j in m["hurters"]}
    assert found == {(t, j, "helps" if v > 0 else "hurts") for (t, j), v in PLANTED.items()}
    for (t, j), v in PLANTED.items():  # each planted coefficient inside its interval, near its value
        c = fit["tasks"][t]["coefficients"][j]
        assert c["ci"][0] <= v <= c["ci"][1] and c["coef"] == pytest.approx(v, abs=0.03), (t, j, c)
    # predictions of left-out subsets: better than the mean gain, and in the right order
    assert fit["cv"]["subsets"] == 12 and fit["cv"]["n"] == sum(len(g) for g in subsets)
    assert fit["cv"]["r2"] > 0.2 and fit["cv"]["spearman"] > 0.4, fit["cv"]


def test_predictions_follow_the_model_and_a_task_alone_gains_nothing():
    subsets = sg.propose_subsets(TASKS, 12, seed=0)
    s = sg.fit(TASKS, planted_runs(subsets, noise=0.0), {t: True for t in TASKS}, validate=False)
    assert s.predict("a", ("a",)) == 0.0
    # noise-free: an untrained group is predicted as planted
    untrained = [g for k in (2, 3, 4) for g in itertools.combinations(TASKS, k) if g not in subsets]
    for g in untrained[:10]:
        for t in g:
            want = sum(PLANTED.get((t, j), 0.0) for j in g if j != t) + SIZE * (1 - 1 / len(g))
            assert s.predict(t, g) == pytest.approx(want, abs=0.01), (t, g)
    # a lower-is-better task: a loss that grows is a negative gain
    runs = [an.Run(("x",), 0, {"x": 1.0}), an.Run(("y",), 0, {"y": 1.0}), an.Run(("x", "y"), 0, {"x": 1.2, "y": 1.0})]
    obs = sg.observations(runs, {"x": False, "y": True})
    assert obs["x"] == [(("x", "y"), 0, pytest.approx(-0.2))] and obs["y"] == [(("x", "y"), 0, 0.0)]


def test_optuna_proposes_distinct_subsets_in_which_every_pair_meets():
    for n, m in ((6, 12), (6, 8), (10, 20), (4, 5)):
        names = [f"t{i}" for i in range(n)]
        subs = sg.propose_subsets(names, m, seed=3)
        assert subs == sg.propose_subsets(names, m, seed=3)  # the same study resumes with the same sets
        assert len(subs) == len(set(subs)) == m and all(len(g) >= 2 and list(g) == sorted(g) for g in subs)
        assert all(any(i in g and j in g for g in subs) for i, j in itertools.combinations(names, 2))
        assert all(any(i in g and j not in g for g in subs) for i, j in itertools.permutations(names, 2))
    assert sg.propose_subsets(TASKS, 12, seed=0) != sg.propose_subsets(TASKS, 12, seed=1)
    every = sg.propose_subsets(["a", "b", "c"], 4)  # as many as exist: all of them
    assert sorted(every) == [("a", "b"), ("a", "b", "c"), ("a", "c"), ("b", "c")]
    assert sg.default_runs(6) == 12 and sg.default_runs(3) == 4


@pytest.mark.parametrize(("runs", "said"), [
    (0, "--runs: must be at least 1, got 0"),
    (58, "--runs: 6 tasks have 57 subsets of two or more tasks, asked for 58")])
def test_a_bad_number_of_subsets_is_refused(runs, said):
    with pytest.raises(ConfigError, match=said):
        sg.propose_subsets(TASKS, runs)


def test_many_tests_are_controlled_for_false_discoveries():
    """An exhaustive study of six unrelated tasks (every score seed noise): at a raw p < 0.05
    several of its 186 tests pass; Benjamini-Hochberg over all of them flags none, and
    each adjusted p is scipy's over the study's raw ones."""
    from scipy import stats

    rng = random.Random(7)
    subsets = [g for k in range(1, 7) for g in itertools.combinations(TASKS, k)]
    runs = [an.Run(g, s, {t: 0.6 + rng.gauss(0, 0.02) for t in g}) for g in subsets for s in range(3)]
    gains = an.gains(runs, {t: True for t in TASKS})
    assert len(gains) == 186
    raw = [g.p for g in gains]
    assert sum(p < 0.05 for p in raw) >= 3  # what an uncorrected test would flag
    assert not any(g.significant for g in gains) and an.negative_transfer(gains) == []
    assert [g.p_adjusted for g in gains] == pytest.approx(list(stats.false_discovery_control(raw)))
    assert all(g.p_adjusted >= g.p for g in gains)
    # a real loss survives the correction: f loses 30% next to a, at every seed
    hurt = [an.Run(g, s, {t: (0.42 if t == "f" and "a" in g else 0.6) + rng.gauss(0, 0.005) for t in g})
            for g in subsets for s in range(3)]
    flagged = {(g.task, g.group) for g in an.negative_transfer(an.gains(hurt, {t: True for t in TASKS}))}
    assert flagged == {("f", g) for g in subsets if "a" in g and "f" in g}
    row = an.gains(hurt, {t: True for t in TASKS})[0].as_dict()
    assert set(row) >= {"p", "p_adjusted", "significant"}
