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

import contextlib
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from orchestrator import faults, tracking
from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.errors import ConfigError
from orchestrator.search.objectives import Objective
from orchestrator.search.progress import Progress
from orchestrator.search.trial import TrialContext, trainable, trial_params
from orchestrator.transfer.analysis import ZERO_BASELINE
from search_spaces import SearchSpace, load_space
from trainables import inspect_tasks

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


def _ray_init(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own progress lines, not Ray's tables
    # a result without the objective (a diverged trial's last one) is allowed: the searcher
    # records it as pruned, ASHA ignores it
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # save the experiment state (what --resume restores) at least every 2 s, not Ray's
    # adaptive period: after a kill, fewer finished epochs are recomputed
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "logging_level": "ERROR", "configure_logging": True}
    if address:
        ray.init(address=address, **kwargs)
    else:  # a new local Ray on this machine (never another user's running one); loopback only
        # where the CLI set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray was imported
        ray.init(address="local", **kwargs)


def check_space(cfg: Config, config_path: Path) -> SearchSpace:
    run = cfg.run_dict()
    space = load_space(cfg.search.space, config_dir=config_path.resolve().parent, tasks=list(cfg.tasks),
                       base_train=run["train"], target=cfg.search.target if cfg.search.objective == "target" else None)
    if cfg.search.objective == "pareto" and space.subset is not None:
        raise ConfigError(f"{space.source}: tasks: a task-subset search cannot use search.objective: pareto "
                          "(one objective per task needs every task in every trial)")
    return space


def check_cluster(cfg: Config, storage: Path) -> None:
    """Refuse, before any trial starts, a setup whose trials cannot all reach their storage.

    Metrics and artifacts go to MLflow from the driver only, so any tracking store works;
    but trials write checkpoints to Ray's storage folder, which on a cluster of several
    nodes must be one every node mounts at the same path (the driver's ./ray_results is
    not). A marker file written here must be visible from every node.
    """
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) <= 1:
        return
    if cfg.ray.storage is None:
        raise ConfigError(
            f"ray.storage: the Ray cluster has {len(nodes)} nodes, but trial checkpoints would go to {storage}, "
            "a folder on the driver's machine that worker nodes cannot reach; set ray.storage to a folder "
            "every node mounts at the same path (NFS)")
    storage.mkdir(parents=True, exist_ok=True)
    marker = storage / f".mtlo-probe-{uuid.uuid4().hex}"
    marker.write_text("mtlo")

    @ray.remote(num_cpus=0)
    def visible(path: str) -> bool:
        return Path(path).is_file()

    try:
        probes = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: visible.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker))
            for n in nodes}
        blind = [name for name, ref in probes.items() if not ray.get(ref, timeout=120)]
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ConfigError(f"ray.storage: {storage} is not visible from node(s) {', '.join(blind)}; "
                          "set it to a folder every node mounts at the same path (NFS)")


