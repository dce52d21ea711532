"""A study's results from its runs: gains, negative transfer, the pairwise matrix, estimates
for untrained groups, the recommended grouping and whether it is confirmed, in DESIGN's
``--json`` shape. Pure functions over the runs table (``transfer.analysis``) and the study.
"""

from __future__ import annotations

import math
from typing import Any

from orchestrator.store.runs import child_runs, study_runs
from orchestrator.transfer import analysis as an
from orchestrator.transfer import noise
from orchestrator.transfer.methods import method as method_of
from orchestrator.transfer.shapes import CheckRow, FailedRun, GainRow, TransferResult
from orchestrator.transfer.study import Study, read_study, study_from_mlflow


def analyse(study: Study, runs: list[an.Run], affinity: dict[str, dict[str, float]] | None = None
            ) -> TransferResult:
    """The study's results in DESIGN's ``--json`` shape (plus the pairwise matrix).

    ``proposed``: the best grouping on measured gains, and on estimates for groups never
    trained (``pairwise`` / ``exhaustive``: Standley's, from the pairs; ``affinity``: built on
    the affinity, the baselines' learning curves and the all-tasks group, see ``estimator``;
    ``surrogate``: each task's linear model fitted on the trained subsets, ``transfer/surrogate.py``).
    ``grouping``, the recommendation: the best grouping on measured gains only; confirmed
    once every proposed group was trained (``run_transfer`` trains them)."""
    gains = an.gains(runs, study.higher_is_better)
    base = an.baselines(runs)
    matrix = an.pairwise_matrix(gains, study.tasks)
    measured = {(g.group, g.task) for g in gains}
    how = method_of(study.method)
    est, fit = how.estimate(study, runs, gains, matrix, affinity)
    zero = an.zero_baselines(base)  # relative gains undefined: counted 0 wherever placed
    table = an.gain_table(study.tasks, gains, neutral=zero)
    estimates = an.gain_table(study.tasks, gains, estimate=est, neutral=zero) if est is not None else table
    proposed = None
    try:
        proposed = an.best_grouping(study.tasks, estimates, study.budget)
        proposed.method = how.label
        if fit is not None and est is not None:  # what the estimate says of the groups it proposes (and trained)
            n = len(study.tasks)
            shown = {an.group_of(g) for g in proposed.groups if len(g) > 1}
            if how.shows_trained:
                shown |= {g.group for g in gains if 1 < len(g.group) < n}
            fit["proposed"] = [{"group": list(g), "task": t, "estimated": est(t, g)}
                               for g in sorted(shown, key=lambda g: (len(g), g)) for t in g if t not in zero]
    except ValueError:
        proposed = None
    sg = noise.seed_gains(runs, study.higher_is_better)
    task_noise = noise.task_noise(sg)
    try:  # the recommendation: measured gains only, each weighed by its seed noise
        grouping = recommend(study, runs, table, sg, task_noise)
        # confirmed: every group the estimates propose was trained, so no estimated grouping beats it
        trained = {r.group for r in runs}  # a task of baseline 0 has no gain, but its group is trained
        grouping.confirmed = proposed is not None and all(
            len(g) == 1 or all((tuple(g), t) in measured or (t in zero and tuple(g) in trained) for t in g)
            for g in proposed.groups)
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
        "gains": [expected_gain(g, sg, task_noise) for g in gains],
        "negative_transfer": [g.as_dict() for g in an.negative_transfer(gains)],
        "pairwise": matrix,
        "estimated_gains": estimated,
        "affinity": affinity or {},
        "proposed": proposed.as_dict() if proposed is not None else None,
        "estimate_source": how.source, "proposes": how.proposes,
        "estimator": fit if how.fit_key == "estimator" else None,
        "surrogate": fit if how.fit_key == "surrogate" else None,
        "grouping": grouping.as_dict(),
        "noise": {t: {**nz.as_dict(), **power} for t, nz in task_noise.items()
                  for power in [noise.power_table({t: nz}, len(study.seeds))[t]]},
        "checked": checked.as_dict() if checked is not None else None,
        "cost": {"trials": len(runs), "train_steps": sum(r.steps for r in runs), "planned": study.planned},
        "runs": [{"group": list(r.group), "seed": r.seed, "scores": dict(r.scores), "test": dict(r.test),
                  "best_step": r.steps, "run_id": r.run_id} for r in runs],
    }


