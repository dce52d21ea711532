"""GPU check of the trial function: every sharing mode x weighting method runs on CUDA under
bf16 autocast (tiny encoder), then a MiniLM-L6 run reports throughput, peak memory and metrics.

    python -m benchmarks.gpu_check [--encoder builtin:minilm-l6] [--examples 2000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from trainables import build, fit

TASKS = {"vader": "vader_movies", "trec": "trec_coarse", "sms": "sms_spam", "ner": "wnut_ner"}


def config(encoder: str, n: int, epochs: int, **train: object) -> dict:
    return {"encoder": {"model": encoder, "max_length": 64},
            "tasks": {t: {"source": f"builtin:{b}"} for t, b in TASKS.items()},
            "train": {"epochs": epochs, "batch_size": 32, "lr": 1e-4, "head_lr": 3e-3,
                      "max_train_examples": n, "max_eval_examples": 400, "device": "cuda", **train}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", default="builtin:minilm-l6")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "no CUDA device visible"
    out: dict = {"device": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported(),
                 "torch": torch.__version__, "modes": {}}
    for sharing in ("hard", "soft", "partial", "single"):
        for weighting in ("static", "uncertainty", "gradnorm", "dwa", "pcgrad"):
            exp = build(config("builtin:tiny-random", 64, 1, sharing=sharing, weighting=weighting, branch_layer=1))
            res = fit(exp, lambda row: None)
            assert next(exp.model.parameters()).is_cuda and math.isfinite(res.objective)
            out["modes"][f"{sharing}/{weighting}"] = round(res.objective, 4)
    torch.cuda.reset_peak_memory_stats()
    exp = build(config(args.encoder, args.examples, args.epochs))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    res = fit(exp, lambda row: print(f"epoch {row['epoch']}: objective {row['objective']:.4f} "
                                     f"({row['seconds']:.1f}s)", file=sys.stderr))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    out["minilm"] = {"encoder": args.encoder, "examples_per_task": args.examples, "epochs": res.epochs,
                     "steps": res.steps, "seconds_incl_eval": round(seconds, 2),
                     "train_examples_per_s_incl_eval": round(res.examples / seconds, 1),
                     "peak_gpu_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20),
                     "metrics": {t: round(m[res.main_metric[t]], 4) for t, m in res.metrics.items()},
                     "main_metric": res.main_metric}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
