"""Quality: single-task and all-tasks hard sharing on five built-in tasks, MiniLM-L6,
quickstart sizes, next to each task's majority-class (or mean-prediction) baseline, on
validation (which chose each run's best epoch) and on the held-out test split (the best
epoch's weights, scored once).

    .venv/bin/python -m benchmarks.quality [--seeds 0 1 2] [--out benchmarks/results/quality.json]

The baseline predicts the most frequent training class (classification), the training
mean (regression: Pearson is undefined for a constant, reported as 0) or "O" for every
token (tagging: no spans, F1 0), scored on the same examples.

``--variants``: instead, the five tasks together under the variants of ``VARIANTS`` (schedule,
weighting, sharing, lr, epochs; the config with ``schedule: joint`` as the starting point), and
wnut_ner alone: which settings let every task learn (why the quickstart mixes batches
round-robin; one run on an H100: benchmarks/results/variants_gpu.log).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import yaml

from trainables import TrainResult, build, fit, train
from trainables.data import TaskData
from trainables.loop import Experiment
from trainables.tasks import task_type

ROOT = Path(__file__).resolve().parent.parent
TASKS = ["rt", "vader", "trec", "sms", "ner"]


def baseline(d: TaskData, split: str = "val") -> dict[str, float]:
    """Metrics on ``split`` of the constant predictor fitted on the training split."""
    tt = task_type(d.type)
    part = getattr(d, split)
    labels = part.labels
    if d.type == "classification":
        majority = int(torch.mode(d.train.labels).values)
        return tt.metrics([torch.full_like(labels, majority)], [labels], d)
    if d.type == "regression":
        mean = float(d.train.labels.mean())  # standardized scale
        return tt.metrics([torch.full_like(labels, mean)], [labels], d)
    # tagging: "O" everywhere; labels are flat per token, metrics want (rows, tokens)
    o = d.label_names.index("O")
    offs = part.offsets.tolist()
    rows = [labels[s:e] for s, e in zip(offs[:-1], offs[1:])]
    width = max(len(r) for r in rows)
    y = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        y[i, : len(r)] = r
    return tt.metrics([torch.where(y == -100, y, torch.full_like(y, o))], [y], d)


def run(config: dict, tasks: list[str], seed: int) -> tuple[TrainResult, Experiment]:
    cfg = json.loads(json.dumps(config))
    cfg["tasks"] = {t: config["tasks"][t] for t in tasks}
    cfg["train"]["seed"] = seed
    exp = build(cfg)
    result = fit(exp, lambda row: print(f"  {tasks} seed {seed} epoch {row['epoch']}: "
                                        f"objective {row['objective']:.4f}", file=sys.stderr))
    return result, exp


VARIANTS = {
    "joint": {"schedule": "joint"}, "noclip": {"schedule": "joint", "grad_clip": None},
    "uncertainty": {"schedule": "joint", "weighting": "uncertainty"},
    "epochs6": {"schedule": "joint", "epochs": 6}, "round_robin": {"schedule": "round_robin"},
    "lr5e-5": {"schedule": "joint", "lr": 5e-5}, "pcgrad": {"schedule": "joint", "weighting": "pcgrad"},
    "dwa": {"schedule": "joint", "weighting": "dwa"}, "gradnorm": {"schedule": "joint", "weighting": "gradnorm"},
    "soft": {"schedule": "joint", "sharing": "soft"},
    "partial3": {"schedule": "joint", "sharing": "partial", "branch_layer": 3},
}


def variants(config: dict, seeds: list[int]) -> None:
    """Every variant at every seed, then wnut_ner alone (3 and 6 epochs): main metrics printed."""
    for name, over in VARIANTS.items():
        for seed in seeds:
            cfg = json.loads(json.dumps(config))
            cfg["train"].update(over, seed=seed)
            r = train(cfg, lambda row: None)
            print(name, seed, {t: round(m[r.main_metric[t]], 3) for t, m in r.metrics.items()},
                  "best_epoch", r.best_epoch, flush=True)
    for over in ({}, {"epochs": 6}):
        cfg = json.loads(json.dumps(config))
        cfg["tasks"] = {"ner": config["tasks"]["ner"]}
        cfg["train"].update(over)
        r = train(cfg, lambda row: None)
        print("ner-alone", over, round(r.metrics["ner"]["f1"], 3), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "benchmarks" / "configs" / "five_tasks.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--variants", action="store_true", help="the training variants instead (see the module doc)")
    args = ap.parse_args()
    full = yaml.safe_load(Path(args.config).read_text())
    config = {k: full[k] for k in ("encoder", "tasks", "train")}
    if args.variants:
        variants(config, args.seeds)
        return
    scores: dict[str, dict[str, dict[str, list[float]]]] = {  # task -> alone|joint -> val|test -> per seed
        t: {k: {"val": [], "test": []} for k in ("alone", "joint")} for t in TASKS}
    base: dict[str, dict[str, float]] = {}
    main_metric: dict[str, str] = {}
    for seed in args.seeds:
        result, exp = run(config, TASKS, seed)
        for t in TASKS:
            m = main_metric[t] = exp.main_metric[t]
            scores[t]["joint"]["val"].append(result.metrics[t][m])
            scores[t]["joint"]["test"].append(result.test[t][m])
            base[t] = {s: baseline(exp.data[t], s)[m] for s in ("val", "test")}
        for t in TASKS:
            result, _ = run(config, [t], seed)
            scores[t]["alone"]["val"].append(result.metrics[t][main_metric[t]])
            scores[t]["alone"]["test"].append(result.test[t][main_metric[t]])
    rows = []
    for t in TASKS:
        row: dict = {"task": t, "source": config["tasks"][t]["source"], "metric": main_metric[t],
                     "baseline": {s: round(v, 4) for s, v in base[t].items()}}
        for kind, by_split in scores[t].items():
            for split, values in by_split.items():
                row[f"{kind}_{split}"] = [round(v, 4) for v in values]
                row[f"{kind}_{split}_mean"] = round(statistics.mean(values), 4)
        rows.append(row)
    report = {"config": args.config, "seeds": args.seeds, "rows": rows}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
    print("| task | metric | baseline val / test | alone: validation | alone: test | all 5: validation | "
          "all 5: test |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.3f} ({', '.join(f'{v:.3f}' for v in r[k])})"
                 for k in ("alone_val", "alone_test", "joint_val", "joint_test")]
        print(f"| {r['task']} | {r['metric']} | {r['baseline']['val']:.3f} / {r['baseline']['test']:.3f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
