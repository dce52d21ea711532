"""``mtlo transfer``: a negative-transfer study run as Ray Tune grids of task subsets x seeds.

1. Check config and data (before Ray or MLflow).
2. Every run trains under the equal budget (``transfer.study``): every task alone first, then
   each group with each task's own batches from its run alone at the same seed.
3. Trials: the method's task sets (``transfer.methods``) at ``--seeds`` seeds. Every trial
   is an MLflow child run of the study's parent run (tags ``mtlo.tasks``, ``mtlo.seed``;
   metrics ``best/<task>/<metric>``, ``best_step``, ``train_steps``). ``groups=...`` trains
   given task sets instead (and every task alone), e.g. to score a grouping again on new seeds.
4. Results (``transfer.results``): gains with Welch intervals, negative transfer, the
   pairwise matrix, estimates for untrained groups, the best grouping into ``--budget`` groups.
5. Confirmation: proposed groups that were only estimated are trained (same seeds) and the
   grouping is recomputed on the measured gains.
6. ``--check-seeds K``: the recommendation and every task alone trained again at K new seeds
   (child runs with ``mtlo.role`` = check, left out of every figure above) and scored there:
   did the study's estimate hold?
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
from orchestrator.store.datasets import log_datasets, task_datasets
from orchestrator.store.recorder import MlflowTrials
from orchestrator.store.runs import ALL_ROLES, child_runs, study_runs
from orchestrator.transfer import analysis as an
from orchestrator.transfer.methods import given_subsets
from orchestrator.transfer.methods import method as method_of
from orchestrator.transfer.results import analyse, check_result, check_seed_list, to_confirm
from orchestrator.transfer.shapes import CheckRow, TransferResult
from orchestrator.transfer.study import (
    STUDY_FILE,
    Study,
    affinity_every,
    batches_per_pass,
    group_point,
    own_budgets,
    read_study,
    study_run,
)
from trainables import inspect_tasks

STATE_FILE = "mtlo_transfer.json"


def run_transfer(cfg: Config, config_path: Path, *, method: str, seeds: int = 3, budget: int = 2,
                 resume: bool = False, address: str | None = None, as_json: bool = False,
                 confirm_rounds: int = 1, groups: list[list[str]] | None = None,
                 singles: bool = True, sample: int | None = None, check_seeds: int = 0,
                 own_data: bool = True) -> TransferResult:
    """``groups``: train these task sets and every task alone instead of ``method``'s (which
    is then recorded as ``groups``), with no confirmation; ``singles=False``: the given sets
    of two or more tasks only, for a top-up whose baselines (same seeds) another study of
    the same store already trained (benchmarks/grouping.py reads both; only under the rule
    before own data, ``own_data=False``, which the committed benchmark tables were trained
    under). ``sample``: the surrogate method's task subsets (``--runs``, default twice the
    tasks). ``check_seeds``: after the study, the recommendation and every task alone trained
    again at that many new seeds (``--check-seeds``)."""
    _check_counts(seeds=seeds, budget=budget, confirm_rounds=confirm_rounds, check_seeds=check_seeds)
    tasks = list(cfg.tasks)
    if len(tasks) < 2:
        raise ConfigError(f"tasks: a transfer study needs at least two tasks, the config has {len(tasks)}")
    if groups is not None:
        method, confirm_rounds, check_seeds = "groups", 0, 0
    how = method_of(method, sample, seed=int(cfg.train.seed))
    sets = how.subsets(tasks) if groups is None else given_subsets(tasks, groups, singles)
    if not sets:
        raise ConfigError("groups: no task set of two or more tasks to train (and singles=False)")
    if own_data and not singles:
        raise ConfigError("groups: a top-up without the tasks alone needs their own batches: train them too")
    run = cfg.run_dict()
    info = inspect_tasks(run)  # bad data stops here, before Ray or MLflow
    run = study_run(run, info)
    main = {t: i.main_metric for t, i in info.items()}
    hib = {t: i.higher_is_better for t, i in info.items()}
    seed_list = [int(cfg.train.seed) + i for i in range(seeds)]
    tags = {**tracking.run_tags(cfg, command="transfer"), "mtlo.role": "transfer", "mtlo.method": method,
            "mtlo.seeds": str(seeds), "mtlo.budget": str(budget)}
    parent = open_parent(cfg, config_path, what="transfer study", state_file=STATE_FILE, resume=resume,
                         address=address, store=tracking.MlflowParents(cfg, config_path, tags),
                         state={"method": method})
    client, experiment_id, parent_id = parent.client, parent.experiment_id, parent.run_id
    datasets = task_datasets(info, {t: s.source for t, s in cfg.tasks.items()})  # every run's dataset inputs
    study = Study(cfg.name, parent_id, tasks, main, hib, method, seed_list, budget, run["train"]["max_steps"],
                  run["train"]["schedule"], batches_per_pass(run, info), float(run["train"]["temperature"]),
                  [list(an.group_of(g)) for g in groups or []], planned=len(sets) * len(seed_list),
                  sampled=len(sets) - len(tasks) if how.samples else 0, check_seeds=check_seeds,
                  own_data=own_data)
    if parent.new:
        _record_study(cfg, client, study, run, datasets)

    started = time.time()
    ctx = trial_context(cfg, run, None)  # every run's objective: its mean signed main metric
    grids = Grids(cfg, ctx, run, info, study, parent, datasets, resume=resume, as_json=as_json)
    every = affinity_every(tasks, run["train"]["max_steps"]) if how.measures_affinity else None
    err_console.print(f"[bold]mtlo transfer[/bold] {cfg.name}: {method}, {len(sets)} task sets x {seeds} seeds = "
                      f"{len(sets) * seeds} trials; every task alone capped at {run['train']['max_steps']} steps, "
                      f"patience {run['train']['patience']} epochs"
                      + ("; in a group, each task gets the own batches it took alone" if own_data else ""))
    grids.train(sets, seed_list, name="study", role="trial", affinity_every=every)
    runs, affinity, failed, signals = read_study(client, experiment_id, study)
    result = analyse(study, runs, affinity)

    # confirmation: train the proposed groups whose gains were only estimated; with more rounds,
    # again for the groups that the estimates propose once those gains are measured
    for round_no in range(1, confirm_rounds + 1):
        todo = to_confirm(result, failed)
        if not todo:
            break
        err_console.print(f"confirming the proposed group(s) by training them (round {round_no}): {todo}")
        # the grid is named by what it trains: --resume restores an interrupted round, and a
        # resumed study that was complete goes on with the groups it proposes now
        key = hashlib.sha1(" ".join(sorted("+".join(g) for g in todo)).encode()).hexdigest()[:10]
        grids.train([an.group_of(g) for g in todo], seed_list, name=f"confirm-{key}", role="confirm")
        runs, affinity, failed, signals = read_study(client, experiment_id, study, known=runs)
        result = analyse(study, runs, affinity)
    if check_seeds:
        result["check"] = run_check(grids, study, result, check_seeds)
    result["seconds"] = time.time() - started
    result["failed_runs"] = failed
    result["affinity_signals"] = signals
    with parent.ray_stopping():  # no more trials: Ray stops while the results are written
        _record_result(client, parent_id, result)
    return result


def _check_counts(*, seeds: int, budget: int, confirm_rounds: int, check_seeds: int) -> None:
    for flag, value, least in (("--seeds", seeds, 1), ("--budget", budget, 1), ("--confirm-rounds", confirm_rounds, 0),
                               ("--check-seeds", check_seeds, 0)):
        if value < least:
            raise ConfigError(f"{flag}: must be {'0 or more' if least == 0 else f'at least {least}'}, got {value}")
    if check_seeds == 1:
        raise ConfigError("--check-seeds: 1 seed gives no interval; use 2 or more (or 0: no check)")


def _record_study(cfg: Config, client: Any, study: Study, run: dict[str, Any], datasets: dict[str, Any]) -> None:
    """A new study's parent run: its params, its tasks' dataset inputs, the config and
    ``study.json`` (what a report needs to rebuild the analysis from MLflow alone)."""
    tr = run["train"]
    params = tracking.run_params(cfg)
    params.update({"transfer.method": study.method, "transfer.seeds": len(study.seeds),
                   "transfer.budget": study.budget, "transfer.max_steps": tr["max_steps"],
                   "transfer.patience": tr["patience"], "transfer.own_data": study.own_data})
    if study.sampled:
        params["transfer.runs"] = study.sampled
    if study.check_seeds:
        params["transfer.check_seeds"] = study.check_seeds
    tracking.log_params(client, study.parent_run_id, params)
    log_datasets(client, study.parent_run_id, datasets, study.tasks)
    desc = {k: v for k, v in asdict(study).items() if k != "parent_run_id"}
    desc["patience"] = tr["patience"]
    tracking.log_files(client, study.parent_run_id, {"config.yaml": tracking.as_yaml(cfg.model_dump(mode="json")),
                                                      STUDY_FILE: tracking.as_json(desc)})


def _record_result(client: Any, parent_id: str, result: TransferResult) -> None:
    """The study's result on its parent run (``transfer.json``, headline metrics, the grouping
    as a tag), and the run ended."""
    tracking.log_files(client, parent_id, {"transfer.json": tracking.as_json(result)})
    expected = (result["grouping"].get("expected") or {}).get("expected")
    tracking.log_metrics(client, parent_id, {"grouping/score": result["grouping"]["score"],
                                             "grouping/expected": expected,
                                             "cost/trials": result["cost"]["trials"],
                                             "cost/train_steps": result["cost"]["train_steps"],
                                             "negative_transfer": len(result["negative_transfer"])})
    client.set_tag(parent_id, "mtlo.grouping", " | ".join(",".join(g) for g in result["grouping"]["groups"]))
    client.set_terminated(parent_id, "FINISHED")


class Grids:
    """Trains task sets at seeds as Ray Tune grids, recorded as child runs of the study's parent
    run, under the study's equal-budget rule: with ``own_data``, the tasks alone first, then
    every group with each task's own batches from its run alone at the same seed
    (``transfer/study.py``)."""

    def __init__(self, cfg: Config, ctx: Any, run: dict[str, Any], info: dict[str, Any], study: Study,
                 parent: Any, datasets: dict[str, Any], *, resume: bool, as_json: bool) -> None:
        self.cfg, self.ctx, self.run, self.info, self.study = cfg, ctx, run, info, study
        self.client, self.experiment_id, self.storage = parent.client, parent.experiment_id, parent.exp_dir
        self.resume, self.as_json, self.datasets = resume, as_json, datasets
        self.base_tags = {"mtlo.config_name": cfg.name, "mtlo.command": "transfer", "mtlo.encoder": cfg.encoder.model}

    def train(self, sets: list[an.Group], seeds: list[int], *, name: str, role: str,
              affinity_every: int | None = None) -> None:
        alone = [g for g in sets if len(g) == 1]
        together = [g for g in sets if len(g) > 1]
        if not self.study.own_data:  # the rule before own data: one grid, every run on the group's objective
            self._grid([{"tasks": "+".join(g), "seed": s} for g in sets for s in seeds], name, role, affinity_every)
            return
        if alone:
            self._grid([{"tasks": g[0], "seed": s} for g in alone for s in seeds], f"{name}-singles", role, None)
        if together:
            budgets = own_budgets(self.trained_alone(), self.study.tasks, seeds, int(self.run["train"]["max_steps"]))
            self._grid([group_point(list(g), s, self.run, self.info, budgets) for g in together for s in seeds],
                       name, role, affinity_every)

    def trained_alone(self) -> list[an.Run]:
        """Every finished single-task run of the study (its own batches set its groups' budgets)."""
        children = child_runs(self.client, self.experiment_id, self.study.parent_run_id)
        return [r for r in study_runs(children, self.study.main_metric, roles=ALL_ROLES) if len(r.group) == 1]

    def _grid(self, points: list[dict[str, Any]], name: str, role: str, affinity_every: int | None) -> None:
        if affinity_every:  # the all-tasks run measures the affinity as it trains
            for p in points:
                if len(str(p["tasks"]).split("+")) == len(self.study.tasks):
                    p["affinity_every"] = affinity_every
        recorder = MlflowTrials(self.cfg.mlflow.tracking_uri, experiment_id=self.experiment_id,
                                parent_run_id=self.study.parent_run_id, ctx=self.ctx, role=role,
                                base_tags=self.base_tags, datasets=self.datasets,
                                retry_every_s=self.cfg.mlflow.retry_every_s)
        run_grid(self.cfg, self.ctx, points, name=name, storage=self.storage, recorder=recorder, role=role,
                 resume=self.resume, as_json=self.as_json)


def run_check(grids: Grids, study: Study, result: TransferResult, k: int) -> CheckRow:
    """``--check-seeds K``: the recommendation (where it is to train apart: the budget's least
    harmful grouping) and every task alone trained again at K new seeds, as child runs of the
    study (``mtlo.role`` = check); scored there (``results.check_result``)."""
    chosen = result["grouping"].get("within_budget") or result["grouping"]
    todo = [an.group_of(g) for g in chosen.get("groups", []) if len(g) > 1]
    seeds = check_seed_list(study, k)
    if todo:
        err_console.print(f"checking the recommendation on {k} new seeds ({', '.join(map(str, seeds))}): "
                          + ", ".join("+".join(g) for g in todo))
        grids.train([(t,) for t in study.tasks] + todo, seeds, name="check", role="check")
    children = child_runs(grids.client, grids.experiment_id, study.parent_run_id, role="check")
    return check_result(study, result, study_runs(children, study.main_metric, roles=("check",)))
