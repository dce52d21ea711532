"""A search's results, read back from MLflow alone (also while it runs or after it was
interrupted): every trial, and the best one or the Pareto front."""

from __future__ import annotations

from typing import Any

from orchestrator.search.objectives import OBJECTIVES, pareto_front
from orchestrator.store.runs import search_trials


def search_results(client: Any, parent: Any) -> dict[str, Any]:
    trials = search_trials(client, parent)
    kind = parent.data.tags.get("mtlo.objective")
    ok = [t for t in trials if t["objective"] is not None and t["status"] not in ("FAILED", "DIVERGED")]
    res: dict[str, Any] = {"name": parent.info.run_name, "parent_run_id": parent.info.run_id,
                           "objective": kind, "status": parent.info.status, "trials": trials}
    if kind in OBJECTIVES and OBJECTIVES[kind].multi:
        res["pareto_front"] = pareto_front(ok)
    else:
        res["best"] = max(ok, key=lambda t: t["objective"]) if ok else None
    return res
