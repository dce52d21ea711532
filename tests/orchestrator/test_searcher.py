"""The searcher never trains one configuration twice while Optuna has others to offer."""

import optuna
from optuna.trial import TrialState

from orchestrator.search.searcher import MAX_REDRAWS, Searcher
from search_spaces import RunKey


def two_choices(ot):
    ot.suggest_categorical("tasks", ["a", "a+b"])


def searcher():
    """Optuna's first three proposals are the same configuration (queued), then its sampler's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return Searcher(space=two_choices, metric="objective", mode="max", sampler=optuna.samplers.TPESampler(seed=0),
                    points_to_evaluate=[{"tasks": "a"}] * 3)


def test_a_repeat_of_a_finished_trial_is_told_its_value_and_drawn_again():
    s = searcher()
    first = s.suggest("t1")["tasks"]
    s.on_trial_complete("t1", {"objective": 0.7})
    second = s.suggest("t2")["tasks"]
    assert first == "a" and second == "a+b" and s.redraws >= 2  # the two queued repeats at least
    s.on_trial_complete("t2", {"objective": 0.5})
    before = s.redraws  # the second draw may have repeated the first once or more
    # both tried: every draw repeats one and is told its value; after MAX_REDRAWS the repeat is trained
    third = s.suggest("t3")["tasks"]
    assert third in ("a", "a+b") and s.redraws - before == MAX_REDRAWS
    told = [t for t in s._ot_study.get_trials(deepcopy=False) if "mtlo.repeat_of" in t.user_attrs]
    assert len(told) == s.redraws
    value = {first: 0.7, second: 0.5}
    assert all(t.state == TrialState.COMPLETE and t.values == [value[t.params["tasks"]]] for t in told)


def test_a_repeat_of_a_running_trial_is_dropped_and_drawn_again():
    s = searcher()
    first = s.suggest("t1")["tasks"]
    second = s.suggest("t2")["tasks"]  # t1 still training
    assert first == "a" and second == "a+b" and s.redraws >= 2
    dropped = [t for t in s._ot_study.get_trials(deepcopy=False) if "mtlo.repeat_of" in t.user_attrs]
    assert all(t.state == TrialState.FAIL and t.params["tasks"] == first for t in dropped)
    assert len(dropped) == s.redraws


def test_a_repeat_in_a_multi_objective_search_is_told_every_objective():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = Searcher(space=two_choices, metric=["obj/a", "obj/b"], mode=["max", "max"],
                 sampler=optuna.samplers.NSGAIISampler(seed=0), points_to_evaluate=[{"tasks": "a"}] * 2)
    assert s.suggest("t1")["tasks"] == "a"
    s.on_trial_complete("t1", {"obj/a": 0.7, "obj/b": 0.2})
    assert s.suggest("t2")["tasks"] == "a+b"
    told = [t for t in s._ot_study.get_trials(deepcopy=False) if "mtlo.repeat_of" in t.user_attrs]
    assert told and all(t.values == [0.7, 0.2] and t.user_attrs["mtlo.repeat_of"] == 0 for t in told)


def subset_and_sharing(ot):
    ot.suggest_categorical("tasks", ["a", "a+b"])
    ot.suggest_categorical("sharing", ["hard", "soft"])


def test_parameters_that_train_alike_are_a_repeat():
    """One task under hard and under soft sharing is one run: the second is told the first's value."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = {"encoder": {"model": "m"}, "tasks": {"a": {"source": "x"}, "b": {"source": "y"}},
           "train": {"sharing": "hard", "soft_l2": 1e-3, "task_weights": {}}}
    s = Searcher(space=subset_and_sharing, metric="objective", mode="max", key=RunKey(run),
                 sampler=optuna.samplers.TPESampler(seed=0),
                 points_to_evaluate=[{"tasks": "a", "sharing": "hard"}, {"tasks": "a", "sharing": "soft"}])
    assert s.suggest("t1") == {"tasks": "a", "sharing": "hard"}
    s.on_trial_complete("t1", {"objective": 0.7})
    assert s.suggest("t2")["tasks"] == "a+b"
    told = [t for t in s._ot_study.get_trials(deepcopy=False) if "mtlo.repeat_of" in t.user_attrs]
    assert {"tasks": "a", "sharing": "soft"} in [t.params for t in told]
    assert all(t.params["tasks"] == "a" and t.values == [0.7] for t in told)
    # without the key the two sharing modes are two configurations
    plain = Searcher(space=subset_and_sharing, metric="objective", mode="max",
                     sampler=optuna.samplers.TPESampler(seed=0),
                     points_to_evaluate=[{"tasks": "a", "sharing": "hard"}, {"tasks": "a", "sharing": "soft"}])
    plain.suggest("t1")
    plain.on_trial_complete("t1", {"objective": 0.7})
    assert plain.suggest("t2") == {"tasks": "a", "sharing": "soft"} and plain.redraws == 0
