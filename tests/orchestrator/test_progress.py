"""The progress header: counts, and the best objective only where there is one."""

import time
from types import SimpleNamespace

from orchestrator.search.progress import Progress


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
