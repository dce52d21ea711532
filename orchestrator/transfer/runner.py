"""``mtlo transfer``: a negative-transfer study run as Ray Tune grids of task subsets x seeds.

1. Check config and data (before Ray or MLflow).
2. Every run trains under the equal budget (``transfer.study``).
3. Trials: the method's task sets (``transfer.methods``) at ``--seeds`` seeds. Every trial
   is an MLflow child run of the study's parent run (tags ``mtlo.tasks``, ``mtlo.seed``;
   metrics ``best/<task>/<metric>``, ``best_step``, ``train_steps``). ``groups=...`` trains
   given task sets instead (and every task alone), e.g. to score a grouping again on new seeds.
4. Results (``transfer.results``): gains with Welch intervals, negative transfer, the
   pairwise matrix, estimates for untrained groups, the best grouping into ``--budget`` groups.
5. Confirmation: proposed groups that were only estimated are trained (same seeds) and the
   grouping is recomputed on the measured gains.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.errors import ConfigError
from orchestrator.runtime.session import open_parent
from orchestrator.runtime.tuner import run_grid, trial_context
from orchestrator.store import tracking
from orchestrator.store.recorder import MlflowTrials
from orchestrator.transfer import analysis as an
from orchestrator.transfer.methods import given_subsets
from orchestrator.transfer.methods import method as method_of
from orchestrator.transfer.results import analyse, to_confirm
from orchestrator.transfer.shapes import TransferResult
from orchestrator.transfer.study import STUDY_FILE, Study, affinity_every, batches_per_pass, read_study, study_run
from trainables import inspect_tasks

STATE_FILE = "mtlo_transfer.json"


def run_transfer(cfg: Config, config_path: Path, *, method: str, seeds: int = 3, budget: int = 2,
                 resume: bool = False, address: str | None = None, as_json: bool = False,
                 confirm_rounds: int = 1, groups: list[list[str]] | None = None,
                 singles: bool = True, sample: int | None = None) -> TransferResult:
    """``groups``: train these task sets and every task alone instead of ``method``'s (which
    is then recorded as ``groups``), with no confirmation; ``singles=False``: the given sets
    of two or more tasks only, for a top-up whose baselines (same seeds) another study of
    the same store already trained (benchmarks/grouping.py reads both). ``sample``: the
    surrogate method's task subsets (``--runs``, default twice the tasks)."""
    if seeds < 1:
        raise ConfigError(f"--seeds: must be at least 1, got {seeds}")
    if budget < 1:
        raise ConfigError(f"--budget: must be at least 1, got {budget}")
    if confirm_rounds < 0:
        raise ConfigError(f"--confirm-rounds: must be 0 or more, got {confirm_rounds}")
    tasks = list(cfg.tasks)
    if len(tasks) < 2:
        raise ConfigError(f"tasks: a transfer study needs at least two tasks, the config has {len(tasks)}")
    if groups is not None:
        method, confirm_rounds = "groups", 0
    how = method_of(method, sample, seed=int(cfg.train.seed))
    sets = how.subsets(tasks) if groups is None else given_subsets(tasks, groups, singles)
    if not sets:
        raise ConfigError("groups: no task set of two or more tasks to train (and singles=False)")
    run = cfg.run_dict()
    info = inspect_tasks(run)  # bad data stops here, before Ray or MLflow
    run = study_run(run, info)
    main = {t: i.main_metric for t, i in info.items()}
    hib = {t: i.higher_is_better for t, i in info.items()}
    seed_list = [int(cfg.train.seed) + i for i in range(seeds)]
    tags = {**tracking.run_tags(cfg, command="transfer"), "mtlo.role": "transfer", "mtlo.method": method,
            "mtlo.seeds": str(seeds), "mtlo.budget": str(budget)}
    parent = open_parent(cfg, config_path, what="transfer study", state_file=STATE_FILE, resume=resume,
                         address=address, tags=tags, state={"method": method})
    client, experiment_id, parent_id, exp_dir = parent.client, parent.experiment_id, parent.run_id, parent.exp_dir
    study = Study(cfg.name, parent_id, tasks, main, hib, method, seed_list, budget, run["train"]["max_steps"],
                  run["train"]["schedule"], batches_per_pass(run, info), float(run["train"]["temperature"]),
                  [list(an.group_of(g)) for g in groups or []], planned=len(sets) * len(seed_list),
                  sampled=len(sets) - len(tasks) if method == "surrogate" else 0)
    if parent.new:
        params = tracking.run_params(cfg)
        params.update({"transfer.method": method, "transfer.seeds": seeds, "transfer.budget": budget,
                       "transfer.max_steps": run["train"]["max_steps"], "transfer.patience": run["train"]["patience"]})
        if study.sampled:
            params["transfer.runs"] = study.sampled
        tracking.log_params(client, parent_id, params)
        study_desc = {k: v for k, v in asdict(study).items() if k != "parent_run_id"}
        study_desc["patience"] = run["train"]["patience"]
        tracking.log_files(client, parent_id, {"config.yaml": tracking.as_yaml(cfg.model_dump(mode="json")),
                                                STUDY_FILE: tracking.as_json(study_desc)})

    started = time.time()
    ctx = trial_context(cfg, run, None)  # every run's objective: its mean signed main metric
    base_tags = {"mtlo.config_name": cfg.name, "mtlo.command": "transfer", "mtlo.encoder": cfg.encoder.model}
    points: list[dict[str, Any]] = [{"tasks": "+".join(g), "seed": s} for g in sets for s in seed_list]
    if how.measures_affinity:  # the all-tasks run measures the affinity as it trains
        every = affinity_every(tasks, run["train"]["max_steps"])
        for p in points:
            if len(str(p["tasks"]).split("+")) == len(tasks):
                p["affinity_every"] = every
    err_console.print(f"[bold]mtlo transfer[/bold] {cfg.name}: {method}, {len(sets)} task sets x {seeds} seeds = "
                      f"{len(points)} trials; every run capped at {run['train']['max_steps']} steps, "
                      f"patience {run['train']['patience']} epochs")
    recorder = MlflowTrials(cfg.mlflow.tracking_uri, experiment_id=experiment_id, parent_run_id=parent_id, ctx=ctx,
                            role="trial", base_tags=base_tags)
    run_grid(cfg, ctx, points, name="study", storage=exp_dir, recorder=recorder, role="trial", resume=resume,
             as_json=as_json)
    runs, affinity, failed, signals = read_study(client, experiment_id, study)
    result = analyse(study, runs, affinity)

    # confirmation: train the proposed groups whose gains were only estimated; with more rounds,
    # again for the groups that the estimates propose once those gains are measured
    for round_no in range(1, confirm_rounds + 1):
        todo = to_confirm(result, failed)
        if not todo:
            break
        err_console.print(f"confirming the proposed group(s) by training them (round {round_no}): {todo}")
        confirm = MlflowTrials(cfg.mlflow.tracking_uri, experiment_id=experiment_id, parent_run_id=parent_id,
                               ctx=ctx, role="confirm", base_tags=base_tags)
        # the grid is named by what it trains: --resume restores an interrupted round, and a
        # resumed study that was complete goes on with the groups it proposes now
        key = hashlib.sha1(" ".join(sorted("+".join(g) for g in todo)).encode()).hexdigest()[:10]
        run_grid(cfg, ctx, [{"tasks": "+".join(g), "seed": s} for g in todo for s in seed_list],
                 name=f"confirm-{key}", storage=exp_dir, recorder=confirm, role="confirm", resume=resume,
                 as_json=as_json)
        runs, affinity, failed, signals = read_study(client, experiment_id, study, known=runs)
        result = analyse(study, runs, affinity)
    result["seconds"] = time.time() - started
    result["failed_runs"] = failed
    result["affinity_signals"] = signals
    tracking.log_files(client, parent_id, {"transfer.json": tracking.as_json(result)})
    tracking.log_metrics(client, parent_id, {"grouping/score": result["grouping"]["score"],
                                             "cost/trials": result["cost"]["trials"],
                                             "cost/train_steps": result["cost"]["train_steps"],
                                             "negative_transfer": len(result["negative_transfer"])})
    client.set_tag(parent_id, "mtlo.grouping", " | ".join(",".join(g) for g in result["grouping"]["groups"]))
    client.set_terminated(parent_id, "FINISHED")
    return result
