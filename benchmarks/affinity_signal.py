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

    python benchmarks/affinity_signal.py --tracking-uri sqlite:///PATH/mlflow.db --study NAME \\
        [--signals-uri sqlite:///OTHER/mlflow.db --signals-study NAME2] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grouping import replay, value  # noqa: E402

from orchestrator.report import find_parent  # noqa: E402
from orchestrator.transfer import analysis as an  # noqa: E402
from orchestrator.transfer.runner import (  # noqa: E402
    _children,
    _matrices,
    _mean_matrix,
    estimator,
    read_study,
    study_from_mlflow,
    with_curves,
)


def within(z: dict[str, dict[str, float]], truth: dict[str, dict[str, float]], tasks: list[str]) -> float | None:
    """Mean over tasks t of the Spearman correlation of z[j][t] and truth[j][t] over j != t."""
    return an.agreement([z, truth], tasks)


def pooled(z: dict[str, dict[str, float]], truth: dict[str, dict[str, float]], tasks: list[str]) -> float:
    from scipy import stats

    pairs = [(z[j][t], truth[j][t]) for t in tasks for j in tasks if j != t]
    return float(stats.spearmanr(*zip(*pairs, strict=True))[0])


def pair_gain_reliability(study: Any, runs: list[an.Run]) -> float | None:
    """Within-task Spearman between two seeds of the single-seed pair gains, mean over pairs of seeds."""
    base = {t: s.mean for t, s in an.baselines(runs).items()}
    per: dict[int, dict[str, dict[str, float]]] = {}
    for r in runs:
        if len(r.group) == 2:
            for t in r.group:
                (j,) = [x for x in r.group if x != t]
                sign = 1.0 if study.higher_is_better[t] else -1.0
                per.setdefault(r.seed, {}).setdefault(j, {})[t] = sign * (r.scores[t] - base[t]) / abs(base[t])
    vals = [an.agreement([per[a], per[b]], study.tasks) for a, b in itertools.combinations(sorted(per), 2)]
    vals = [v for v in vals if v is not None]
    return statistics.fmean(vals) if vals else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--study", required=True, help="an exhaustive study (name or parent run id)")
    ap.add_argument("--signals-uri", default=None, help="store of the all-tasks runs (default: --tracking-uri)")
    ap.add_argument("--signals-study", default=None, help="their study (default: --study)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri)
    parent = find_parent(client, args.study)
    study = replace(study_from_mlflow(client, parent.info.run_id), method="exhaustive")
    runs, _, _, _ = read_study(client, parent.info.experiment_id, study)
    runs = with_curves(client, runs, study.main_metric)
    sclient = MlflowClient(args.signals_uri or args.tracking_uri)
    sparent = find_parent(sclient, args.signals_study or args.study)
    children = [c for c in _children(sclient, sparent.info.experiment_id, sparent.info.run_id)
                if c.data.tags.get("mtlo.tasks") and len(c.data.tags["mtlo.tasks"].split(",")) == len(study.tasks)]
    tasks = study.tasks
    gains = an.gains(runs, study.higher_is_better)
    every = an.group_of(tasks)
    lookahead = _mean_matrix(_matrices(children, "affinity"))
    est = estimator(replace(study, method="affinity"), [r for r in runs if len(r.group) in (1, len(tasks))],
                    [g for g in gains if g.group == every], lookahead)
    transfer = {j: {t: g.delta - (est.dilution(t, g.group) or 0.0) for g in gains
                    if len(g.group) == 2 and j in g.group for t in [g.task] if t != j} for j in tasks}
    table = an.gain_table(tasks, gains)
    opt = an.best_grouping(tasks, table, study.budget)
    out: dict[str, Any] = {"study": parent.info.run_name, "tasks": tasks, "signals_from": sparent.info.run_name,
                           "all_tasks_runs": len(children), "optimum": {"groups": opt.groups, "score": opt.score},
                           "pair_gain_reliability": pair_gain_reliability(study, runs), "signals": {}}
    for name, prefix in (("lookahead", "affinity"), ("gradient", "gaffinity"), ("cosine", "gcos")):
        ms = _matrices(children, prefix)
        if not ms:
            continue
        z = _mean_matrix(ms)
        res, used = replay("affinity", replace(study, method="exhaustive"), runs, z)
        got = value(res["grouping"]["groups"], tasks, table)
        out["signals"][name] = {
            "runs": len(ms), "agreement": an.agreement(ms, tasks), "validity": within(z, transfer, tasks),
            "validity_pooled": pooled(z, transfer, tasks),
            "grouping": {"groups": res["grouping"]["groups"], "measured_total_gain": got, "gap": opt.score - got,
                         "relative_gap": (opt.score - got) / abs(opt.score),
                         "compute_fraction": sum(r.steps for r in used) / sum(r.steps for r in runs)},
        }
    text = json.dumps(out, indent=2, default=str)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
