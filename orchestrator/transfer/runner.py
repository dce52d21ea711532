"""``mtlo transfer``: a negative-transfer study run as Ray Tune grids of task subsets × seeds.

1. Check config and data (before Ray or MLflow).
2. Equal budget: every run, single task or group, gets the same cap in optimizer steps
   (``train.max_steps``, default: what the all-tasks group takes in ``train.epochs`` epochs),
   the same learning-rate schedule over that cap, and stops once its validation objective
   has not improved for ``train.patience`` epochs (default 2); its scores are those of its
   best epoch, and the steps it took are recorded.
3. Trials: ``pairwise`` trains every task alone and every pair; ``exhaustive`` every
   non-empty subset; each at ``--seeds`` seeds. Every trial is an MLflow child run of the
   study's parent run (tags ``mtlo.tasks``, ``mtlo.seed``; metrics ``best/<task>/<metric>``,
   ``best_step``, ``train_steps``). ``run_transfer(..., groups=...)`` trains given task
   sets instead (and every task alone), e.g. to score groupings again on fresh seeds
   (benchmarks/grouping.py --holdout-config).
4. Analysis (``orchestrator.transfer.analysis``): gains with Welch intervals, negative
   transfer, the pairwise matrix, Standley's estimates for untrained groups, the best
   grouping into at most ``--budget`` groups.
5. Confirmation: proposed groups that were only estimated are trained (same seeds) and the
   grouping is recomputed on the measured gains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from orchestrator import faults, tracking
from orchestrator.config import Config
from orchestrator.display import err_console
from orchestrator.errors import ConfigError
from orchestrator.search.objectives import Objective
from orchestrator.search.runner import _recorder, open_parent, run_grid, trial_context
from orchestrator.transfer import analysis as an
from orchestrator.transfer.predict import Estimator
from trainables import inspect_tasks

METHODS = ("pairwise", "exhaustive", "affinity")
STATE_FILE = "mtlo_transfer.json"
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


def batches_per_pass(run: dict[str, Any], info: dict[str, Any]) -> dict[str, int]:
    batch = int(run["train"]["batch_size"])
    return {t: math.ceil(i.train_examples / batch) for t, i in info.items()}


def subsets(tasks: list[str], method: str) -> list[tuple[str, ...]]:
    sizes: tuple[int, ...]
    if method == "affinity":  # every task alone, and all tasks together (where affinity is measured)
        return [an.group_of((t,)) for t in tasks] + [an.group_of(tasks)]
    if method == "pairwise":
        sizes = (1, 2)
    elif method == "exhaustive":
        sizes = tuple(range(1, len(tasks) + 1))
    else:
        raise ConfigError(f"--method: '{method}' is not one of {', '.join(METHODS)}")
    return [an.group_of(c) for k in sizes for c in itertools.combinations(tasks, k)]


def child_runs(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'",
                              max_results=50000)


def _runs(children: list[Any], main_metric: dict[str, str]) -> list[an.Run]:
    out = []
    for r in children:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get("mtlo.role") not in ("trial", "confirm") or r.info.status != "FINISHED":
            continue
        group = an.group_of(tags["mtlo.tasks"].split(","))
        scores = {t: metrics.get(f"best/{t}/{main_metric[t]}") for t in group if t in main_metric}
        if any(v is None for v in scores.values()):
            continue
        out.append(an.Run(group, int(tags.get("mtlo.seed", 0)), scores,  # type: ignore[arg-type]
                          steps=int(metrics.get("best_step", 0)), best_epoch=int(metrics.get("best_epoch", 0)),
                          run_id=r.info.run_id))
    return out


def _failed(children: list[Any]) -> list[dict[str, Any]]:
    return [{"group": tags["mtlo.tasks"].split(","), "seed": int(tags.get("mtlo.seed", 0)),
             "status": tags["mtlo.status"], "error": tags.get("mtlo.error", ""), "run_id": r.info.run_id}
            for r in children for tags in [r.data.tags]
            if tags.get("mtlo.role") in ("trial", "confirm") and tags.get("mtlo.status") in ("FAILED", "DIVERGED")]


def affinity_matrices(children: list[Any], prefix: str) -> list[dict[str, dict[str, float]]]:
    """Per finished run that measured it, the affinity ``prefix/<i>/<j>`` as Z[i][j]."""
    out = []
    for r in children:
        if r.info.status != "FINISHED":
            continue
        z: dict[str, dict[str, float]] = {}
        for k, v in r.data.metrics.items():
            if k.startswith(prefix + "/"):
                _, i, j = k.split("/", 2)
                z.setdefault(i, {})[j] = float(v)
        if z:
            out.append(z)
    return out


def mean_matrix(ms: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for i in sorted({i for m in ms for i in m}):
        for j in sorted({j for m in ms for j in m.get(i, {})}):
            vals = [m[i][j] for m in ms if j in m.get(i, {})]
            out.setdefault(i, {})[j] = sum(vals) / len(vals)
    return out


def affinity_signals(children: list[Any], tasks: list[str]) -> dict[str, Any]:
    """Both affinities of the all-tasks runs: TAG's lookahead (every k steps; what the
    estimate uses) and the first-order one from the training gradients at every step
    (trainables/affinity.py, ``GradientAffinity``), each with its mean over runs and how far
    the runs (seeds) agree on who helps whom (``analysis.agreement``)."""
    out: dict[str, Any] = {}
    for name, prefix in (("lookahead", "affinity"), ("gradient", "gaffinity")):
        ms = affinity_matrices(children, prefix)
        if ms:
            out[name] = {"runs": len(ms), "agreement": an.agreement(ms, tasks), "matrix": mean_matrix(ms)}
    return out


def load_runs(client: Any, experiment_id: str, parent_id: str, main_metric: dict[str, str]) -> list[an.Run]:
    """Every finished trial of a study, read back from MLflow (a report needs nothing else)."""
    return _runs(child_runs(client, experiment_id, parent_id), main_metric)


def with_curves(client: Any, runs: list[an.Run], main_metric: dict[str, str],
                known: list[an.Run] | None = None) -> list[an.Run]:
    """The single-task runs with their learning curves (the validation score and the steps
    at every epoch, from their MLflow metric histories; a finished run's never change, so
    those of ``known`` runs are reused): the affinity method's estimates read how much each
    task loses from fewer steps off them."""
    have = {r.run_id: r.curve for r in known or [] if r.curve}
    out = []
    for r in runs:
        if r.run_id in have:
            r = replace(r, curve=have[r.run_id])
        elif len(r.group) == 1 and r.run_id:
            t = r.group[0]
            steps = {m.step: m.value for m in client.get_metric_history(r.run_id, "step")}
            scores = {m.step: m.value for m in client.get_metric_history(r.run_id, f"val/{t}/{main_metric[t]}")}
            r = replace(r, curve=tuple((int(steps[e]), float(v)) for e, v in sorted(scores.items()) if e in steps))
        out.append(r)
    return out


def read_study(client: Any, experiment_id: str, study: Study, known: list[an.Run] | None = None
               ) -> tuple[list[an.Run], dict[str, dict[str, float]] | None, list[dict[str, Any]], dict[str, Any]]:
    """One read of a study's child runs: the finished runs, the affinity (for the methods that
    measure it) and the runs that failed or diverged (left out of the analysis, never dropped
    silently: the report and ``--json`` list them), and ``affinity_signals`` (each affinity's
    agreement across the all-tasks runs). For the affinity method, the single-task runs come
    with their learning curves (taken from ``known`` runs where read before)."""
    children = child_runs(client, experiment_id, study.parent_run_id)
    runs = _runs(children, study.main_metric)
    measured = study.method in ("affinity", "exhaustive")
    signals = affinity_signals(children, study.tasks) if measured else {}
    affinity = signals.get("lookahead", {}).get("matrix", {}) if measured else None
    if study.method == "affinity":
        runs = with_curves(client, runs, study.main_metric, known)
    return runs, affinity, _failed(children), signals


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
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mtlo-") as tmp:
        return json.loads(Path(client.download_artifacts(parent_id, STUDY_FILE, tmp)).read_text())


def study_from_mlflow(client: Any, parent_id: str) -> Study:
    desc = _study_desc(client, parent_id)
    known = {f.name for f in fields(Study)}  # an older study.json lacks the later fields: their defaults
    return Study(**{k: v for k, v in desc.items() if k in known and k != "parent_run_id"}, parent_run_id=parent_id)


def _add_planned(client: Any, parent_id: str, planned: int) -> None:
    """A study begun before study.json held its planned runs gets them when it is resumed
    (its report then says "73 of 189 planned runs finished"); nothing else in it changes."""
    desc = _study_desc(client, parent_id)
    if not desc.get("planned"):
        tracking.log_files(client, parent_id, {STUDY_FILE: tracking.as_json({**desc, "planned": planned})})


def estimator(study: Study, runs: list[an.Run], gains: list[an.Gain],
              affinity: dict[str, dict[str, float]], effective_steps: bool = True) -> Estimator:
    """The affinity method's estimate of Δ_t(G) (orchestrator/transfer/predict.py), fitted to
    the gains measured in the all-tasks group."""
    curves: dict[str, list[Any]] = {}
    for r in runs:
        if len(r.group) == 1 and r.curve:
            curves.setdefault(r.group[0], []).append(r.curve)
    base = {t: s.mean for t, s in an.baselines(runs).items()}
    everyone = an.group_of(study.tasks)
    est = Estimator(list(study.tasks), study.higher_is_better, base, curves, affinity, study.max_steps,
                    study.schedule, study.batches, study.temperature, effective_steps=effective_steps)
    return est.fit({g.task: g.delta for g in gains if g.group == everyone})


def analyse(study: Study, runs: list[an.Run], affinity: dict[str, dict[str, float]] | None = None,
            effective_steps: bool = True) -> dict[str, Any]:
    """The study's results in DESIGN's ``--json`` shape (plus the pairwise matrix).

    ``proposed``: the best grouping on measured gains, and on estimates for groups never
    trained (``pairwise`` / ``exhaustive``: Standley's, from the pairs; ``affinity``: built on
    the affinity, the baselines' learning curves and the all-tasks group, see ``estimator``).
    ``grouping``, the recommendation: the best grouping on measured gains only; confirmed
    once every proposed group was trained (``run_transfer`` trains them)."""
    gains = an.gains(runs, study.higher_is_better)
    base = an.baselines(runs)
    matrix = an.pairwise_matrix(gains, study.tasks)
    measured = {(g.group, g.task) for g in gains}
    fit: dict[str, Any] | None = None
    est: Any = None
    if study.method == "affinity":
        if affinity:
            est = estimator(study, runs, gains, affinity, effective_steps)
            fit = {"dilution": {t: est.dilution(t, study.tasks) for t in study.tasks},
                   "residual": dict(est.residual), "helper": {t: est.helper(t) for t in study.tasks},
                   "carry": dict(est.carry)}
    else:
        est = lambda t, g: an.standley_estimate(matrix, t, g)  # noqa: E731
    zero = an.zero_baselines(base)  # relative gains undefined: counted 0 wherever placed
    table = an.gain_table(study.tasks, gains, neutral=zero)
    estimates = an.gain_table(study.tasks, gains, estimate=est, neutral=zero) if est is not None else table
    proposed = None
    try:
        proposed = an.best_grouping(study.tasks, estimates, study.budget)
        proposed.method = "affinity (estimated)" if study.method == "affinity" else "Standley (estimated from pairs)"
        if fit is not None:  # what the estimate says of every group proposed so far (and trained since)
            n = len(study.tasks)
            shown = {an.group_of(g) for g in proposed.groups if len(g) > 1}
            shown |= {g.group for g in gains if 1 < len(g.group) < n}  # affinity: only confirmations are trained
            fit["proposed"] = [{"group": list(g), "task": t, "estimated": est(t, g)}
                               for g in sorted(shown, key=lambda g: (len(g), g)) for t in g if t not in zero]
    except ValueError:
        proposed = None
    try:  # the recommendation: measured gains only
        grouping = an.best_grouping(study.tasks, table, study.budget)
        # confirmed: every group the estimates propose was trained, so no estimated grouping beats it
        trained = {r.group for r in runs}  # a task of baseline 0 has no gain, but its group is trained
        grouping.confirmed = proposed is not None and all(
            len(g) == 1 or all((tuple(g), t) in measured or (t in zero and tuple(g) in trained) for t in g)
            for g in proposed.groups)
        grouping.ci = an.grouping_interval(runs, grouping.assignment, study.higher_is_better)
    except ValueError as exc:  # too few runs so far (a study still running or interrupted)
        grouping = an.Grouping([], math.nan, note=str(exc))
    grouping.method = study.method
    checked = checked_grouping(study, runs, table) if study.groups else None
    estimated = [an.Gain(t, g, row[t], None, None, False, 0, estimated=True).as_dict()
                 for g, row in estimates.items() if len(g) > 1 for t in g if (g, t) not in measured and t not in zero]
    return {
        "name": study.name, "parent_run_id": study.parent_run_id, "method": study.method, "budget": study.budget,
        "tasks": study.tasks, "main_metric": study.main_metric, "seeds": study.seeds,
        "baselines": {t: s.as_dict() for t, s in base.items()},
        "noisy_baselines": an.noisy_baselines(base),
        "zero_baselines": zero,
        "gains": [g.as_dict() for g in gains],
        "negative_transfer": [g.as_dict() for g in an.negative_transfer(gains)],
        "pairwise": matrix,
        "estimated_gains": estimated,
        "affinity": affinity or {},
        "proposed": proposed.as_dict() if proposed is not None else None,
        "estimator": fit,
        "grouping": grouping.as_dict(),
        "checked": checked.as_dict() if checked is not None else None,
        "cost": {"trials": len(runs), "train_steps": sum(r.steps for r in runs), "planned": study.planned},
        "runs": [{"group": list(r.group), "seed": r.seed, "scores": dict(r.scores), "best_step": r.steps,
                  "run_id": r.run_id} for r in runs],
    }


def checked_grouping(study: Study, runs: list[an.Run], table: dict[an.Group, dict[str, float]]) -> an.Grouping:
    """A ``groups`` study: the given task sets as a grouping, scored on its runs (each task in
    its best given set, a task in none alone), with its interval over seeds."""
    given = {an.group_of(g) for g in study.groups}
    covered = {t for g in given for t in g}
    cand = {g: row for g, row in table.items() if g in given or (len(g) == 1 and g[0] not in covered)}
    try:
        out = an.best_grouping(study.tasks, cand, max(1, len(cand)))
    except ValueError as exc:  # a given set not trained (yet, or it failed)
        return an.Grouping([], math.nan, method="groups", note=str(exc))
    out.method = "groups"
    out.ci = an.grouping_interval(runs, out.assignment, study.higher_is_better)
    return out


def to_confirm(result: dict[str, Any], failed: list[dict[str, Any]] | None = None) -> list[list[str]]:
    """The groups of two or more tasks that the analysis proposes and that were never trained
    (nor tried and failed). Once they are trained the proposal is made again on their
    measured gains, and may move."""
    chosen = (result["proposed"] or {}).get("groups", [])
    tried = {an.group_of(r["group"]) for r in list(result["runs"]) + list(failed or [])}
    return [g for g in chosen if len(g) > 1 and an.group_of(g) not in tried]


def parse_groups(text: str) -> list[list[str]]:
    """``--groups``: task sets separated by commas, tasks within a set by '+': "a+b,c"."""
    return [[t.strip() for t in g.split("+") if t.strip()] for g in text.split(",")]


def given_subsets(tasks: list[str], groups: list[list[str]], singles: bool = True) -> list[tuple[str, ...]]:
    """Every task alone (unless ``singles`` is false), then the given task sets (each once,
    in order); names checked."""
    out = [an.group_of((t,)) for t in tasks] if singles else []
    for g in groups:
        unknown = [t for t in g if t not in tasks]
        if unknown or not g:
            raise ConfigError(f"groups: {'+'.join(g) or '(empty)'}: "
                              + (f"no task {unknown[0]!r} in the config" if unknown else "an empty task set"))
        if an.group_of(g) not in out and (singles or len(g) > 1):
            out.append(an.group_of(g))
    return out


def run_transfer(cfg: Config, config_path: Path, *, method: str, seeds: int = 3, budget: int = 2,
                 resume: bool = False, address: str | None = None, as_json: bool = False,
                 confirm_rounds: int = 1, groups: list[list[str]] | None = None,
                 singles: bool = True) -> dict[str, Any]:
    """``groups``: train these task sets and every task alone instead of ``method``'s (which
    is then recorded as ``groups``), with no confirmation; ``singles=False``: the given sets
    of two or more tasks only, for a top-up whose baselines (same seeds) another study of
    the same store already trained (benchmarks/grouping.py reads both)."""
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
    sets = subsets(tasks, method) if groups is None else given_subsets(tasks, groups, singles)
    if not sets:
        raise ConfigError("groups: no task set of two or more tasks to train (and singles=False)")
    faults.from_env()  # a malformed MTLO_FAULT stops here, before Ray
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
                  [list(an.group_of(g)) for g in groups or []], planned=len(sets) * len(seed_list))
    if parent.new:
        params = tracking.run_params(cfg)
        params.update({"transfer.method": method, "transfer.seeds": seeds, "transfer.budget": budget,
                       "transfer.max_steps": run["train"]["max_steps"], "transfer.patience": run["train"]["patience"]})
        tracking.log_params(client, parent_id, params)
        study_desc = {k: v for k, v in asdict(study).items() if k != "parent_run_id"}
        study_desc["patience"] = run["train"]["patience"]
        tracking.log_files(client, parent_id, {"config.yaml": tracking.as_yaml(cfg.model_dump(mode="json")),
                                                STUDY_FILE: tracking.as_json(study_desc)})
    else:
        _add_planned(client, parent_id, study.planned)

    started = time.time()
    objective = Objective("mean_score", tuple(tasks), main, hib)
    ctx = trial_context(cfg, run, objective)
    base_tags = {"mtlo.config_name": cfg.name, "mtlo.command": "transfer", "mtlo.encoder": cfg.encoder.model}
    points: list[dict[str, Any]] = [{"tasks": "+".join(g), "seed": s} for g in sets for s in seed_list]
    if method in ("affinity", "exhaustive"):  # the all-tasks run measures the affinity as it trains
        every = affinity_every(tasks, run["train"]["max_steps"])
        for p in points:
            if len(str(p["tasks"]).split("+")) == len(tasks):
                p["affinity_every"] = every
    err_console.print(f"[bold]mtlo transfer[/bold] {cfg.name}: {method}, {len(sets)} task sets x {seeds} seeds = "
                      f"{len(points)} trials; every run capped at {run['train']['max_steps']} steps, "
                      f"patience {run['train']['patience']} epochs")
    recorder = _recorder(cfg, experiment_id, parent_id, ctx, "trial", base_tags)
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
        confirm = _recorder(cfg, experiment_id, parent_id, ctx, "confirm", base_tags)
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
