"""The affinity method's estimates (orchestrator/transfer/predict.py) on hand-computed
cases: step shares per schedule, the dilution read off a learning curve, the measured
residual and where the affinity says it came from, and the case that made TAG's own score
fail on the five built-in tasks (a slow task with positive affinity from every other task,
which still loses when it gets fewer of its own steps)."""

import pytest

from orchestrator.transfer.analysis import Run
from orchestrator.transfer.predict import Estimator, best_within, step_shares
from orchestrator.transfer.results import analyse
from orchestrator.transfer.study import Study


def test_step_shares_follow_the_schedule():
    batches = {"a": 30, "b": 10}
    assert step_shares("round_robin", batches, ["a", "b"]) == {"a": 0.5, "b": 0.5}
    assert step_shares("joint", batches, ["a", "b"]) == {"a": 1.0, "b": 1.0}
    assert step_shares("proportional", batches, ["a", "b"]) == pytest.approx({"a": 0.75, "b": 0.25})
    # p ~ n^(1/T), T = 2: sqrt(30) / (sqrt(30) + sqrt(10))
    p_a = step_shares("temperature", batches, ["a", "b"], 2.0)["a"]
    assert p_a == pytest.approx(30 ** 0.5 / (30 ** 0.5 + 10 ** 0.5))


def test_best_within_reads_the_best_score_so_far():
    curve = [(10, 0.5), (20, 0.7), (30, 0.6)]
    assert best_within(curve, 25, True) == 0.7
    assert best_within(curve, 40, True) == 0.7
    assert best_within(curve, 15, True) == 0.5
    assert best_within(curve, 5, True) == 0.5  # not evaluated yet: its first evaluation
    assert best_within([(10, 2.0), (20, 1.0), (30, 1.5)], 30, False) == 1.0  # lower is better
    assert best_within([], 10, True) is None


def three_tasks(**kw):
    return Estimator(["a", "b", "c"], {t: True for t in "abc"}, {"a": 0.8, "b": 0.5, "c": 0.9},
                     {"a": [[(10, 0.4), (20, 0.6), (40, 0.8)]], "b": [[(10, 0.5), (40, 0.5)]], "c": [[(10, 0.9)]]},
                     {"a": {"a": 0.02, "b": 0.0, "c": -0.02}, "b": {"a": 0.01, "b": 0.04, "c": 0.005},
                      "c": {"a": -0.005, "b": 0.0, "c": 0.01}}, cap=90, **kw)


def test_dilution_residual_and_presence_by_hand():
    """The dilution read off the curves, and where a measured transfer is placed by the
    affinity, by hand (residuals set as ``fit`` would with λ = 0)."""
    est = three_tasks()
    # round robin: a trains 30 of the 90 steps in the trio (it had reached 0.6 by then, 0.8 at best)
    assert est.dilution("a", ["a", "b", "c"]) == pytest.approx((0.6 - 0.8) / 0.8)
    assert est.dilution("a", ["a", "b"]) == 0.0  # 45 steps: its best
    assert est.dilution("b", ["a", "b", "c"]) == 0.0  # b had its best score after 10 steps
    # R[j -> t] = Z[j -> t] over the largest |Z[. -> t]|
    assert est.ratio("b", "a") == pytest.approx(0.5) and est.ratio("c", "a") == pytest.approx(-0.25)
    assert est.ratio("a", "c") == pytest.approx(-1.0)  # yardstick of c: |Z[a -> c]| = 0.02 > Z[c -> c]
    est.residual = {"a": -0.05 + 0.25, "b": -0.01, "c": -0.1}  # measured in the trio, minus own-steps dilution
    # a gained 0.2 beyond its dilution; its best helper is b: with b the gain is there, without it not
    assert est.helper("a") == "b"
    assert est("a", ["a", "b"]) == pytest.approx(0.0 + 0.2)
    assert est("a", ["a", "c"]) == pytest.approx(0.0)
    # c lost 0.1; the most harmful task for c is a: with a the loss is there, without it not
    assert est.helper("c") == "a"
    assert est("c", ["a", "c"]) == pytest.approx(-0.1) and est("c", ["b", "c"]) == pytest.approx(0.0)
    # b lost 0.01 but no task harms b by the affinity: the loss goes with the share of the others present
    assert est.helper("b") is None
    assert est("b", ["a", "b"]) == pytest.approx(-0.005)
    assert est("a", ["a"]) == 0.0
    # a joint schedule trains every task at every step: no dilution
    assert three_tasks(schedule="joint").dilution("a", ["a", "b", "c"]) == 0.0


