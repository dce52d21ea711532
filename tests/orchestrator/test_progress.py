"""The progress header: counts, and the best objective only where there is one."""

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
