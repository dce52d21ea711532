"""Search objectives and the best-trial / Pareto-front choice, against hand-computed values."""

import pytest

from orchestrator.errors import ConfigError
from orchestrator.search.objectives import OBJECTIVES, best_trial, make_objective, objective_class

MAIN = {"rt": "accuracy", "vader": "mse", "ner": "f1"}
HIB = {"rt": True, "vader": False, "ner": True}
ROW = {"val/rt/accuracy": 0.8, "val/vader/mse": 2.0, "val/ner/f1": 0.3}


def obj(kind, **kw):
    return make_objective(kind, ("rt", "vader", "ner"), MAIN, HIB, **kw)


def test_mean_score_signs_lower_is_better_metrics():
    assert obj("mean_score").compute(ROW, ["rt", "vader", "ner"]) == {"objective": pytest.approx((0.8 - 2.0 + 0.3) / 3)}
    assert obj("mean_score").compute(ROW, ["rt"]) == {"objective": pytest.approx(0.8)}  # only the trial's tasks


def test_mean_delta_is_relative_gain_against_baselines():
    o = obj("mean_delta", baselines={"rt": 0.75, "vader": 2.5, "ner": 0.25})
    # rt: (0.8-0.75)/0.75 = 0.0667; vader (lower is better): -(2.0-2.5)/2.5 = 0.2; ner: (0.3-0.25)/0.25 = 0.2
    assert o.compute(ROW, ["rt", "vader", "ner"])["objective"] == pytest.approx((0.05 / 0.75 + 0.2 + 0.2) / 3)
    assert o.compute(ROW, ["vader"])["objective"] == pytest.approx(0.2)
    # ner learned nothing alone (F1 0): its gain is undefined and counts 0, not 0.3 / 1e-12
    zero = obj("mean_delta", baselines={"rt": 0.75, "vader": 2.5, "ner": 0.0})
    assert zero.compute(ROW, ["rt", "vader", "ner"])["objective"] == pytest.approx((0.05 / 0.75 + 0.2 + 0) / 3)


def test_target_and_pareto():
    assert obj("target", target="vader").compute(ROW, ["rt", "vader"]) == {"objective": -2.0}
    o = obj("pareto")
    assert o.metric_names == ["obj/rt", "obj/vader", "obj/ner"]
    assert o.compute(ROW, ["rt", "vader", "ner"]) == {"obj/rt": 0.8, "obj/vader": -2.0, "obj/ner": 0.3}


def test_best_is_highest_objective_and_skips_failed_trials():
    trials = [{"trial_id": "a", "status": "FINISHED", "objective": 0.5},
              {"trial_id": "b", "status": "FAILED", "objective": 0.9},
              {"trial_id": "c", "status": "STOPPED", "objective": 0.6}]
    assert best_trial(trials, multi=False)["trial_id"] == "c"
    assert best_trial([trials[1]], multi=False) is None


def test_pareto_front_keeps_exactly_the_non_dominated_trials():
    def t(tid, a, b):
        return {"trial_id": tid, "status": "FINISHED", "objective": {"obj/x": a, "obj/y": b}}

    trials = [t("p", 0.9, 0.1), t("q", 0.5, 0.5), t("r", 0.1, 0.9), t("d", 0.4, 0.4), t("e", 0.9, 0.05)]
    front = best_trial(trials, multi=True)["pareto_front"]
    assert sorted(x["trial_id"] for x in front) == ["p", "q", "r"]  # d < q on both; e < p on y


def test_an_unknown_objective_names_the_valid_ones():
    from trainables.errors import InputError

    valid = "mean_delta, mean_score, target, pareto"
    with pytest.raises(InputError, match=rf"^search.objective: unknown 'best' \(valid: {valid}\)$"):
        obj("best")
    with pytest.raises(ConfigError, match="^search.target is required with search.objective: target$"):
        objective_class("target", None)
    assert [o.multi for o in OBJECTIVES.values()] == [False, False, False, True]
    assert [o.needs_baselines for o in OBJECTIVES.values()] == [True, False, False, False]