def recommend(study: Study, runs: list[an.Run], table: dict[an.Group, dict[str, float]],
              sg: noise.SeedGains, task_noise: dict[str, noise.TaskNoise]) -> an.Grouping:
    """The recommended grouping (docs/transfer.md, "Noise, shrinkage and the headline").

    The best grouping within the budget on the *shrunk* measured gains (each gain's posterior
    mean given its task's seed noise: a weak task's large, noisy relative gain counts for what
    the seeds support); ``score`` and ``ci`` are its total as measured on the seeds that chose
    it, ``expected`` what new seeds should give. Unless that is credible (a gain above what
    noise and selection alone give in 95% of simulated studies without transfer,
    ``noise.against_noise``), training every task alone wins: the recommendation is then
    ``apart`` (a gain of exactly 0 on any seed), with the budget's least harmful grouping beside
    it (``within_budget``) for a user who cannot deploy more models."""
    hib = study.higher_is_better
    best = an.best_grouping(study.tasks, noise.shrunk_table(table, sg, task_noise), study.budget)
    best.score = sum(table[an.group_of(g)][t] for t, g in best.assignment.items())
    best.ci = an.grouping_interval(runs, best.assignment, hib)
    an.on_test(best, runs, hib)
    check = study.check_seeds or len(study.seeds)
    head = noise.headline(best.assignment, sg, task_noise, check_seeds=check)
    test = noise.against_noise(head.expected, runs, sg, study.tasks, study.budget, hib,
                               seeds=len(study.seeds)) if head is not None else None
    best.expected = {**head.as_dict(), **(test.as_dict() if test else {})} if head is not None else None
    best.apart = all(len(g) == 1 for g in best.groups)
    if test is None or test.credible or best.apart:
        return best
    best.method = study.method
    alone = {t: [t] for t in sorted(study.tasks)}
    nothing = noise.headline(alone, sg, task_noise, check_seeds=check)  # every task alone: exactly 0
    apart = an.Grouping([[t] for t in sorted(study.tasks)], 0.0, alone, apart=True, within_budget=best.as_dict(),
                        ci=(0.0, 0.0), expected=nothing.as_dict() if nothing is not None else None)
    return an.on_test(apart, runs, hib)


def expected_gain(g: an.Gain, sg: noise.SeedGains, task_noise: dict[str, noise.TaskNoise]) -> GainRow:
    """A measured gain's row, with its posterior mean (``expected``: what new seeds should give)."""
    row = g.as_dict()
    by_seed = sg.get(g.group, {}).get(g.task)
    row["expected"] = noise.shrink(g.delta, len(by_seed), task_noise[g.task])[0] \
        if by_seed and g.task in task_noise else None
    return row


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
    return an.on_test(out, runs, study.higher_is_better)


def check_seed_list(study: Study, k: int) -> list[int]:
    """The new seeds of ``--check-seeds K``: the K after the study's."""
    return [max(study.seeds) + 1 + i for i in range(k)]


def check_result(study: Study, result: TransferResult, runs: list[an.Run]) -> CheckRow:
    """The check of a study's recommendation on new seeds (``runs``: the check runs): its total
    gain there per seed (each task in its group against itself alone at the same seed), with
    the t interval over the seeds, beside the study's estimate; it *held* where the new-seed
    total lies inside the study's 95% interval for a check at that many seeds."""
    chosen = result["grouping"].get("within_budget") or result["grouping"]
    assignment = chosen.get("assignment") or {}
    seeds = check_seed_list(study, study.check_seeds)
    expected = chosen.get("expected") or {}
    out: CheckRow = {"seeds": seeds, "groups": [g for g in chosen.get("groups", []) if len(g) > 1],
                     "assignment": assignment, "expected": expected.get("expected"),
                     "interval": expected.get("interval"), "runs": len(runs), "per_seed": {}, "total": None,
                     "ci": None, "held": None}
    if not out["groups"]:
        out["note"] = "every task alone: nothing to check (0 at any seed)"
        return out
    totals = an.grouping_totals(runs, assignment, study.higher_is_better)
    out["per_seed"] = {str(s): v for s, v in totals.items()}
    if sorted(totals) != seeds:
        out["note"] = f"the check has finished runs at {len(totals)} of its {len(seeds)} seeds"
        return out
    total = out["total"] = sum(totals.values()) / len(totals)
    ci = an.t_interval(list(totals.values()))
    out["ci"] = list(ci) if ci else None
    if out["interval"]:
        lo, hi = out["interval"]
        out["held"] = bool(lo <= total <= hi)
    return out


def to_confirm(result: TransferResult, failed: list[FailedRun] | None = None) -> list[list[str]]:
    """The groups of two or more tasks that the analysis proposes and that were never trained
    (nor tried and failed). Once they are trained the proposal is made again on their
    measured gains, and may move."""
    chosen = (result["proposed"] or {}).get("groups", [])
    tried = {an.group_of(r["group"]) for r in list(result["runs"]) + list(failed or [])}
    return [g for g in chosen if len(g) > 1 and an.group_of(g) not in tried]




def study_results(client: Any, parent: Any) -> TransferResult:
    """A study's results from MLflow alone (also while it runs or after it was interrupted:
    then its status says so and its cost counts the planned runs not yet finished)."""
    study = study_from_mlflow(client, parent.info.run_id)
    runs, affinity, failed, signals = read_study(client, parent.info.experiment_id, study)
    res = analyse(study, runs, affinity)
    if study.check_seeds:
        checks = study_runs(child_runs(client, parent.info.experiment_id, parent.info.run_id, role="check"),
                            study.main_metric, roles=("check",))
        res["check"] = check_result(study, res, checks)
    res["failed_runs"] = failed
    res["affinity_signals"] = signals
    res["status"] = parent.info.status
    return res
