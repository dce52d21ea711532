"""Does the affinity say who helps whom? Its agreement across seeds and with measured transfer.

The affinity method credits the transfer a task received in the all-tasks group to the task
the affinity names as its helper (orchestrator/transfer/predict.py). That is only as good as
the affinity's ranking of helpers. From one exhaustive study (which measured every pair at
every seed) this script reports, for each affinity the all-tasks runs measured (TAG's
lookahead, ten measurements a run; the first-order one from the training gradients at every
step, ``gradient``; and the cosine of those gradients, ``cosine``):

- ``agreement``: how far the all-tasks runs (one per seed) agree on the ranking of helpers:
  for each task t, the Spearman correlation between two runs of Z[j -> t] over the other
  tasks j, mean over tasks and pairs of runs (``analysis.agreement``);
- ``validity``: the same correlation between the affinity (mean over runs) and the measured
  pair transfer Δ_t({t, j}) − D_t({t, j}) (the pair's gain beyond the dilution that t's own
  learning curve predicts for half the steps), mean over tasks; ``validity_pooled`` over all
  ordered pairs at once;
- ``grouping``: the affinity method replayed with that affinity in the estimate
  (benchmarks/grouping.py's replay): its grouping, its gap to the exhaustive optimum.

And, as the ceiling for any predictor: ``pair_gain_reliability``, the within-task Spearman
between two seeds of the measured pair gains (single-seed; the 3-seed mean is steadier).

The all-tasks runs may come from another store (``--signals-uri``/``--signals-study``): a
study recorded before the gradient affinity existed gets it from a re-run of its all-tasks
group at the same seeds (``mtlo transfer CONFIG --method affinity --confirm-rounds 0 --set
train.gradient_affinity=true --set name=...`` trains it, with the baselines; the runs are
deterministic, and the lookahead they measure is the exhaustive study's to the last digit).

Without an exhaustive study (``--pairs-report``: the ``--json`` report of a pairwise study,
e.g. one trained on another machine whose store is gone), the truth is that report's pair
matrix, the mean over seeds of Δ_t({t, j}). Under the round-robin schedule every pair gives t
half the steps, so D_t({t, j}) is the same for every j and the within-task ``validity`` is
unchanged; ``validity_pooled`` (which D would shift) and ``grouping`` (which needs every
subset) are left out.

    python -m benchmarks.affinity_signal --tracking-uri sqlite:///PATH/mlflow.db --study NAME \\
        [--signals-uri sqlite:///OTHER/mlflow.db --signals-study NAME2] [--out FILE]
    python -m benchmarks.affinity_signal --pairs-report REPORT.json \\
        (--signals-uri sqlite:///OTHER/mlflow.db --signals-study NAME2 | --signals-json AFFINITY.json) [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.grouping import replay, value
from orchestrator.domain import mean_matrix
from orchestrator.store.runs import affinity_matrices, child_runs, find_parent, with_curves
from orchestrator.transfer import analysis as an
from orchestrator.transfer.results import estimator
from orchestrator.transfer.study import read_study, study_from_mlflow

SIGNALS = (("lookahead", "affinity"), ("gradient", "gaffinity"), ("cosine", "gcos"))


def within(z: dict[str, dict[str, float]], truth: dict[str, dict[str, float]], tasks: list[str]) -> float | None:
    """Mean over tasks t of the Spearman correlation of z[j][t] and truth[j][t] over j != t."""
    return an.agreement([z, truth], tasks)


def pooled(z: dict[str, dict[str, float]], truth: dict[str, dict[str, float]], tasks: list[str]) -> float:
    from scipy import stats

    pairs = [(z[j][t], truth[j][t]) for t in tasks for j in tasks if j != t]
    return float(stats.spearmanr(*zip(*pairs, strict=True))[0])


def pair_gain_reliability(tasks: list[str], higher_is_better: dict[str, bool], runs: list[an.Run]) -> float | None:
    """Within-task Spearman between two seeds of the single-seed pair gains, mean over pairs of seeds."""
    base = {t: s.mean for t, s in an.baselines(runs).items()}
    per: dict[int, dict[str, dict[str, float]]] = {}
    for r in runs:
        if len(r.group) == 2:
            for t in r.group:
                (j,) = [x for x in r.group if x != t]
                sign = 1.0 if higher_is_better[t] else -1.0
                scale = abs(base[t]) or 1.0  # within-task ranks: any positive scale, also for a baseline of 0
                per.setdefault(r.seed, {}).setdefault(j, {})[t] = sign * (r.scores[t] - base[t]) / scale
    got = [an.agreement([per[a], per[b]], tasks) for a, b in itertools.combinations(sorted(per), 2)]
    vals = [v for v in got if v is not None]
    return statistics.fmean(vals) if vals else None


def all_tasks_runs(uri: str, name: str, n: int) -> tuple[Any, list[Any]]:
    """A study's parent run and its finished-or-not children that trained all n tasks."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = find_parent(client, name)
    children = [c for c in child_runs(client, parent.info.experiment_id, parent.info.run_id)
                if c.data.tags.get("mtlo.tasks") and len(c.data.tags["mtlo.tasks"].split(",")) == n]
    return parent, children


