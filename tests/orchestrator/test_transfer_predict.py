"""The affinity method's estimates (orchestrator/transfer/predict.py) on hand-computed
cases: step shares per schedule, the dilution read off a learning curve, the fit of α, and
the case that made TAG's own score fail on the five built-in tasks (a slow task with positive
affinity from every other task, which still loses when it gets fewer of its own steps)."""

import pytest

from orchestrator.transfer.analysis import Run
from orchestrator.transfer.predict import Estimator, best_within, step_shares
from orchestrator.transfer.runner import Study, analyse


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


def two_tasks(**kw):
    return Estimator(["a", "b"], {"a": True, "b": True}, {"a": 0.8, "b": 0.5},
                     {"a": [[(10, 0.4), (20, 0.6), (40, 0.8)]], "b": [[(10, 0.5), (20, 0.5), (40, 0.5)]]},
                     {"a": {"a": 0.02, "b": 0.0}, "b": {"a": 0.01, "b": 0.04}}, cap=40, **kw)


def test_dilution_transfer_and_alpha_by_hand():
    est = two_tasks()
    # round robin in a pair: 20 of the 40 steps are a's own: a had reached 0.6 by then, 0.8 at best
    assert est.dilution("a", ["a", "b"]) == pytest.approx((0.6 - 0.8) / 0.8)
    assert est.dilution("b", ["a", "b"]) == 0.0  # b had its best score after 10 steps
    assert est.transfer("a", ["a", "b"]) == pytest.approx(0.01 / 0.02)  # a step on b is worth half a step on a
    assert est.transfer("b", ["a", "b"]) == 0.0
    # α: least squares through the origin of (measured − dilution) on transfer; only a has transfer
    est.fit({"a": -0.05, "b": -0.01})
    assert est.alpha == pytest.approx((-0.05 + 0.25) * 0.5 / 0.25)
    assert est("a", ["a", "b"]) == pytest.approx(-0.25 + 0.4 * 0.5)
    assert est("a", ["a"]) == 0.0
    # a joint schedule trains every task at every step: no dilution
    assert two_tasks(schedule="joint").dilution("a", ["a", "b"]) == 0.0


def test_alpha_is_never_negative_and_missing_pieces_are_not_guessed():
    est = two_tasks().fit({"a": -0.9})  # worse than dilution alone: the transfer term is not turned around
    assert est.alpha == 0.0
    assert two_tasks().fit({}).alpha == 0.0
    no_curves = Estimator(["a", "b"], {"a": True, "b": True}, {"a": 0.8, "b": 0.5}, {},
                          {"a": {"b": 0.01}, "b": {"a": 0.02}}, cap=40)
    assert no_curves.dilution("a", ["a", "b"]) == 0.0  # no learning curves: dilution not estimated
    assert no_curves.transfer("a", ["a", "b"]) == pytest.approx(1.0)  # no Z[a -> a]: the largest |Z[j -> a]|
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
    res = analyse(study, runs, z)
    assert res["proposed"]["groups"] == [["a", "b"], ["c"]]
    fit = res["estimator"]
    assert fit["dilution"]["c"] == pytest.approx((0.30 - 0.50) / 0.50)  # 30 of its own steps
    assert fit["dilution"]["a"] == 0.0 and fit["alpha"] > 0
    estimated = {(e["task"], tuple(e["group"])): e["delta"] for e in res["estimated_gains"]}
    # in a pair c trains 45 of the 90 steps: it had reached 0.30 after 30 (its next evaluation was at 60)
    assert estimated[("c", ("a", "c"))] == pytest.approx((0.30 - 0.50) / 0.50 + fit["alpha"] * 0.002 / 0.01)
    assert estimated[("a", ("a", "b"))] > 0  # the pair gains: no dilution for a fast task, positive transfer
