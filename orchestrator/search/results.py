"""A search's results, read back from MLflow alone (also while it runs or after it was
interrupted): every trial, and the best one or the Pareto front."""

from __future__ import annotations

from typing import Any

from orchestrator.search.objectives import OBJECTIVES, best_trial
from orchestrator.search.study import dashboard_command
from orchestrator.store.runs import read_main_metric, search_trials


def search_results(client: Any, parent: Any) -> dict[str, Any]:
    trials = search_trials(client, parent)
    kind = parent.data.tags.get("mtlo.objective")
    tags, metrics = parent.data.tags, parent.data.metrics
    res: dict[str, Any] = {"name": parent.info.run_name, "parent_run_id": parent.info.run_id,
                           "objective": kind, "status": parent.info.status, "trials": trials,
                           "model": tags.get("mtlo.model_uri"),
                           "importance": {k.removeprefix("importance/"): v for k, v in metrics.items()
                                          if k.startswith("importance/")},
                           "dashboard": dashboard_command(tags["mtlo.optuna_storage"])
                           if "mtlo.optuna_storage" in tags else None,
                           "main_metric": read_main_metric(tags)}
    multi = kind in OBJECTIVES and OBJECTIVES[kind].multi
    best = best_trial(trials, multi)
    if multi:
        res["pareto_front"] = best["pareto_front"] if best else []
    else:
        res["best"] = best
    return res
