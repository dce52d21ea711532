"""Quickstart variants (schedule, weighting, sharing, lr, epochs) on all five quickstart tasks,
two seeds each, plus wnut_ner alone: which settings let every task learn.

    python -m benchmarks.variants [--config benchmarks/configs/five_tasks.yaml] [--seeds 0 1]

Results of one run on an H100 are in benchmarks/results/variants_gpu.log (that run used
the quickstart with ``schedule: joint``, the setting before this study).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from trainables import train

VARIANTS = {
    "joint": {"schedule": "joint"}, "noclip": {"schedule": "joint", "grad_clip": None},
    "uncertainty": {"schedule": "joint", "weighting": "uncertainty"},
    "epochs6": {"schedule": "joint", "epochs": 6}, "round_robin": {"schedule": "round_robin"},
    "lr5e-5": {"schedule": "joint", "lr": 5e-5}, "pcgrad": {"schedule": "joint", "weighting": "pcgrad"},
    "dwa": {"schedule": "joint", "weighting": "dwa"}, "gradnorm": {"schedule": "joint", "weighting": "gradnorm"},
    "soft": {"schedule": "joint", "sharing": "soft"},
    "partial3": {"schedule": "joint", "sharing": "partial", "branch_layer": 3},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(Path(__file__).resolve().parent / "configs" / "five_tasks.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    base = yaml.safe_load(Path(args.config).read_text())
    cfg0 = {k: base[k] for k in ("encoder", "tasks", "train")}
    for name, over in VARIANTS.items():
        for seed in args.seeds:
            cfg = json.loads(json.dumps(cfg0))
            cfg["train"].update(over, seed=seed)
            r = train(cfg, lambda row: None)
            print(name, seed, {t: round(m[r.main_metric[t]], 3) for t, m in r.metrics.items()},
                  "best_epoch", r.best_epoch, flush=True)
    for over in ({}, {"epochs": 6}):
        cfg = json.loads(json.dumps(cfg0))
        cfg["tasks"] = {"ner": cfg0["tasks"]["ner"]}
        cfg["train"].update(over)
        r = train(cfg, lambda row: None)
        print("ner-alone", over, round(r.metrics["ner"]["f1"], 3), flush=True)


if __name__ == "__main__":
    main()