def test_effective_steps_count_a_fitted_part_of_the_others_steps():
    """a reaches its best 0.8 at 40 of the 90 steps; in the trio it trains 30 (dilution -25%)
    but measured only -5%: the smallest λ with 1/3 + λ·2/3 of the cap >= 40 steps is 0.17
    (0.16 gives 39.6 steps). Its loss is then all dilution-free transfer (residual -5%);
    c and b have nothing to lose from fewer steps: λ = 0."""
    est = three_tasks().fit({"a": -0.05, "b": -0.01, "c": -0.1})
    assert est.carry == pytest.approx({"a": 0.17, "b": 0.0, "c": 0.0})
    assert est.dilution("a", ["a", "b", "c"]) == 0.0
    assert est.residual["a"] == pytest.approx(-0.05)
    assert est("a", ["a", "c"]) == pytest.approx(-0.05)  # c is a's most harmful task by the affinity
    assert est("a", ["a", "b"]) == pytest.approx(0.0)
    # a cap too small for a's best at any λ: λ = 1, the remaining loss is fitted as transfer
    short = three_tasks()
    short.cap = 30
    short.fit({"a": -0.05})
    assert short.carry["a"] == 1.0 and short.dilution("a", ["a", "b"]) == pytest.approx(-0.25)
    assert short.residual["a"] == pytest.approx(0.2)


def test_missing_pieces_are_not_guessed():
    est = three_tasks().fit({})  # the all-tasks group not measured (yet): dilution only
    assert est("a", ["a", "b", "c"]) == pytest.approx(-0.25) and est("a", ["a", "b"]) == 0.0
    no_curves = Estimator(["a", "b"], {"a": True, "b": True}, {"a": 0.8, "b": 0.5}, {},
                          {"a": {"b": 0.01}, "b": {"a": 0.02}}, cap=40).fit({"a": 0.1})
    assert no_curves.dilution("a", ["a", "b"]) == 0.0  # no learning curves: dilution not estimated
    assert no_curves("a", ["a", "b"]) == pytest.approx(0.1)
    assert no_curves("c", ["a", "c"]) is None  # no affinity onto c, no baseline: no estimate


def test_a_slow_task_is_split_off_although_every_affinity_onto_it_is_positive():
    """a and b learn in a few steps and help each other; c needs all its steps. In the
    all-tasks run (a third of the steps each) c lost 30%. TAG's score (mean affinity onto
    each task) would put c with the others; the estimate keeps it alone."""
    cap = 90
    fast = [(10, 0.70), (20, 0.80), (30, 0.80), (60, 0.80), (90, 0.80)]
    slow = [(10, 0.10), (20, 0.20), (30, 0.30), (60, 0.40), (90, 0.50)]
    runs = []
    for seed in range(3):
        runs += [Run(("a",), seed, {"a": 0.80 + (seed - 1) / 100}, curve=tuple(fast)),
                 Run(("b",), seed, {"b": 0.80 - (seed - 1) / 100}, curve=tuple(fast)),
                 Run(("c",), seed, {"c": 0.50 + (seed - 1) / 100}, curve=tuple(slow)),
                 Run(("a", "b", "c"), seed,
                     {"a": 0.84 + (seed - 1) / 100, "b": 0.84 - (seed - 1) / 100, "c": 0.35 - (seed - 1) / 100})]
    z = {"a": {"a": 0.02, "b": 0.02, "c": 0.002}, "b": {"a": 0.02, "b": 0.02, "c": 0.002},
         "c": {"a": 0.001, "b": 0.001, "c": 0.01}}
    study = Study("s", "p", ["a", "b", "c"], {t: "acc" for t in "abc"}, {t: True for t in "abc"}, "affinity",
                  [0, 1, 2], 2, max_steps=cap)
    # c needs 60 of the 90 steps to reach 0.40 (-20%, no worse than the -30% it measured in the
    # trio), so half of the others' steps count as its own (λ = 0.5): dilution -20% in the trio,
    # residual -10% (no task harms c by the affinity: it scales with the share of the others
    # present); in a pair c reads its curve at 0.75 of the cap (0.40, -20%)
    eff = analyse(study, runs, z)
    fit = eff["estimator"]
    assert fit["carry"] == pytest.approx({"a": 0.0, "b": 0.0, "c": 0.5})
    assert fit["dilution"]["c"] == pytest.approx((0.40 - 0.50) / 0.50)
    assert fit["residual"]["c"] == pytest.approx(-0.10)
    assert fit["dilution"]["a"] == 0.0 and fit["residual"]["a"] == pytest.approx(0.05) and fit["helper"]["a"] == "b"
    estimated = {(e["task"], tuple(e["group"])): e["delta"] for e in eff["estimated_gains"]}
    assert estimated[("c", ("a", "c"))] == pytest.approx(-0.20 - 0.10 / 2)
    assert estimated[("a", ("a", "b"))] == pytest.approx(0.05)  # no dilution for a fast task, b present
    # the recommendation stays on measured gains until the proposed groups are trained
    assert eff["grouping"]["groups"] == [["a", "b", "c"], ["c"]] and not eff["grouping"]["confirmed"]
    assert eff["proposed"]["groups"] == [["a", "b"], ["c"]]


