"""False-alarm rate of the negative-transfer test on a planted null.

The null: ``small`` (200 rt_polarity sentences) paired with ``topic`` (1,000 trec_coarse
questions, an unrelated task; ``topic_copy`` of benchmarks/planted.py is an exact copy of
it). One ``mtlo transfer --method pairwise`` study trains ``small``, ``topic`` and
``small+topic`` at 3 x R seeds; the seeds are then cut into R disjoint triples, and each
triple is one independent replicate of what a user running the default ``--seeds 3`` would
see. The rate is how many replicates flag significant negative transfer of ``topic`` on
``small`` as ``mtlo transfer`` decides it (Welch's t-test; the p-value adjusted over the
replicate's tests, Benjamini-Hochberg, below 0.05), with a Clopper-Pearson interval; the rate
at a raw p < 0.05 beside it.

With two tasks the three methods train the same runs (the pair *is* the all-tasks group,
which exhaustive trains, pairwise trains, and affinity trains to measure the affinity), and
they apply the same test to them, so their false-alarm rates on this null are one figure.

    python -m benchmarks.null_rate --out /tmp/null --replicates 30 \\
        [--json benchmarks/results/null_rate.json]

``--analyse-only`` reads an existing study's runs from ``OUT/mlflow.db`` instead of training;
``--from-json FILE`` tests an earlier result's replicates again (their raw p-values, nothing
trained) under the false-discovery-rate control; ``--table FILE`` writes the study's runs table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks import planted
from orchestrator.store.runs import find_parent
from orchestrator.transfer import analysis as an
from orchestrator.transfer.study import load_runs, study_from_mlflow

TASK, PARTNER = "small", "topic"


def make(out: Path, encoder: str) -> Path:
    planted.make(out, encoder)
    cfg = yaml.safe_load((out / "planted.yaml").read_text())
    cfg["name"] = "null"
    cfg["tasks"] = {k: v for k, v in cfg["tasks"].items() if k in (TASK, PARTNER)}
    cfg["mlflow"]["experiment"] = "null"
    path = out / "null.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def replicates(runs: list[an.Run], seeds: list[int], hib: dict[str, bool], size: int = 3) -> list[dict[str, Any]]:
    """One replicate per disjoint block of ``size`` seeds: the test of every task of the pair."""
    out = []
    for i in range(len(seeds) // size):
        block = set(seeds[i * size:(i + 1) * size])
        rep = [r for r in runs if r.seed in block]
        for g in an.gains(rep, hib):
            out.append({"replicate": i, "seeds": sorted(block), "task": g.task, "partner":
                        [t for t in g.group if t != g.task][0], "delta": g.delta, "p": g.p,
                        "p_adjusted": g.p_adjusted, "ci": list(g.ci) if g.ci else None,
                        "significant": g.significant, "n": g.n})
    return out


def adjust(rows: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Replicates of an earlier result tested again as ``analysis.gains`` tests them now: the
    raw p-values of each replicate's tests adjusted together (Benjamini-Hochberg)."""
    out = []
    for i in sorted({r["replicate"] for r in rows}):
        rep = [dict(r) for r in rows if r["replicate"] == i]
        for r, q in zip(rep, an.fdr_adjusted([r["p"] for r in rep]), strict=True):
            r["p_adjusted"] = float(q)
            r["significant"] = bool(q < alpha and r["n"] >= an.MIN_SEEDS)
        out += rep
    return out


def rate(rows: list[dict[str, Any]], task: str, negative: bool, raw: bool = False) -> dict[str, Any]:
    """How many replicates flag ``task`` (``negative``: a significant loss; else either sign);
    ``raw``: at an unadjusted p < 0.05."""
    from scipy.stats import binomtest

    mine = [r for r in rows if r["task"] == task]
    flagged = sum(1 for r in mine if (r["p"] < 0.05 and r["n"] >= an.MIN_SEEDS if raw else r["significant"])
                  and (r["delta"] < 0 or not negative))
    ci = binomtest(flagged, len(mine)).proportion_ci(method="exact") if mine else None
    return {"replicates": len(mine), "flagged": flagged, "rate": flagged / len(mine) if mine else None,
            "ci95": [ci.low, ci.high] if ci else None}


def rates(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"false_alarm_negative": rate(rows, TASK, negative=True),
            "flagged_either_sign": rate(rows, TASK, negative=False),
            "false_alarm_negative_raw": rate(rows, TASK, negative=True, raw=True),
            "flagged_either_sign_raw": rate(rows, TASK, negative=False, raw=True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--replicates", type=int, default=30)
    ap.add_argument("--encoder", default="builtin:tiny-random")
    ap.add_argument("--analyse-only", action="store_true")
    ap.add_argument("--json", default=None, help="also write the result here")
    ap.add_argument("--from-json", default=None, help="an earlier result: its replicates tested again, nothing trained")
    ap.add_argument("--table", default=None, help="write the study's runs table here (.csv or .json)")
    args = ap.parse_args()
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text())
        rows = adjust(result["replicates"])
        result.update(rates(rows), replicates=rows)
        text = json.dumps(result, indent=2)
        if args.json:
            Path(args.json).write_text(text)
        print(text)
        return
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = None
    if not args.analyse_only:
        config = make(out, args.encoder)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "orchestrator.cli", "transfer", str(config), "--method", "pairwise",
                        "--seeds", str(3 * args.replicates), "--json"], cwd=out, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    parent = find_parent(client, "null")
    study = study_from_mlflow(client, parent.info.run_id)
    runs = load_runs(client, parent.info.experiment_id, parent.info.run_id, study.main_metric)
    rows = replicates(runs, sorted(study.seeds), study.higher_is_better)
    if args.table:
        from orchestrator.commands import write_runs_table

        write_runs_table(f"sqlite:///{out / 'mlflow.db'}", parent.info.run_id, Path(args.table))
    result = {
        "null": f"{TASK} paired with {PARTNER} (unrelated task)", "encoder": args.encoder,
        "runs": len(runs), "seeds": len(study.seeds), "seconds": seconds, **rates(rows),
        "all_seeds": [g.as_dict() for g in an.gains(runs, study.higher_is_better)],
        "replicates": rows,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
