"""A transfer study: what it is (:class:`Study`, kept on its parent run as ``study.json``),
the equal-budget rule every run trains under, and the study read back from MLflow.

Equal budget (docs/transfer.md, "The equal budget"): every task alone gets the same cap in
optimizer steps (``train.max_steps``, default: what the all-tasks group takes in
``train.epochs`` epochs) and stops once its validation score has not improved for
``train.patience`` epochs (default 2); its scores are those of its best epoch. Then every
group gives each of its tasks the own batches that task took alone at the same seed
(``train.own_batches``, :func:`own_budgets`) and judges it on its own validation score within
them: alone and in a group, a task has seen the same data when it is judged. A group's
learning-rate schedule spans the steps in which each of its tasks would get the cap in own
batches (:func:`group_horizon`), so that a task's k-th own batch sees about the learning rate
it saw alone. Studies recorded before this rule (``own_data`` false in study.json) stopped
every run on the group's mean objective.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from orchestrator.domain import mean_matrix
from orchestrator.store.runs import affinity_matrices, child_runs, failed_runs, study_runs, with_curves
from orchestrator.transfer import analysis as an
from orchestrator.transfer.methods import method as method_of
from orchestrator.transfer.shapes import FailedRun

STUDY_FILE = "study.json"  # on the parent run: what a report needs to rebuild the analysis
DEFAULT_PATIENCE = 2


@dataclass
class Study:
    name: str
    parent_run_id: str
    tasks: list[str]
    main_metric: dict[str, str]
    higher_is_better: dict[str, bool]
    method: str
    seeds: list[int]
    budget: int
    max_steps: int = 0  # the equal-budget step cap of every run
    schedule: str = "round_robin"
    batches: dict[str, int] = field(default_factory=dict)  # each task's training batches per pass
    temperature: float = 1.0
    groups: list[list[str]] = field(default_factory=list)  # method "groups": the task sets given
    planned: int = 0  # runs of the method's first stage (task sets x seeds); 0: an older study.json
    sampled: int = 0  # the surrogate method: task subsets proposed by Optuna (--runs)
    check_seeds: int = 0  # --check-seeds: new seeds the recommendation is trained again at after the study
    own_data: bool = False  # the equal own-data rule (train.own_batches); False: a study recorded before it


def study_run(run: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The config's run dict under the equal-budget rule (step cap, patience, epochs that
    never bind before the cap); changes ``run`` in place and returns it."""
    tr = run["train"]
    per_epoch = batches_per_pass(run, info)
    cap = int(tr.get("max_steps") or int(tr["epochs"]) * sum(per_epoch.values()))
    tr["max_steps"] = cap
    tr["patience"] = int(tr.get("patience") or DEFAULT_PATIENCE)
    tr["epochs"] = max(int(tr["epochs"]), math.ceil(cap / max(1, min(per_epoch.values()))))
    return run


