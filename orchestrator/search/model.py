"""The end of a search: the best trial's model, logged and registered in MLflow.

The trial kept its best epoch's weights (``model.pt`` in its last checkpoint, in Ray's
storage: a local folder or the cluster's shared storage; orchestrator/runtime/checkpoints.py
keeps them for the top ``model.keep`` trials). The driver rebuilds the trial's model from its
config, loads those weights, and logs it on the trial's MLflow run as an MLflow model,
registered under ``model.register`` (default: the config's name). A trial that the scheduler
stopped early never scored its weights on test: the driver does, once, and logs the scores
on its run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.runtime.trial import MODEL_FILE, TrialContext, trial_run
from orchestrator.store import tracking
from orchestrator.store.models import log_model, score_tags


def model_trial(trials: list[dict[str, Any]], best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trial whose model a search logs: its best trial; on a Pareto front, the member with
    the best mean signed main metric (the score the trials' own epochs were ranked by)."""
    if best is None:
        return None
    if "pareto_front" not in best:
        return best
    front = [t for t in best["pareto_front"] if t.get("score") is not None]
    return max(front, key=lambda t: t["score"]) if front else None


def log_best_model(cfg: Config, ctx: TrialContext, grid: Any, trial: dict[str, Any], client: Any,
                   parent_id: str, main_metric: dict[str, str]) -> dict[str, Any] | None:
    """Log and register ``trial``'s kept weights; None (and one line saying why) when they are gone."""
    import torch

    from trainables import build, evaluate

    result = next((r for r in grid if (r.metrics or {}).get("trial_id") == trial["trial_id"]), None)
    checkpoint = result.checkpoint if result is not None else None
    weights = None
    if checkpoint is not None:
        try:
            with checkpoint.as_directory() as folder:
                if (Path(folder) / MODEL_FILE).is_file():
                    weights = torch.load(Path(folder) / MODEL_FILE, weights_only=True, map_location="cpu")
        except (OSError, FileNotFoundError):
            weights = None
    if weights is None:
        err_console.print(f"[yellow]the weights of the best trial {trial['trial_id']} are not in Ray's storage "
                          "(removed by hand?): no model logged[/yellow]")
        return None
    assert result is not None
    exp = build(trial_run(ctx, result.config))
    exp.model.load_state_dict(weights)
    test = trial.get("test") or {}
    if not test:  # stopped early by the scheduler: its weights were never scored on test
        test = evaluate(exp, split="test")
        tracking.log_metrics(client, trial["run_id"], {f"test/{t}/{m}": v for t, ms in test.items()
                                                       for m, v in ms.items()})
        trial["test"] = test
    name = cfg.registered_model
    tags = {"mtlo.config_name": cfg.name, "mtlo.command": "search", "mtlo.search_run_id": parent_id,
            "mtlo.trial_id": trial["trial_id"], "mtlo.run_id": trial["run_id"] or "",
            "mtlo.best_epoch": str(trial.get("best_epoch", "")),
            **score_tags(trial["metrics"], test, {t: main_metric[t] for t in trial["metrics"] if t in main_metric})}
    model = log_model(cfg.mlflow.tracking_uri, trial["run_id"], exp, register=name, tags=tags,
                      info={"command": "search", "search": cfg.name, "trial_id": trial["trial_id"],
                            "params": trial["params"], "val": trial["metrics"], "test": test})
    client.set_tag(parent_id, "mtlo.model_uri", model["registered_uri"] or model["run_uri"])
    return model
