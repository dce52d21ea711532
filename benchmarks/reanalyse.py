"""A committed study report (``report.json``, whose ``runs`` hold every run's per-task scores)
analysed again by today's analysis: nothing is trained, the runs are the data. Its report.md,
report.json and figures are written again beside it. Used when the analysis changes (the
false-discovery-rate control of a study's tests) and the study's MLflow store is gone.

    python -m benchmarks.reanalyse benchmarks/results/pairwise_five_tasks/report.json \\
        [--lower-is-better TASK ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from orchestrator.files import write_whole
from orchestrator.report import figures, markdown
from orchestrator.transfer import analysis as an
from orchestrator.transfer.results import analyse
from orchestrator.transfer.study import Study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report")
    ap.add_argument("--lower-is-better", nargs="*", default=[], help="tasks whose main metric is lower-is-better")
    args = ap.parse_args()
    path = Path(args.report)
    old = json.loads(path.read_text())
    if old["method"] not in ("pairwise", "exhaustive"):
        raise SystemExit(f"{path}: a {old['method']} study needs more than its runs (its affinity, curves)")
    tasks = old["tasks"]
    study = Study(old["name"], old["parent_run_id"], tasks, old["main_metric"],
                  {t: t not in args.lower_is_better for t in tasks}, old["method"], old["seeds"], old["budget"])
    runs = [an.Run(an.group_of(r["group"]), r["seed"], r["scores"], steps=r.get("best_step", 0),
                   run_id=r.get("run_id"), test=r.get("test") or {}) for r in old["runs"]]
    res: dict[str, Any] = dict(analyse(study, runs))
    res["status"] = old.get("status", "")
    res["failed_runs"] = old.get("failed_runs", [])
    drawn = figures(res, path.parent)
    write_whole(path.parent / "report.md", markdown(res, drawn))
    write_whole(path, json.dumps(res, indent=2, default=str) + "\n")
    raw = sum(1 for g in res["gains"] if g["p"] is not None and g["p"] < 0.05 and g["delta"] < 0)
    print(f"{path.parent / 'report.md'}: {len(runs)} runs, {len(res['negative_transfer'])} negative transfer(s) "
          f"({raw} at raw p < 0.05)")


if __name__ == "__main__":
    main()