def _git_commit(where: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


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


RESTORES = 3  # in-process restores of a search that Ray Tune stopped on a Ray system error


def ray_system_error(exc: BaseException) -> BaseException | None:
    """The Ray system error (a worker killed by Ray's memory monitor, a lost object or node)
    behind an exception out of ``Tuner.fit``, if one is: Ray Tune 2.60 retries a trial whose
    worker died, but stops the whole search on Ray's ``OutOfMemoryError`` ("Caught unexpected
    exception"). An error of a trial's own code (``RayTaskError``) is not one."""
    from ray.exceptions import RayError, RayTaskError

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, RayError) and not isinstance(e, RayTaskError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


def _restore(path: Path, trainable_res: Any, *, errored: bool) -> Any:
    """A Tuner that goes on with the search saved at ``path``: unfinished trials from their
    last checkpoints; ``errored`` (``--resume``): failed trials once more too."""
    from ray import tune

    return tune.Tuner.restore(str(path), trainable=trainable_res, resume_unfinished=True, resume_errored=errored)


def _tuner_fit(tuner: Any, as_json: bool, progress: Progress, path: Path, trainable_res: Any) -> Any:
    """``tuner.fit()``; when Ray Tune stops on a Ray system error, the search is restored from
    its saved state (``path``) and goes on, up to ``RESTORES`` times, as ``--resume`` would."""
    from ray import tune

    # Ray writes some notices to stdout; with --json, stdout carries only our JSON
    redirect = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    restores = 0
    try:
        while True:
            try:
                with redirect:
                    return tuner.fit()
            except Exception as exc:
                cause = ray_system_error(exc)
                if cause is None or not tune.Tuner.can_restore(str(path)):
                    raise
                if restores == RESTORES:
                    raise RuntimeError(f"Ray Tune stopped on a Ray error {RESTORES + 1} times, the last: "
                                       f"{_first_line(cause)}; run the same command with --resume to go on") from exc
                restores += 1
                progress.close()
                err_console.print(f"Ray Tune stopped on a Ray error ({_first_line(cause)}); "
                                  f"going on from the saved state, as --resume would ({restores} of {RESTORES})",
                                  markup=False, highlight=False)
                tuner = _restore(path, trainable_res, errored=False)
    finally:
        progress.close()  # the live table ends on Ctrl-C too


@dataclass
class Parent:
    """Where a search or study keeps its files, and its MLflow parent run."""

    client: Any
    experiment_id: str
    run_id: str
    exp_dir: Path
    storage: Path
    new: bool  # False: a resumed run


def open_parent(cfg: Config, config_path: Path, *, what: str, state_file: str, resume: bool,
                address: str | None, tags: dict[str, str], state: dict[str, Any] | None = None) -> Parent:
    """Check the name against earlier runs, start Ray, check the cluster, then continue the
    parent run of an interrupted ``what`` (``--resume``) or create it (with the git commit,
    and a state file that a later ``--resume`` reads)."""
    storage = Path(cfg.ray.storage or "ray_results").expanduser().resolve()
    exp_dir = storage / cfg.name
    state_path = exp_dir / state_file
    if resume and not state_path.is_file():
        raise ConfigError(f"--resume: no interrupted {what} named '{cfg.name}' under {storage}")
    if not resume and exp_dir.exists():
        raise ConfigError(f"{what} '{cfg.name}' already exists under {storage}: use --resume to continue it, "
                          "or give it another name (--set name=...)")
    tracking.check_store(cfg.mlflow.tracking_uri)
    _ray_init(address or cfg.ray.address)
    check_cluster(cfg, storage)
    mlflow = tracking.configure(cfg)
    client = mlflow.tracking.MlflowClient(cfg.mlflow.tracking_uri)
    experiment_id = client.get_experiment_by_name(cfg.experiment).experiment_id
    if resume:
        parent_id = json.loads(state_path.read_text())["parent_run_id"]
        client.update_run(parent_id, status="RUNNING")
        return Parent(client, experiment_id, parent_id, exp_dir, storage, new=False)
    parent_id = client.create_run(experiment_id, run_name=cfg.name, tags=tags).info.run_id
    commit = _git_commit(config_path.resolve().parent)
    if commit:
        client.set_tag(parent_id, "mlflow.source.git.commit", commit)
    exp_dir.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({"parent_run_id": parent_id, "experiment_id": experiment_id,
                                      "config": str(config_path.resolve()), **(state or {})}))
    return Parent(client, experiment_id, parent_id, exp_dir, storage, new=True)


