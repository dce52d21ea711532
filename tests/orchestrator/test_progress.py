"""The progress header: counts, and the best objective only where there is one."""

import time
from types import SimpleNamespace

from orchestrator.runtime.progress import Progress


def test_header_names_the_best_objective_only_for_a_single_objective():
    p = Progress(4, "trial", "objective", live=False)
    p.rows = {"a": {"status": "RUNNING"}, "b": {"status": "FINISHED"}, "c": {"status": "STOPPED"}}
    assert p.header().endswith("trials: 1 running, 1 done, 1 stopped early, 0 failed of 4 | best -")
    p.best = (0.5, "b")
    assert p.header().endswith("of 4 | best objective 0.5000 (b)")
    # a transfer study's runs or a pareto search: no single objective to rank by
    grid = Progress(12, "trial", None, live=False)
    grid.rows = {"a": {"status": "DIVERGED"}}
    assert grid.header().endswith("trials: 0 running, 0 done, 0 stopped early, 0 failed, 1 diverged of 12")


def test_a_resumed_search_counts_the_trials_it_had_ended():
    """Ray restores the callback as saved when the search began and says nothing of the trials
    that ended before the driver stopped: the first trial started after a resume counts them."""
    def trial(tid, status, result=None):
        return SimpleNamespace(trial_id=tid, status=status, last_result=result or {}, config={"__mtlo_fixed": {}})

    p = Progress(6, "trial", None, epochs=3, live=False)
    p.start -= 3600  # as restored: the time the search began
    p.setup()
    assert time.time() - p.start < 60  # elapsed: in this session, not since the search began
    ended = [trial("a", "TERMINATED", {"epoch": 3}), trial("b", "TERMINATED", {"epoch": 2}),
             trial("c", "ERROR", {"epoch": 1}), trial("d", "TERMINATED", {"epoch": 1, "diverged": 1}),
             trial("e", "PENDING")]
    p.on_trial_start(0, ended + [trial("f", "RUNNING")], trial("f", "RUNNING"))
    assert p.header().endswith("trials: 1 running, 1 done, 1 stopped early, 1 failed, 1 diverged of 6")


def test_a_restored_search_keeps_its_best_and_a_trial_going_on_from_its_checkpoint():
    """After a restore, the best objective of the trials that had ended is still the best, and
    a trial that goes on from its epoch-3 checkpoint and ends at once has finished, not stopped."""
    def trial(tid, status, result):
        return SimpleNamespace(trial_id=tid, status=status, last_result=result, config={})

    p = Progress(3, "trial", "objective", epochs=3, live=False)
    p.setup()
    going_on = trial("b", "RUNNING", {"epoch": 3, "objective": 0.4})
    p.on_trial_start(0, [trial("a", "TERMINATED", {"epoch": 3, "objective": 0.7}), going_on], going_on)
    assert p.header().endswith("trials: 1 running, 1 done, 0 stopped early, 0 failed of 3 | best objective 0.7000 (a)")
    p.on_trial_complete(0, [], going_on)
    assert p.header().endswith("trials: 0 running, 2 done, 0 stopped early, 0 failed of 3 | best objective 0.7000 (a)")
