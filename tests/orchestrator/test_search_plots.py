"""A search report carries the figures users open first: the optimization history, the
parameter importance and the per-task trade-offs (and, for a two-objective search, the Pareto
front); each is drawn from the results alone, written beside report.md and linked from it."""

from PIL import Image

from orchestrator.report import write_report


def trial(i: int, objective, scores) -> dict:
    return {"trial_id": f"t{i}", "run_id": f"r{i}", "status": "FINISHED", "params": {"lr": 0.001 * (i + 1)},
            "tasks": sorted(scores), "objective": objective, "retries": 0, "error": None, "scores": scores,
            "test": {}, "best_epoch": 2, "started": 1000 + i}


def result(trials, **extra) -> dict:
    return {"name": "s", "parent_run_id": "p", "objective": "mean_score", "status": "FINISHED", "trials": trials,
            "model": None, "importance": {}, "dashboard": None, **extra}


def test_a_search_report_draws_history_importance_and_trade_offs(tmp_path):
    trials = [trial(i, v, {"rt": {"accuracy": a}, "vader": {"pearson": p}})
              for i, (v, a, p) in enumerate([(0.2, 0.6, -0.2), (0.35, 0.7, 0.0), (0.3, 0.55, 0.05)])]
    res = result(trials, importance={"lr": 0.7, "task_weight.rt": 0.3}, best=trials[1])
    md, _, paths = write_report(res, tmp_path)
    names = {p.name for p in paths}
    assert {"history.png", "importance.png", "tasks.png"} <= names and "pareto.png" not in names
    for name in ("history.png", "importance.png", "tasks.png"):
        assert f"![{name}]({name})" in md
        with Image.open(tmp_path / name) as img:  # a real picture, not an empty file
            assert img.size[0] > 300 and len(set(img.convert("L").getdata())) > 10


def test_figures_without_their_data_are_left_out(tmp_path):
    one = [trial(0, 0.2, {"rt": {"accuracy": 0.6}})]  # one trial, one task, no importance yet
    _, _, paths = write_report(result(one, best=one[0]), tmp_path)
    assert {p.name for p in paths} == {"report.md", "report.json"}


def test_a_two_objective_search_draws_its_pareto_front_not_a_history(tmp_path):
    trials = [trial(i, {"rt": a, "vader": p}, {"rt": {"accuracy": a}, "vader": {"pearson": p}})
              for i, (a, p) in enumerate([(0.6, 0.1), (0.7, 0.0), (0.5, 0.3)])]
    res = result(trials, objective="pareto", pareto_front=trials)
    _, _, paths = write_report(res, tmp_path)
    names = {p.name for p in paths}
    assert "pareto.png" in names and "history.png" not in names and "tasks.png" in names


def test_trade_offs_read_each_task_on_its_main_metric():
    from orchestrator.report.search_plots import _lower_is_better, _main

    assert _main({"mse", "pearson", "spearman"}) == "pearson" and _main({"accuracy", "macro_f1"}) == "accuracy"
    assert "mse" in _lower_is_better() and "accuracy" not in _lower_is_better()
