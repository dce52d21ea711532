"""Where and when to run: Ray Tune + Optuna for ``mtlo search``.

1. Check everything before Ray starts: the space, the objective, every task's data
   (tokenized once here; trials read the cache).
2. ``mean_delta`` needs single-task baselines: reused from earlier finished baseline runs
   of the same config and seed (found in MLflow), else trained first as a grid of trials.
3. The search: ``OptunaSearch`` (seeded, define-by-run from the space) proposes, ASHA stops
   weak trials early (not for ``pareto``: Optuna cannot prune multi-objective studies),
   ``MlflowTrials`` records every trial as a child run of the search's parent run.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.domain import ZERO_BASELINE
from orchestrator.errors import ConfigError
from orchestrator.redact import redact
from orchestrator.runtime.progress import Progress
from orchestrator.runtime.session import open_parent
from orchestrator.runtime.trial import trial_params
from orchestrator.runtime.tuner import run_grid, run_tuner, trial_context
from orchestrator.search import study
from orchestrator.search.model import log_best_model, model_trial
from orchestrator.search.objectives import Objective, best_trial, make_objective, objective_class
from orchestrator.store import tracking
from orchestrator.store.datasets import log_datasets, task_datasets
from orchestrator.store.recorder import MlflowTrials
from orchestrator.store.runs import child_runs, main_metric_tag, split_scores
from search_spaces import SearchSpace, load_space
from trainables import EncoderSpec, inspect_tasks
from trainables.encoder import preload_encoder

STATE_FILE = "mtlo_search.json"


@dataclass
class SearchOutcome:
    name: str
    parent_run_id: str
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    objective: Objective
    baselines: dict[str, float] = field(default_factory=dict)
    storage: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the driver's work
    model: dict[str, Any] | None = None  # the logged (and registered) model: its URIs and version
    importance: dict[str, float] = field(default_factory=dict)  # Optuna's parameter importance
    dashboard: str = ""  # the optuna-dashboard command that shows the study


class Clock:
    """Seconds spent in each phase of a search (its fixed cost, beside the trials' own time)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - self._last
        self._last = now


def check_space(cfg: Config, config_path: Path) -> SearchSpace:
    run = cfg.run_dict()
    kind = objective_class(cfg.search.objective, cfg.search.target)  # an unknown one: one line, before anything
    space = load_space(cfg.search.space, config_dir=config_path.resolve().parent, tasks=list(cfg.tasks),
                       base_train=run["train"], target=cfg.search.target if kind.uses_target else None)
    if kind.multi and space.subset is not None:
        raise ConfigError(f"{space.source}: tasks: a task-subset search cannot use search.objective: pareto "
                          "(one objective per task needs every task in every trial)")
    return space


def _baseline_key(cfg: Config, task: str) -> str:
    run = cfg.run_dict()
    blob = {"encoder": run["encoder"], "task": run["tasks"][task], "train": run["train"]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _reuse_baselines(client: Any, experiment_id: str, cfg: Config, tasks: list[str],
                     objective: Objective) -> dict[str, float]:
    """Baselines of finished single-task runs of the same config and seed, from MLflow."""
    found: dict[str, float] = {}
    for t in tasks:
        key = _baseline_key(cfg, t)
        runs = client.search_runs([experiment_id], filter_string=f"tags.`mtlo.baseline_key` = '{key}' "
                                  "and attributes.status = 'FINISHED'", max_results=1)
        metric = f"baseline/{t}/{objective.main_metric[t]}"
        if runs and metric in runs[0].data.metrics:
            found[t] = runs[0].data.metrics[metric]
    return found


def _best_epoch_value(history: list[dict[str, Any]], task: str, objective: Objective) -> float:
    key = f"val/{task}/{objective.main_metric[task]}"
    vals = [float(r[key]) for r in history if r.get(key) is not None]
    return max(vals) if objective.higher_is_better[task] else min(vals)


def run_search(cfg: Config, config_path: Path, *, num_samples: int | None = None, resume: bool = False,
               address: str | None = None, as_json: bool = False) -> SearchOutcome:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    clock = Clock()
    space = check_space(cfg, config_path)
    run = cfg.run_dict()
    info = inspect_tasks(run)  # bad data stops here, before Ray or MLflow
    tasks = list(cfg.tasks)
    objective = make_objective(cfg.search.objective, tuple(tasks), {t: i.main_metric for t, i in info.items()},
                               {t: i.higher_is_better for t, i in info.items()}, target=cfg.search.target)
    url = study.storage_url(cfg)
    ident = study.identity(space, objective)
    warm = study.check(cfg, url, resume=resume, ident=ident)
    tags = {**tracking.run_tags(cfg, command="search"), "mtlo.role": "search", "mtlo.objective": cfg.search.objective,
            "mtlo.space": space.source, "mtlo.optuna_storage": redact(url), "mtlo.optuna_study": cfg.name,
            **main_metric_tag(objective.main_metric)}
    clock.mark("checks")  # the config, the space, every task's data (tokenized once), the Optuna storage
    parent = open_parent(cfg, config_path, what="search", state_file=STATE_FILE, resume=resume, address=address,
                         store=tracking.MlflowParents(cfg, config_path, tags))
    client, experiment_id, parent_id, exp_dir = parent.client, parent.experiment_id, parent.run_id, parent.exp_dir
    datasets = task_datasets(info, {t: s.source for t, s in cfg.tasks.items()})
    if parent.new:
        params = tracking.run_params(cfg)
        params.update(tracking.flatten({"search": cfg.search.model_dump(mode="json"),
                                        "resources": cfg.resources.model_dump(mode="json")}))
        tracking.log_params(client, parent_id, params)
        log_datasets(client, parent_id, datasets, tasks)
        tracking.log_files(client, parent_id, {"config.yaml": tracking.as_yaml(cfg.model_dump(mode="json")),
                                                "space.yaml": Path(space.source).read_text()})

    base_tags = {"mtlo.config_name": cfg.name, "mtlo.command": "search", "mtlo.encoder": cfg.encoder.model}
    started = time.time()
    clock.mark("start")  # Ray, the MLflow parent run and its params and files

    baselines: dict[str, float] = {}
    if objective.needs_baselines:
        objective, baselines = _baselines(cfg, run, parent, objective, base_tags, datasets, resume=resume,
                                          as_json=as_json)
    clock.mark("baselines")
    ctx = trial_context(cfg, run, objective)
    multi = objective.multi
    optuna_storage = study.open_storage(url)
    searcher = _searcher(cfg, space, run, objective, optuna_storage, ident, warm)
    scheduler = FIFOScheduler() if multi or cfg.search.scheduler == "fifo" else \
        ASHAScheduler(metric="objective", mode="max", time_attr="training_iteration",
                      max_t=cfg.train.epochs, grace_period=1, reduction_factor=2)
    n = num_samples or cfg.search.num_samples
    recorder = MlflowTrials(cfg.mlflow.tracking_uri, experiment_id=experiment_id, parent_run_id=parent_id, ctx=ctx,
                            role="trial", base_tags=base_tags, datasets=datasets,
                            retry_every_s=cfg.mlflow.retry_every_s)
    progress = Progress(n, "trial", None if multi else "objective", epochs=cfg.train.epochs)
    if cfg.model.log:  # the best trial's model is rebuilt at the end: its code imports as the trials run
        preload_encoder(EncoderSpec(**run["encoder"]))
    grid = run_tuner(cfg, ctx, name="search", storage=exp_dir, recorder=recorder, progress=progress, resume=resume,
                     as_json=as_json, search_alg=searcher, scheduler=scheduler, num_samples=n,
                     keep=cfg.model.keep if cfg.model.log else 0, time_budget_s=cfg.search.time_budget)
    clock.mark("trials")  # Ray Tune: workers, trials, checkpoints
    # what MLflow's writer threads still had queued when the trials ended, and the gaps filled
    clock.phases["trials"] -= recorder.sync_seconds
    clock.phases["mlflow catch-up"] = recorder.sync_seconds
    with parent.ray_stopping():  # no more trials: Ray stops while the results are written
        trials, best, model = _finish(cfg, ctx, grid, client, experiment_id, parent_id, objective, clock)
        summary = {"name": cfg.name, "objective": objective.kind, "baselines": baselines, "trials": trials,
                   "best": best, "model": model, "seconds": time.time() - started}
        importance = _record(cfg, client, parent_id, summary, optuna_storage, multi=objective.multi)
    clock.mark("record")
    return SearchOutcome(cfg.name, parent_id, trials, best, objective, baselines, str(exp_dir), clock.phases, model,
                         importance, study.dashboard_command(url))


def _finish(cfg: Config, ctx: Any, grid: Any, client: Any, experiment_id: str, parent_id: str,
            objective: Objective, clock: Clock) -> tuple[list[dict[str, Any]], dict[str, Any] | None,
                                                         dict[str, Any] | None]:
    """The trials as MLflow has them, the best one, and its model logged and registered."""
    trials = _collect(grid, client, experiment_id, parent_id, objective)
    best = best_trial(trials, objective.multi)
    model = None
    chosen = model_trial(trials, best) if cfg.model.log else None
    if chosen is not None and chosen.get("run_id"):
        model = log_best_model(cfg, ctx, grid, chosen, client, parent_id, objective.main_metric)
    clock.mark("model")  # the best trial's weights: rebuilt, logged and registered in MLflow
    return trials, best, model


def _record(cfg: Config, client: Any, parent_id: str, summary: dict[str, Any], optuna_storage: Any, *,
            multi: bool) -> dict[str, float]:
    """The search's outcome on its parent run, which ends FINISHED; returns Optuna's parameter
    importance."""
    trials, best = summary["trials"], summary["best"]
    tracking.log_files(client, parent_id, {"summary.json": tracking.as_json(summary)})
    if best is not None and not multi:
        client.log_metric(parent_id, "best/objective", float(best["objective"]))
        client.set_tag(parent_id, "mtlo.best_trial", best["trial_id"])
        client.set_tag(parent_id, "mtlo.best_run_id", best.get("run_id") or "")
    importance = study.importance(optuna_storage, cfg.name)
    tracking.log_metrics(client, parent_id, {f"importance/{k}": v for k, v in importance.items()})
    counts = {s: sum(1 for t in trials if t["status"] == s) for s in ("FINISHED", "STOPPED", "FAILED", "DIVERGED")}
    tracking.log_metrics(client, parent_id, {f"trials_{k.lower()}": v for k, v in counts.items()})
    client.set_terminated(parent_id, "FINISHED")
    return importance


def _baselines(cfg: Config, run: dict[str, Any], parent: Any, objective: Objective, base_tags: dict[str, str],
               datasets: dict[str, Any], *, resume: bool, as_json: bool) -> tuple[Objective, dict[str, float]]:
    """``mean_delta``'s single-task baselines: reused from earlier searches of the same store where
    they match, the missing ones trained first (child runs with ``mtlo.role`` = baseline); the
    objective that measures against them."""
    client, experiment_id, parent_id, exp_dir = parent.client, parent.experiment_id, parent.run_id, parent.exp_dir
    tasks = list(cfg.tasks)
    baselines = _reuse_baselines(client, experiment_id, cfg, tasks, objective)
    missing = [t for t in tasks if t not in baselines]
    if missing:
        err_console.print(f"single-task baselines to train first: {', '.join(missing)}")
        ctx = trial_context(cfg, run, None)  # a baseline reports the mean score (its one task's)
        recorder = MlflowTrials(cfg.mlflow.tracking_uri, experiment_id=experiment_id, parent_run_id=parent_id,
                                ctx=ctx, role="baseline", base_tags=base_tags, datasets=datasets,
                                retry_every_s=cfg.mlflow.retry_every_s)
        grid = run_grid(cfg, ctx, [{"tasks": t} for t in missing], name=f"{cfg.name}-baselines",
                        storage=exp_dir, recorder=recorder, role="baseline", resume=resume, as_json=as_json)
        for result in grid:
            if result.error is not None or result.metrics_dataframe is None:
                continue
            t = trial_params(result.config)["tasks"]
            value = _best_epoch_value(result.metrics_dataframe.to_dict("records"), t, objective)
            baselines[t] = value
            rid = recorder.runs.get(result.metrics.get("trial_id", ""))
            if rid:
                client.log_metric(rid, f"baseline/{t}/{objective.main_metric[t]}", value)
                client.set_tag(rid, "mtlo.baseline_key", _baseline_key(cfg, t))
        still = [t for t in tasks if t not in baselines]
        if still:
            client.set_terminated(parent_id, "FAILED")
            raise RuntimeError(f"single-task baseline(s) failed: {', '.join(still)} (see MLflow)")
    objective = objective.with_baselines(baselines)
    tracking.log_metrics(client, parent_id, {f"baseline/{t}": v for t, v in baselines.items()})
    zero = [t for t, v in baselines.items() if abs(v) < ZERO_BASELINE]
    if zero:
        err_console.print(f"[yellow]baseline 0: {', '.join(zero)} scored 0 alone; a gain relative to 0 is "
                          f"undefined, so mean_delta counts {'it' if len(zero) == 1 else 'them'} 0 in every "
                          "trial[/yellow]")
    return objective, baselines


def _searcher(cfg: Config, space: SearchSpace, run: dict[str, Any], objective: Objective, optuna_storage: Any,
              ident: Any, warm: Any) -> Any:
    """The Optuna searcher of the search (TPE, or NSGA-II for one objective a task), on the
    study's storage, warm-started from an earlier study where asked."""
    import optuna

    from orchestrator.search.searcher import Searcher
    from search_spaces import RunKey, define_by_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metrics, multi = objective.metric_names, objective.multi
    modes = ["max"] * len(metrics)
    sampler = optuna.samplers.NSGAIISampler(seed=cfg.train.seed) if multi else \
        optuna.samplers.TPESampler(seed=cfg.train.seed)
    searcher = Searcher(space=define_by_run(space, run["train"]), metric=metrics if multi else metrics[0],
                        mode=modes if multi else "max", sampler=sampler, key=RunKey(run),
                        storage=optuna_storage, study_name=cfg.name)
    seeded = study.seed(searcher.study, ident, warm, cfg.search.warm_start)
    if seeded:
        err_console.print(f"warm start: {seeded} finished trial(s) of study '{cfg.search.warm_start}' seed the sampler")
    return searcher


def _collect(grid: Any, client: Any, experiment_id: str, parent_id: str, objective: Objective
             ) -> list[dict[str, Any]]:
    """Trials as Ray reports them, each at its best epoch (the one whose weights it kept; by the
    row's ``objective``: the search's, or the loop's own for ``pareto``), joined with their
    MLflow child runs (by ``mtlo.trial_id``; after ``--resume`` the callbacks that made them are
    Ray's restored copies, not ours)."""
    children = child_runs(client, experiment_id, parent_id, role="trial")
    by_trial = {r.data.tags["mtlo.trial_id"]: r for r in children if "mtlo.trial_id" in r.data.tags}
    trials = []
    for result in grid:
        tid = result.metrics.get("trial_id") if result.metrics else None
        tid = tid or Path(result.path).name
        params = trial_params(result.config)
        last = result.metrics or {}
        frame = result.metrics_dataframe
        rows = [{k: v for k, v in r.items() if v == v} for r in frame.to_dict("records")] if frame is not None else []
        ranked = [r for r in rows if r.get("objective") is not None]
        best = max(ranked, key=lambda r: float(r["objective"])) if ranked else last
        tasks = str(last.get("tasks") or "+".join(objective.tasks)).split("+")
        obj: Any
        if objective.multi:
            obj = {k: best.get(k) for k in objective.metric_names if best.get(k) is not None}
        else:
            obj = best.get("objective")
        child = by_trial.get(tid)
        status = (child.data.tags.get("mtlo.status") if child else None) or \
            ("FAILED" if result.error is not None else "FINISHED")
        trials.append({"trial_id": tid, "run_id": child.info.run_id if child else None, "status": status,
                       "params": params, "tasks": tasks, "metrics": split_scores(best, "val"),
                       "test": split_scores({k: v for k, v in last.items() if v is not None}, "test"), "objective": obj,
                       "score": float(best["objective"]) if best.get("objective") is not None else None,
                       "best_epoch": int(best.get("epoch") or 0), "epochs": int(last.get("epoch") or 0),
                       "seconds": float(last.get("time_total_s") or 0.0)})
    return trials