def test_a_task_that_learned_nothing_alone_rides_along_and_the_grouping_is_confirmed():
    """c scored 0 alone at every seed (span F1 of a task too hard for the encoder): its
    relative gains are undefined, so it has none, no estimate, and counts 0 wherever placed;
    a proposed group holding it is confirmed once trained (before: c's 0.2 in the trio read
    as a gain of 2e11 and decided the grouping)."""
    fast = [(10, 0.70), (20, 0.80), (30, 0.80), (60, 0.80), (90, 0.80)]
    runs = []
    for seed in range(3):
        runs += [Run(("a",), seed, {"a": 0.80 + (seed - 1) / 100}, curve=tuple(fast)),
                 Run(("b",), seed, {"b": 0.80 - (seed - 1) / 100}, curve=tuple(fast)),
                 Run(("c",), seed, {"c": 0.0}, curve=((10, 0.0), (90, 0.0))),
                 Run(("a", "b", "c"), seed, {"a": 0.84, "b": 0.76, "c": 0.2})]
    z = {i: {j: 0.01 for j in "abc"} for i in "abc"}
    study = Study("s", "p", ["a", "b", "c"], {t: "f1" for t in "abc"}, {t: True for t in "abc"}, "affinity",
                  [0, 1, 2], 2, max_steps=90)
    res = analyse(study, runs, z)
    assert res["zero_baselines"] == ["c"] and "c" not in res["noisy_baselines"]
    assert {g["task"] for g in res["gains"]} == {"a", "b"}
    assert all(e["task"] != "c" for e in res["estimated_gains"])
    assert all(e["task"] != "c" for e in res["estimator"]["proposed"])
    assert res["estimator"]["dilution"]["c"] is None
    # a gains 5% in the trio, b loses 5%: {a, c} was never trained, so the estimate proposes it
    # from a's transfer (+5%) and b alone; c counts 0 there
    assert res["proposed"]["groups"] == [["a", "c"], ["b"]] and res["proposed"]["score"] == pytest.approx(0.05)
    assert not res["grouping"]["confirmed"]
    # trained, {a, c} measures a +3.75%: the trio's measured +5% for a wins, and the
    # proposal, made again on that measurement, is the trio (c in it, with no gain) + b alone
    trained = runs + [Run(("a", "c"), s, {"a": 0.83, "c": 0.1}) for s in range(3)]
    again = analyse(study, trained, z)
    assert again["proposed"]["groups"] == again["grouping"]["groups"] == [["a", "b", "c"], ["b"]]
    assert again["grouping"]["confirmed"] and again["grouping"]["score"] == pytest.approx(0.05)
    # per seed: a (0.84 - 0.79, 0.84 - 0.80, 0.84 - 0.81) / 0.80, b alone 0, c 0
    assert again["grouping"]["ci"][0] < 0.05 < again["grouping"]["ci"][1] < 0.2
