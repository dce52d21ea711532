"""Is the GPU kept busy? One command, under 8 minutes on an H100-class GPU, that measures:

1. one trial (MiniLM-L6, batch 32, the quickstart's five tasks; ``benchmarks/configs/gpu.yaml``)
   trained in this process: training examples/s from epoch 2 on, the first epoch's warm-up
   (its extra seconds over a later epoch) reported apart, peak GPU memory, and the GPU's busy
   share while it trained (``nvidia-smi`` sampled every 0.5 s);
2. the same trial with ``train.compile: true``;
3. a real ``mtlo search`` of that config at 1, 4 and 8 trials per GPU (fractional GPUs, all
   trials at once): wall time, trials/hour, GPU busy share (mean and median of the samples
   while trials ran) and peak GPU memory.

Results go to ``--out`` (JSON) with the GPU's name, and a table to stdout for BENCHMARKS.md.

    python -m benchmarks.gpu [--out benchmarks/results/gpu.json]
    python -m benchmarks.gpu --dry-run --out /tmp/gpu.json     # CPU, tiny encoder: every step, no figures

``--dry-run`` runs every step on the CPU with the tiny random encoder and small slices (and
torch.compile's light ``aot_eager`` backend instead of inductor's minutes of C++ builds), so
that a typo does not waste a GPU machine's time; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.gpu_search import one as one_search
from benchmarks.gpu_search import sample_gpu

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "gpu.yaml"
TARGETS = {"train_examples_per_s": 5000.0, "gpu_busy_8_trials": 80.0, "warmup_seconds": 5.0}


def trial_config(dry_run: bool, examples: int | None, **train: Any) -> dict[str, Any]:
    cfg = yaml.safe_load(CONFIG.read_text())
    run = {"encoder": cfg["encoder"], "tasks": cfg["tasks"], "train": {**cfg["train"], **train}}
    if examples:
        run["train"]["max_train_examples"] = examples
    if dry_run:
        run["encoder"] = {"model": "builtin:tiny-random", "max_length": 32}
        run["train"].update(max_train_examples=64, max_eval_examples=32, device="cpu", num_threads=1)
    return run


def one_trial(cfg: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """Train ``cfg`` once here; examples/s from epoch 2 on, the first epoch's warm-up apart."""
    import torch

    from trainables import build, fit

    cuda = torch.cuda.is_available() and not dry_run
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rows: list[dict[str, Any]] = []
    samples: list[tuple[float, float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_gpu, args=(stop, samples), daemon=True)
    t0 = time.perf_counter()
    exp = build(cfg)
    built = time.perf_counter() - t0
    sampler.start()
    result = fit(exp, rows.append)
    stop.set()
    sampler.join()
    examples = [rows[0]["examples"]] + [b["examples"] - a["examples"] for a, b in zip(rows, rows[1:])]
    train_s = [r["train_seconds"] for r in rows]
    later = train_s[1:]
    steady = statistics.median(later) if later else None
    busy = [u for _, u, _ in samples]
    return {
        "epochs": len(rows), "steps": result.steps, "examples_per_epoch": examples,
        "train_seconds_per_epoch": [round(s, 3) for s in train_s],
        "build_seconds": round(built, 2),
        # epoch 2 onward: what a trial sustains once every batch shape (and compiled graph) is warm
        "train_examples_per_s": round(sum(examples[1:]) / sum(later), 1) if later else None,
        "first_epoch_examples_per_s": round(examples[0] / train_s[0], 1),
        # the first epoch's seconds beyond a later epoch's (scaled to its examples)
        "warmup_seconds": round(train_s[0] - steady * examples[0] / statistics.median(examples[1:]), 2)
        if steady else None,
        "examples_per_s_incl_eval": round(result.examples / result.seconds, 1),
        "peak_gpu_mem_mib": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        "gpu_busy_mean": round(statistics.fmean(busy), 1) if busy else None,
        "objective": round(result.objective, 4),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    ap.add_argument("--trials-per-gpu", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--examples", type=int, default=None, help="training examples per task (default: gpu.yaml's)")
    ap.add_argument("--search-examples", type=int, default=1000, help="per task, in each search's trials")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny encoder, small slices: checks every step")
    ap.add_argument("--address", default=None, help="a running Ray the searches join (default: each starts its own)")
    args = ap.parse_args(argv)
    import os

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("benchmarks.gpu: torch sees no GPU here (--dry-run runs every step on the CPU)")
    started = time.perf_counter()
    out: dict[str, Any] = {
        "device": "cpu (dry run)" if args.dry_run else torch.cuda.get_device_name(0),
        "torch": torch.__version__, "dry_run": args.dry_run, "config": str(CONFIG.relative_to(ROOT)),
        "command": "python -m benchmarks.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    for name, extra in (("one_trial", {}), ("one_trial_compiled", {"compile": "aot_eager" if args.dry_run else True})):
        out[name] = r = one_trial(trial_config(args.dry_run, args.examples, **extra), args.dry_run)
        print(f"{name}: {r['train_examples_per_s']} train examples/s (epoch 2 on), warm-up {r['warmup_seconds']} s, "
              f"peak {r['peak_gpu_mem_mib']} MiB, GPU busy {r['gpu_busy_mean']}%", file=sys.stderr, flush=True)
    out["searches"] = []
    with tempfile.TemporaryDirectory(prefix="mtlo-gpu-") as tmp:
        for k in args.trials_per_gpu:
            sets = [f"search.num_samples={k}", f"train.max_train_examples={args.search_examples}"]
            if args.dry_run:
                sets += ["encoder.model=builtin:tiny-random", "encoder.max_length=32", "train.max_train_examples=64",
                         "train.max_eval_examples=32", "train.device=cpu"]
            gpus = 0.0 if args.dry_run else 1.0 / k
            cpus = 1.0 if args.dry_run else max(1.0, (os.cpu_count() or 2) // k - 1)
            r = one_search(gpus, cpus, None, Path(tmp) / f"k{k}", config=CONFIG, sets=sets, address=args.address)
            r["trials_per_gpu"] = k
            out["searches"].append(r)
            print(f"{k} trial(s) per GPU: {r['finished']}/{r['trials']} finished in {r['wall_seconds']:.0f} s, "
                  f"GPU busy {r['gpu_util_mean']}% mean", file=sys.stderr, flush=True)
    one, eight = out["one_trial"], [s for s in out["searches"] if s["trials_per_gpu"] == 8]
    out["targets"] = {
        "train_examples_per_s": {"target": TARGETS["train_examples_per_s"], "measured": one["train_examples_per_s"]},
        "warmup_seconds": {"target": TARGETS["warmup_seconds"], "measured": one["warmup_seconds"]},
        "gpu_busy_8_trials": {"target": TARGETS["gpu_busy_8_trials"],
                              "measured": eight[0]["gpu_util_mean"] if eight else None},
    }
    out["seconds"] = round(time.perf_counter() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(table(out))


def table(out: dict[str, Any]) -> str:
    """The rows for BENCHMARKS.md."""
    lines = [f"GPU: {out['device']} (torch {out['torch']}); {out['seconds']} s in all", "",
             "| run | train examples/s (epoch 2 on) | warm-up s | peak MiB | GPU busy % |", "|---|---|---|---|---|"]
    for name in ("one_trial", "one_trial_compiled"):
        r = out[name]
        lines.append(f"| {name.replace('_', ' ')} | {r['train_examples_per_s']} | {r['warmup_seconds']} | "
                     f"{r['peak_gpu_mem_mib']} | {r['gpu_busy_mean']} |")
    lines += ["", "| trials per GPU | trials | wall s | trials/h | GPU busy % mean (median) | peak MiB |",
              "|---|---|---|---|---|---|"]
    for s in out["searches"]:
        lines.append(f"| {s['trials_per_gpu']} | {s['finished']}/{s['trials']} | {s['wall_seconds']:.0f} | "
                     f"{s['trials_per_hour']:.0f} | {s['gpu_util_mean']} ({s['gpu_util_median']}) | "
                     f"{s['gpu_mem_peak_mib']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