def run_search(cfg: Config, config_path: Path, *, num_samples: int | None = None, resume: bool = False,
               address: str | None = None, as_json: bool = False) -> SearchOutcome:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from orchestrator.search.searcher import Searcher


    space = check_space(cfg, config_path)
    faults.from_env()  # a malformed MTLO_FAULT stops here, before Ray
    run = cfg.run_dict()
    info = inspect_tasks(run)  # bad data stops here, before Ray or MLflow
    tasks = list(cfg.tasks)
    objective = Objective(cfg.search.objective, tuple(tasks), {t: i.main_metric for t, i in info.items()},
                          {t: i.higher_is_better for t, i in info.items()}, target=cfg.search.target)
    tags = {**tracking.run_tags(cfg, command="search"), "mtlo.role": "search",
            "mtlo.objective": cfg.search.objective, "mtlo.space": space.source}
    parent = open_parent(cfg, config_path, what="search", state_file=STATE_FILE, resume=resume, address=address,
                         tags=tags)
    client, experiment_id, parent_id, exp_dir = parent.client, parent.experiment_id, parent.run_id, parent.exp_dir
    if parent.new:
        params = tracking.run_params(cfg)
        params.update(tracking.flatten({"search": cfg.search.model_dump(mode="json"),
                                        "resources": cfg.resources.model_dump(mode="json")}))
        tracking.log_params(client, parent_id, params)
        tracking.log_files(client, parent_id, {"config.yaml": tracking.as_yaml(cfg.model_dump(mode="json")),
                                                "space.yaml": Path(space.source).read_text()})

    res = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    base_tags = {"mtlo.config_name": cfg.name, "mtlo.command": "search", "mtlo.encoder": cfg.encoder.model}
    started = time.time()

    baselines: dict[str, float] = {}
    if objective.kind == "mean_delta":
        baselines = _reuse_baselines(client, experiment_id, cfg, tasks, objective)
        missing = [t for t in tasks if t not in baselines]
        if missing:
            err_console.print(f"single-task baselines to train first: {', '.join(missing)}")
            ctx = trial_context(cfg, run, replace(objective, kind="mean_score"))
            recorder = _recorder(cfg, experiment_id, parent_id, ctx, "baseline", base_tags)
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
        objective = replace(objective, baselines=baselines)
        tracking.log_metrics(client, parent_id, {f"baseline/{t}": v for t, v in baselines.items()})
        zero = [t for t, v in baselines.items() if abs(v) < ZERO_BASELINE]
        if zero:
            err_console.print(f"[yellow]baseline 0: {', '.join(zero)} scored 0 alone; a gain relative to 0 is "
                              f"undefined, so mean_delta counts {'it' if len(zero) == 1 else 'them'} 0 in every "
                              "trial[/yellow]")

    ctx = trial_context(cfg, run, objective)
    metrics = objective.metric_names
    modes = ["max"] * len(metrics)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = objective.kind == "pareto"
    sampler = optuna.samplers.NSGAIISampler(seed=cfg.train.seed) if multi else \
        optuna.samplers.TPESampler(seed=cfg.train.seed)
    from search_spaces import RunKey, define_by_run

    searcher = Searcher(space=define_by_run(space, run["train"]), metric=metrics if multi else metrics[0],
                        mode=modes if multi else "max", sampler=sampler, key=RunKey(run))
    scheduler = FIFOScheduler() if multi or cfg.search.scheduler == "fifo" else \
        ASHAScheduler(metric="objective", mode="max", time_attr="training_iteration",
                      max_t=cfg.train.epochs, grace_period=1, reduction_factor=2)
    n = num_samples or cfg.search.num_samples
    recorder = _recorder(cfg, experiment_id, parent_id, ctx, "trial", base_tags)
    progress = Progress(n, "trial", None if multi else "objective", epochs=cfg.train.epochs)
    trainable_res = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), res)
    search_dir = exp_dir / "search"
    if resume and tune.Tuner.can_restore(str(search_dir)):
        tuner = _restore(search_dir, trainable_res, errored=True)
    else:
        tuner = tune.Tuner(
            trainable_res,
            tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=n,
                                        max_concurrent_trials=cfg.search.max_concurrent, reuse_actors=True),
            run_config=tune.RunConfig(name="search", storage_path=str(exp_dir), verbose=0,
                                      callbacks=_callbacks(recorder, progress),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures)),
        )
    grid = _tuner_fit(tuner, as_json, progress, search_dir, trainable_res)
    recorder.sync(grid)
    trials = _collect(grid, client, experiment_id, parent_id, objective)
    best = _best(trials, multi)
    summary = {"name": cfg.name, "objective": objective.kind, "baselines": baselines, "trials": trials,
               "best": best, "seconds": time.time() - started}
    tracking.log_files(client, parent_id, {"summary.json": tracking.as_json(summary)})
    if best is not None and not multi:
        client.log_metric(parent_id, "best/objective", float(best["objective"]))
        client.set_tag(parent_id, "mtlo.best_trial", best["trial_id"])
        client.set_tag(parent_id, "mtlo.best_run_id", best.get("run_id") or "")
    counts = {s: sum(1 for t in trials if t["status"] == s) for s in ("FINISHED", "STOPPED", "FAILED", "DIVERGED")}
    tracking.log_metrics(client, parent_id, {f"trials_{k.lower()}": v for k, v in counts.items()})
    client.set_terminated(parent_id, "FINISHED")
    return SearchOutcome(cfg.name, parent_id, trials, best, objective, baselines, str(exp_dir))


