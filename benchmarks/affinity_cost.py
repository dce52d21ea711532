"""What measuring the affinity costs, in training steps of the same run.

The transfer benchmarks count compute as optimizer steps; the all-tasks runs also measure
the affinity. This times, in one process and interleaved (the machine is noisy: medians of
``--repeats``), the same all-tasks training (six built-in tasks, the tiny encoder, round-robin,
``--steps`` steps) two ways: plain, and with the lookahead every ``--every`` steps. Reported,
in training steps: one lookahead measurement (what benchmarks/grouping.py charges the affinity
method for each).

    python -m benchmarks.affinity_cost [--steps 120] [--every 12] [--repeats 3] [--encoder builtin:minilm-l6] \\
        [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from trainables.loop import build, fit

TASKS = {"rt": "rt_polarity", "imdb": "imdb", "tweets": "vader_tweets", "amazon": "vader_amazon",
         "coarse": "trec_coarse", "fine": "trec_fine"}


def config(steps: int, every: int | None, encoder: str = "builtin:tiny-random") -> dict:
    return {"encoder": {"model": encoder, "max_length": 64},
            "tasks": {k: {"source": f"builtin:{v}"} for k, v in TASKS.items()},
            "train": {"epochs": 1, "batch_size": 32, "lr": 1e-3, "head_lr": 3e-3, "schedule": "round_robin",
                      "max_train_examples": 600, "max_eval_examples": 8, "max_steps": steps, "seed": 0,
                      "num_threads": 1, "device": "cpu", "affinity_every": every}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--every", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encoder", default="builtin:tiny-random", help="e.g. builtin:minilm-l6")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ways = {"plain": None, "lookahead": args.every}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.repeats):
        for name, every in ways.items():
            exp = build(config(args.steps, every, args.encoder))
            t0 = time.perf_counter()
            fit(exp, lambda row: None)
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    step = med["plain"] / args.steps
    out = {"encoder": args.encoder, "steps": args.steps, "every": args.every, "repeats": args.repeats, "seconds": times,
           "median_seconds": med, "seconds_per_step": step,
           "lookahead_steps_per_measurement": (med["lookahead"] - med["plain"]) / (args.steps // args.every) / step,
           "shared_parameters": sum(p.numel() for p in
                                    build(config(1, None, args.encoder)).model.shared_parameters())}
    text = json.dumps(out, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
