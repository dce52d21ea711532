"""The imports every trial worker and every ``mtlo`` command pays, with Python's cyclic garbage
collector paused (``trainables/imports.py``) and not: CPU seconds in fresh processes, the two
ways alternating, medians and their ratio.

- ``worker``: what a trial worker imports before its first trial trains: Ray, Ray Tune, the
  trainable's module (torch), then the first ``build`` of a tiny-encoder trial (transformers' tokenizer and model code,
  the data read from the tokenization cache, filled once beforehand).
- ``command``: what ``mtlo search`` imports: the commands (config, torch), the search's
  runner (Ray Tune, Optuna), MLflow's client.

    .venv/bin/python -m benchmarks.imports [--repeats 9] [--out benchmarks/results/imports.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import contextlib, sys, time
import trainables.imports as ti
if sys.argv[2] == "on":
    ti.collector_paused = contextlib.nullcontext  # the collector left running
t = time.process_time()
if sys.argv[1] == "worker":
    import ray
    from ray import tune
    import orchestrator.runtime.trial  # what Ray imports to call the trainable: torch
    from trainables import build
    build({"encoder": {"model": "builtin:tiny-random", "max_length": 16},
           "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}},
           "train": {"epochs": 1, "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 32}})
else:
    with ti.collector_paused():
        from orchestrator import commands
    with ti.collector_paused():
        from orchestrator.search.runner import run_search
    with ti.collector_paused():  # as MlflowParents.warm imports it (orchestrator/store/tracking.py)
        from mlflow.tracking import MlflowClient
print(time.process_time() - t)
"""


def one(what: str, collector: str, env: dict[str, str]) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, what, collector], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--out", default=None, help="also write the results here (JSON)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtlo-imports-") as cache:
        env = {**os.environ, "MTLO_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        one("worker", "paused", env)  # fills the tokenization cache
        res: dict[str, dict[str, list[float]]] = {w: {"paused": [], "on": []} for w in ("worker", "command")}
        for i in range(args.repeats):
            for what in res:
                for collector in (("paused", "on") if i % 2 == 0 else ("on", "paused")):
                    res[what][collector].append(round(one(what, collector, env), 3))
    summary = {what: {"paused_median_s": statistics.median(r["paused"]), "on_median_s": statistics.median(r["on"]),
                      "ratio": round(statistics.median(r["paused"]) / statistics.median(r["on"]), 3), "runs": r}
               for what, r in res.items()}
    for what, s in summary.items():
        print(f"| {what} | {s['paused_median_s']:.2f} s | {s['on_median_s']:.2f} s | {s['ratio']:.2f}x |")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": "python -m benchmarks.imports " + " ".join(
            argv if argv is not None else sys.argv[1:]), "repeats": args.repeats, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