def from_pairs_report(path: str, signals_uri: str | None = None, signals_study: str | None = None,
                      signals_json: str | None = None) -> dict[str, Any]:
    """Agreement and validity against a pairwise study's --json report (see the module doc);
    the affinities from the all-tasks runs of a store, or (``signals_json``) from an affinity
    study's ``--json`` output (its ``affinity_signals``: each affinity's agreement and mean
    matrix; no cosine there)."""
    from trainables.tasks import TASK_TYPES

    rep = json.loads(Path(path).read_text())
    tasks = list(rep["tasks"])
    direction = {m: up for tt in TASK_TYPES.values() for m, up in tt.higher_is_better.items()}
    hib = {t: direction[rep["main_metric"][t]] for t in tasks}
    pair = rep["pairwise"]
    truth = {j: {t: float(pair[t][j]) for t in tasks if t != j if pair[t][j] is not None} for j in tasks}
    runs = [an.Run(group=an.group_of(r["group"]), seed=int(r["seed"]), scores=r["scores"]) for r in rep["runs"]]
    out: dict[str, Any] = {"study": rep["name"], "tasks": tasks,
                           "pair_gain_reliability": pair_gain_reliability(tasks, hib, runs), "signals": {}}
    if signals_json:
        sig = json.loads(Path(signals_json).read_text())
        out.update(signals_from=sig["name"], all_tasks_runs=max(v["runs"] for v in sig["affinity_signals"].values()))
        for name, v in sig["affinity_signals"].items():
            out["signals"][name] = {"runs": v["runs"], "agreement": v["agreement"],
                                    "validity": within(v["matrix"], truth, tasks)}
        return out
    if not (signals_uri and signals_study):
        raise ValueError("the affinities: give signals_uri and signals_study, or signals_json")
    sparent, children = all_tasks_runs(signals_uri, signals_study, len(tasks))
    out.update(signals_from=sparent.info.run_name, all_tasks_runs=len(children))
    for name, prefix in SIGNALS:
        ms = affinity_matrices(children, prefix)
        if ms:
            out["signals"][name] = {"runs": len(ms), "agreement": an.agreement(ms, tasks),
                                    "validity": within(mean_matrix(ms), truth, tasks)}
    return out


def from_exhaustive(uri: str, name: str, signals_uri: str | None, signals_study: str | None) -> dict[str, Any]:
    """Agreement, validity and the replayed grouping against an exhaustive study."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = find_parent(client, name)
    study = replace(study_from_mlflow(client, parent.info.run_id), method="exhaustive")
    runs, _, _, _ = read_study(client, parent.info.experiment_id, study)
    runs = with_curves(client, runs, study.main_metric)
    tasks = study.tasks
    sparent, children = all_tasks_runs(signals_uri or uri, signals_study or name, len(tasks))
    gains = an.gains(runs, study.higher_is_better)
    every = an.group_of(tasks)
    lookahead = mean_matrix(affinity_matrices(children, "affinity"))
    est = estimator(replace(study, method="affinity"), [r for r in runs if len(r.group) in (1, len(tasks))],
                    [g for g in gains if g.group == every], lookahead)
    transfer = {j: {t: g.delta - (est.dilution(t, g.group) or 0.0) for g in gains
                    if len(g.group) == 2 and j in g.group for t in [g.task] if t != j} for j in tasks}
    table = an.gain_table(tasks, gains, neutral=an.zero_baselines(an.baselines(runs)))  # as analyse scores it
    opt = an.best_grouping(tasks, table, study.budget)
    out: dict[str, Any] = {"study": parent.info.run_name, "tasks": tasks, "signals_from": sparent.info.run_name,
                           "all_tasks_runs": len(children), "optimum": {"groups": opt.groups, "score": opt.score},
                           "pair_gain_reliability": pair_gain_reliability(tasks, study.higher_is_better, runs),
                           "signals": {}}
    for sname, prefix in SIGNALS:
        ms = affinity_matrices(children, prefix)
        if not ms:
            continue
        z = mean_matrix(ms)
        res, used = replay("affinity", replace(study, method="exhaustive"), runs, z)
        got = value(res["grouping"]["groups"], tasks, table)
        out["signals"][sname] = {
            "runs": len(ms), "agreement": an.agreement(ms, tasks), "validity": within(z, transfer, tasks),
            "validity_pooled": pooled(z, transfer, tasks),
            "grouping": {"groups": res["grouping"]["groups"], "measured_total_gain": got, "gap": opt.score - got,
                         "relative_gap": (opt.score - got) / abs(opt.score),
                         "compute_fraction": sum(r.steps for r in used) / sum(r.steps for r in runs)},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None)
    ap.add_argument("--study", default=None, help="an exhaustive study (name or parent run id)")
    ap.add_argument("--pairs-report", default=None, help="instead: a pairwise study's --json report")
    ap.add_argument("--signals-uri", default=None, help="store of the all-tasks runs (default: --tracking-uri)")
    ap.add_argument("--signals-study", default=None, help="their study (default: --study)")
    ap.add_argument("--signals-json", default=None,
                    help="with --pairs-report: the affinities from an affinity study's --json output instead")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.pairs_report:
        if not (args.signals_json or (args.signals_uri and args.signals_study)):
            ap.error("--pairs-report needs --signals-json, or --signals-uri and --signals-study")
        out = from_pairs_report(args.pairs_report, args.signals_uri, args.signals_study, args.signals_json)
    else:
        if not (args.tracking_uri and args.study):
            ap.error("give --tracking-uri and --study (an exhaustive study), or --pairs-report")
        out = from_exhaustive(args.tracking_uri, args.study, args.signals_uri, args.signals_study)
    text = json.dumps(out, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
