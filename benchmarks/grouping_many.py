"""Grouping methods at more tasks than an exhaustive study affords, judged on new seeds.

Each method ran its own study (``mtlo transfer CONFIG --method M``; its runs, confirmations
included, in a runs table: ``mtlo report NAME --runs-table FILE``). Its recommendation is the
study's own conclusion, analysed again from the table alone. Every recommendation and the two
trivial groupings (every task together in one model, every task alone) are then trained
again at the seeds after the studies' and scored there (``grouping.holdout_scores``: each
task in the group its method chose for it, against new single-task baselines; total gain per
seed, its t interval, and the paired difference to ``--reference``'s). Cost: each study's
optimizer steps to the best epochs, the lookahead's measurements counted in training steps
for the methods whose all-tasks runs measure it (benchmarks/affinity_cost.py).

    python -m benchmarks.grouping_many --config benchmarks/configs/ten_tasks_tiny.yaml \\
        --study pairwise=benchmarks/results/tables/ten-tiny-pairwise.csv \\
        --study surrogate=benchmarks/results/tables/ten-tiny-surrogate.csv \\
        --study affinity=benchmarks/results/tables/ten-tiny-affinity.csv \\
        --holdout-table benchmarks/results/tables/ten-tiny-holdout.csv [--train-holdout sqlite:///PATH/mlflow.db] \\
        [--out benchmarks/results/grouping_ten_tasks_tiny.json]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.grouping import emit, holdout, load_study, lookahead_cost_file, lookahead_steps
from orchestrator.domain import mean_matrix
from orchestrator.store.runs import read_runs_table, table_affinity, table_runs
from orchestrator.transfer import analysis as an
from orchestrator.transfer.methods import method as method_of
from orchestrator.transfer.results import analyse


def conclude(config: str, method: str, table: Path, budget: int) -> tuple[Any, list[an.Run], dict[str, Any]]:
    """A method's study from its runs table: (study, runs, its analysis as mtlo transfer ended it)."""
    rows = read_runs_table(table)
    study = replace(load_study(config, rows, budget), method=method)
    runs = table_runs(rows, study.main_metric)
    measured = method_of(method).measures_affinity
    return study, runs, dict(analyse(study, runs, mean_matrix(table_affinity(rows)) if measured else None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--study", action="append", required=True, metavar="METHOD=TABLE",
                    help="a method's study as its runs table (repeat for each method)")
    ap.add_argument("--budget", type=int, default=2)
    ap.add_argument("--reference", default="pairwise", help="the method the others are compared with (paired)")
    ap.add_argument("--holdout-table", required=True)
    ap.add_argument("--train-holdout", default=None, metavar="TRACKING_URI",
                    help="train what --holdout-table lacks into this MLflow store, then rewrite the table")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from orchestrator.config import load_config

    per = float(json.loads(lookahead_cost_file(load_config(args.config, []).encoder.model).read_text())
                ["lookahead_steps_per_measurement"])
    out: dict[str, Any] = {"config": args.config, "budget": args.budget, "methods": {}}
    choices: dict[str, dict[str, list[str]]] = {}
    study: Any = None
    for spec in args.study:
        method, _, table = spec.partition("=")
        study, runs, res = conclude(args.config, method, Path(table), args.budget)
        steps = sum(r.steps for r in runs)
        look = lookahead_steps(method, study, runs, per)
        out["methods"][method] = {
            "table": table, "seeds": study.seeds, "runs": len(runs), "task_sets": len({r.group for r in runs}),
            "train_steps": steps, "lookahead_steps": look, "compute": steps + look,
            "groups": res["grouping"]["groups"], "confirmed": res["grouping"]["confirmed"],
            "score_on_choosing_seeds": res["grouping"]["score"], "ci_on_choosing_seeds": res["grouping"]["ci"],
            "negative_transfer": len(res["negative_transfer"]),
            "negative_transfer_raw": sum(1 for g in res["gains"] if g["p"] is not None and g["p"] < 0.05
                                         and g["delta"] < 0 and g["n"] >= an.MIN_SEEDS),
            "surrogate_cv": (res.get("surrogate") or {}).get("cv"),
        }
        choices[method] = res["grouping"]["assignment"]
        out["tasks"], out["seeds"] = study.tasks, study.seeds
    ref = out["methods"][args.reference]["compute"]
    for m in out["methods"].values():
        m["compute_vs_reference"] = m["compute"] / ref if ref else None
    choices["all_together"] = {t: sorted(study.tasks) for t in study.tasks}
    choices["all_apart"] = {t: [t] for t in study.tasks}
    out["holdout"] = holdout(args.config, study, choices, Path(args.holdout_table), args.train_holdout,
                             ref=args.reference)
    emit(out, args.out)


if __name__ == "__main__":
    main()
