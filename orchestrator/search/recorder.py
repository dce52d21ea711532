"""What to record: one MLflow child run per Ray Tune trial, nested under the search's parent.

Runs the callback on the driver (one writer: no sqlite locking, and workers need no access
to the tracking store). Child runs carry the ``mlflow.parentRunId`` tag (the UI nests them)
and ``mtlo.trial_id``, which makes a resumed search continue the same child runs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ray.tune import Callback

from orchestrator.search.trial import TrialContext, trial_params, trial_run
from orchestrator.tracking import flatten, log_metrics, log_params, metric_row

_SKIP = {"epoch", "done", "training_iteration", "timestamp", "time_this_iter_s", "time_total_s", "pid",
         "time_since_restore", "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint"}


class MlflowTrials(Callback):
    def __init__(self, tracking_uri: str, *, experiment_id: str, parent_run_id: str, ctx: TrialContext,
                 role: str, base_tags: dict[str, str]) -> None:
        self.tracking_uri = tracking_uri
        self._client: Any = None
        self.experiment_id = experiment_id
        self.parent = parent_run_id
        self.ctx = ctx
        self.role = role
        self.base_tags = base_tags
        self.runs: dict[str, str] = self._existing()
        self.results: dict[str, dict[str, Any]] = {}  # last result per trial id
        self.status: dict[str, str] = {}
        self.best: dict[str, dict[str, Any]] = {}  # the result with the best objective per trial id
        self.nodes: dict[str, str] = {}  # the node each trial's mtlo.node_id tag names

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict[str, Any]:  # Ray saves callbacks with the experiment state
        return {**self.__dict__, "_client": None}

    def _existing(self) -> dict[str, str]:
        """Child runs already made for this parent (a resumed search reuses them)."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}'",
            max_results=10000)
        return {r.data.tags["mtlo.trial_id"]: r.info.run_id for r in found if "mtlo.trial_id" in r.data.tags}

    def run_id(self, trial: Any) -> str:
        tid = trial.trial_id
        if tid not in self.runs:  # a resumed search may have made it before this callback was saved
            self.runs.update(self._existing())
        if tid not in self.runs:
            params = trial_params(trial.config)
            run = trial_run(self.ctx, trial.config)
            tr = run["train"]
            tags = {**self.base_tags, "mlflow.parentRunId": self.parent, "mtlo.trial_id": tid,
                    "mtlo.role": self.role, "mtlo.tasks": ",".join(sorted(run["tasks"])),
                    "mtlo.num_tasks": str(len(run["tasks"])), "mtlo.sharing": tr["sharing"],
                    "mtlo.weighting": tr["weighting"], "mtlo.schedule": tr["schedule"],
                    "mtlo.seed": str(tr["seed"]), "mtlo.status": "RUNNING"}
            created = self.client.create_run(self.experiment_id, run_name=f"{self.role}-{tid}", tags=tags)
            rid = created.info.run_id
            flat = {f"param.{k}": v for k, v in params.items()}
            flat.update(flatten({"train": tr}))
            flat.update({f"task.{t}.source": s["source"] for t, s in run["tasks"].items()})
            log_params(self.client, rid, flat)
            self.runs[tid] = rid
        return self.runs[tid]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.run_id(trial)
        self.status[trial.trial_id] = "RUNNING"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        rid = self.run_id(trial)
        step = int(result.get("epoch") or result.get("training_iteration") or 0)
        row = metric_row({k: v for k, v in result.items() if k not in _SKIP and v is not None})
        log_metrics(self.client, rid, row, step=step)
        node = str(result.get("node_id") or "")
        if node and self.nodes.get(trial.trial_id) != node:  # once per trial (again if Ray moved it)
            self.client.set_tag(rid, "mtlo.node_id", node)
            self.nodes[trial.trial_id] = node
        self.results[trial.trial_id] = dict(result)
        best = self.best.get(trial.trial_id)
        if result.get("objective") is not None and (best is None or result["objective"] > best["objective"]):
            self.best[trial.trial_id] = dict(result)

    def _finish(self, trial: Any, status: str, error: str | None = None) -> None:
        rid = self.run_id(trial)
        self.status[trial.trial_id] = status
        last = self.results.get(trial.trial_id, {})
        with tempfile.TemporaryDirectory(prefix="mtlo-") as tmp:
            run = trial_run(self.ctx, trial.config)
            Path(tmp, "trial_config.yaml").write_text(yaml.safe_dump(run, sort_keys=False))
            final = {k: v for k, v in last.items() if k.startswith(("val/", "objective", "obj/"))}
            Path(tmp, "final_metrics.json").write_text(json.dumps(final, indent=2, sort_keys=True))
            self.client.log_artifacts(rid, tmp)
        best = self.best.get(trial.trial_id)
        if best is not None:  # the trial's metrics at its best epoch (by objective), and its cost
            row = {f"best/{k[4:]}": float(v) for k, v in best.items()
                   if k.startswith("val/") and isinstance(v, (int, float))}
            row.update({"best/objective": float(best["objective"]), "best_epoch": float(best.get("epoch") or 0),
                        "best_step": float(best.get("step") or 0),
                        "train_steps": float(last.get("step") or best.get("step") or 0)})
            log_metrics(self.client, rid, row)
        self.client.set_tag(rid, "mtlo.status", status)
        if error:
            self.client.set_tag(rid, "mtlo.error", error[:5000])
        self.client.set_terminated(rid, "FINISHED" if status in ("FINISHED", "STOPPED") else "FAILED")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = self.results.get(trial.trial_id, {})
        epochs = int(self.ctx.run["train"]["epochs"])
        # fewer epochs than configured: the scheduler (ASHA) or patience stopped it early
        self._finish(trial, "STOPPED" if int(last.get("epoch") or 0) < epochs else "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finish(trial, "FAILED", error=_trial_error(trial))


def _trial_error(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace").strip().splitlines()
        return text[-1] if text else "trial failed"
    return str(getattr(trial, "error_msg", None) or "trial failed")