def own_budgets(runs: list[an.Run], tasks: list[str], seeds: list[int], cap: int) -> dict[tuple[str, int], int]:
    """(task, seed) -> the own batches the task took alone at that seed (its run's steps: alone,
    every step is one of its batches). A seed whose single-task run failed takes the median of
    the task's other seeds; a task with none, the cap."""
    alone = {(r.group[0], r.seed): r.trained for r in runs if len(r.group) == 1 and r.trained > 0}
    out = {}
    for t in tasks:
        others = sorted(v for (task, _), v in alone.items() if task == t)
        fallback = others[len(others) // 2] if others else cap
        out.update({(t, s): alone.get((t, s), fallback) for s in seeds})
    return out


def group_horizon(group: list[str], run: dict[str, Any], info: dict[str, Any]) -> tuple[int, int]:
    """(steps, epochs) of a group's run under the own-data rule: the steps in which each of its
    tasks gets the study's cap in own batches under the schedule (round robin of k tasks: k times
    the cap), which its learning-rate schedule spans and which caps it; and enough epochs for them."""
    import numpy as np

    from trainables.schedules import schedule

    tr = run["train"]
    per = {t: n for t, n in batches_per_pass(run, info).items() if t in group}
    plan = schedule(tr["schedule"]).plan(per, np.random.default_rng(0), temperature=float(tr["temperature"]))
    share = min(sum(1 for step in plan if t in step) / len(plan) for t in per)
    steps = math.ceil(int(tr["max_steps"]) / max(share, 1e-9))
    return steps, math.ceil(steps / len(plan)) + 1


def group_point(group: list[str], seed: int, run: dict[str, Any], info: dict[str, Any],
                budgets: dict[tuple[str, int], int]) -> dict[str, Any]:
    """A grid point that trains ``group`` at ``seed`` under the own-data rule."""
    steps, epochs = group_horizon(group, run, info)
    return {"tasks": "+".join(group), "seed": seed, "own_batches": {t: budgets[(t, seed)] for t in group},
            "max_steps": steps, "epochs": epochs}


def batches_per_pass(run: dict[str, Any], info: dict[str, Any]) -> dict[str, int]:
    batch = int(run["train"]["batch_size"])
    return {t: math.ceil(i.train_examples / batch) for t, i in info.items()}


def affinity_every(tasks: list[str], cap: int) -> int:
    """Steps between affinity measurements: one measurement (a backward pass per task and a
    forward pass per ordered pair) was modelled at n + n²/3 training steps (measured at six
    tasks, benchmarks/affinity_cost.py: 11.8 on the tiny encoder, 22.1 on MiniLM-L6); measure
    so that it adds about a fifth to the run, but at least 10 times within the step cap (at six
    tasks and a short cap the ten measurements add about a third on the tiny encoder, about
    four fifths on MiniLM-L6 at 270 steps)."""
    n = len(tasks)
    return max(1, min(int(5 * (n + n * n / 3)), cap // 10))


def _study_desc(client: Any, parent_id: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mtlo-") as tmp:
        return json.loads(Path(client.download_artifacts(parent_id, STUDY_FILE, tmp)).read_text())


def study_from_mlflow(client: Any, parent_id: str) -> Study:
    desc = _study_desc(client, parent_id)
    known = {f.name for f in fields(Study)}  # study.json also records the patience, not a Study field
    return Study(**{k: v for k, v in desc.items() if k in known and k != "parent_run_id"}, parent_run_id=parent_id)


def affinity_signals(children: list[Any], tasks: list[str]) -> dict[str, Any]:
    """The affinity of the all-tasks runs (TAG's lookahead, every k steps; what the estimate
    uses): its mean over runs and how far the runs (seeds) agree on who helps whom
    (``analysis.agreement``)."""
    out: dict[str, Any] = {}
    for name, prefix in (("lookahead", "affinity"),):
        ms = affinity_matrices(children, prefix)
        if ms:
            out[name] = {"runs": len(ms), "agreement": an.agreement(ms, tasks), "matrix": mean_matrix(ms)}
    return out


def load_runs(client: Any, experiment_id: str, parent_id: str, main_metric: dict[str, str]) -> list[an.Run]:
    """Every finished trial of a study, read back from MLflow (a report needs nothing else)."""
    return study_runs(child_runs(client, experiment_id, parent_id), main_metric)


def read_study(client: Any, experiment_id: str, study: Study, known: list[an.Run] | None = None
               ) -> tuple[list[an.Run], dict[str, dict[str, float]] | None, list[FailedRun], dict[str, Any]]:
    """One read of a study's child runs: the finished runs, the affinity (for the methods that
    measure it) and the runs that failed or diverged (left out of the analysis, never dropped
    silently: the report and ``--json`` list them), and ``affinity_signals`` (each affinity's
    agreement across the all-tasks runs). For the affinity method, the single-task runs come
    with their learning curves (taken from ``known`` runs where read before)."""
    children = child_runs(client, experiment_id, study.parent_run_id)
    runs = study_runs(children, study.main_metric)
    measured = method_of(study.method).measures_affinity
    signals = affinity_signals(children, study.tasks) if measured else {}
    affinity = signals.get("lookahead", {}).get("matrix", {}) if measured else None
    if method_of(study.method).reads_curves:  # its estimate reads the baselines' learning curves
        runs = with_curves(client, runs, study.main_metric, known)
    return runs, affinity, cast(list[FailedRun], failed_runs(children)), signals