def run_grid(cfg: Config, ctx: TrialContext, points: list[dict[str, Any]], *, name: str, storage: Path,
             recorder: Any, role: str, resume: bool, as_json: bool) -> Any:
    """Train a fixed list of trials (``points``: parameters such as ``tasks`` or ``seed``) on
    Ray Tune, recorded by ``recorder``; a resumed run restores the same grid."""
    from ray import tune

    res = {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial}
    trainable_res = tune.with_resources(tune.with_parameters(trainable, ctx=ctx), res)
    progress = Progress(len(points), role, None, epochs=int(ctx.run["train"]["epochs"]))
    path = storage / name
    if resume and tune.Tuner.can_restore(str(path)):
        tuner = _restore(path, trainable_res, errored=True)
    else:
        tuner = tune.Tuner(
            trainable_res,
            param_space={"__mtlo_fixed": tune.grid_search(points)},
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=cfg.search.max_concurrent),
            run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                                      callbacks=_callbacks(recorder, progress),
                                      failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures)),
        )
    grid = _tuner_fit(tuner, as_json, progress, path, trainable_res)
    recorder.sync(grid)
    return grid


def trial_context(cfg: Config, run: dict[str, Any], objective: Objective) -> TrialContext:
    return TrialContext(run, objective, cfg.resources.cpus_per_trial, faults=faults.from_env().trial)


def _callbacks(recorder: Any, progress: Progress) -> list[Any]:
    """MLflow first (a result is recorded before anything else sees it), then the live
    table, then the test-only driver faults (MTLO_FAULT; nothing happens without it), last
    the removal of a finished trial's checkpoints (orchestrator/search/checkpoints.py)."""
    from orchestrator.search.checkpoints import DropFinishedCheckpoints

    return [recorder, progress, faults.driver_callback(), DropFinishedCheckpoints()]


def _recorder(cfg: Config, experiment_id: str, parent_id: str, ctx: TrialContext, role: str,
              base_tags: dict[str, str]) -> Any:
    from orchestrator.search.recorder import MlflowTrials

    return MlflowTrials(cfg.mlflow.tracking_uri, experiment_id=experiment_id, parent_run_id=parent_id, ctx=ctx,
                        role=role, base_tags=base_tags)


def _collect(grid: Any, client: Any, experiment_id: str, parent_id: str, objective: Objective
             ) -> list[dict[str, Any]]:
    """Trials as Ray reports them, joined with their MLflow child runs (by ``mtlo.trial_id``;
    after ``--resume`` the callbacks that made them are Ray's restored copies, not ours)."""
    children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' "
                                  "and tags.`mtlo.role` = 'trial'", max_results=10000)
    by_trial = {r.data.tags["mtlo.trial_id"]: r for r in children if "mtlo.trial_id" in r.data.tags}
    trials = []
    for result in grid:
        tid = result.metrics.get("trial_id") if result.metrics else None
        tid = tid or Path(result.path).name
        params = trial_params(result.config)
        last = result.metrics or {}
        tasks = str(last.get("tasks") or "+".join(objective.tasks)).split("+")
        metrics: dict[str, dict[str, float]] = {}
        for k, v in last.items():
            if k.startswith("val/") and v is not None:
                _, task, metric = k.split("/", 2)
                metrics.setdefault(task, {})[metric] = float(v)
        obj: Any
        if objective.kind == "pareto":
            obj = {k: last.get(k) for k in objective.metric_names if last.get(k) is not None}
        else:
            obj = last.get("objective")
        child = by_trial.get(tid)
        status = (child.data.tags.get("mtlo.status") if child else None) or \
            ("FAILED" if result.error is not None else "FINISHED")
        trials.append({"trial_id": tid, "run_id": child.info.run_id if child else None, "status": status,
                       "params": params,
                       "tasks": tasks, "metrics": metrics, "objective": obj,
                       "epochs": int(last.get("epoch") or 0),
                       "seconds": float(last.get("time_total_s") or 0.0)})
    return trials


def pareto_front(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials (``objective``: {name: value}, all maximized) that no other trial matches on
    every objective and beats on one."""
    def dominated(a: dict[str, Any]) -> bool:
        return any(all(b["objective"].get(k, -1e9) >= v for k, v in a["objective"].items()) and
                   any(b["objective"].get(k, -1e9) > v for k, v in a["objective"].items())
                   for b in trials if b is not a)

    return [t for t in trials if not dominated(t)]


def _best(trials: list[dict[str, Any]], multi: bool) -> dict[str, Any] | None:
    ok = [t for t in trials if t["status"] not in ("FAILED", "DIVERGED") and t["objective"] is not None]
    if not ok:
        return None
    if multi:
        return {"pareto_front": pareto_front(ok)}
    return max(ok, key=lambda t: float(t["objective"]))
