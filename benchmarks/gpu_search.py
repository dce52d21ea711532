"""A short search on one GPU with fractional GPUs: trials/hour and GPU utilisation.

Runs ``mtlo search benchmarks/configs/gpu_search.yaml`` (8 equal-cost trials, FIFO) once
per ``--gpus-per-trial`` value (default: 0.25, four trials sharing the GPU, then 1, one at
a time), sampling ``nvidia-smi`` every 0.5 s while each runs, and writes the trials/hour,
the GPU utilisation (mean and median over the samples while trials ran) and the peak GPU
memory to ``--out``.

    python -m benchmarks.gpu_search [--gpus-per-trial 0.25 1] [--out results/gpu_search.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "gpu_search.yaml"


def sample_gpu(stop: threading.Event, rows: list[tuple[float, float, float]]) -> None:
    while not stop.is_set():
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True)
        except FileNotFoundError:  # no NVIDIA driver here (a CPU dry run): no samples
            return
        if out.returncode == 0 and out.stdout.strip():
            util, mem = (float(x) for x in out.stdout.strip().splitlines()[0].split(","))
            rows.append((time.time(), util, mem))
        stop.wait(0.5)


def one(gpus: float, cpus: float, samples: int | None, work: Path, *, config: Path = CONFIG,
        sets: list[str] | None = None, address: str | None = None) -> dict:
    work.mkdir(parents=True)
    cmd = [sys.executable, "-c", "from orchestrator.cli import run; run()", "search", str(config), "--json",
           "--set", f"name=gpu-{gpus}", "--set", f"resources.gpus_per_trial={gpus}",
           "--set", f"resources.cpus_per_trial={cpus}",
           "--set", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}", "--set", f"ray.storage={work / 'ray'}"]
    for s in sets or []:
        cmd += ["--set", s]
    if samples:
        cmd += ["--num-samples", str(samples)]
    if address:  # a running Ray (default: the command starts its own)
        cmd += ["--address", address]
    rows: list[tuple[float, float, float]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=sample_gpu, args=(stop, rows), daemon=True)
    sampler.start()
    t0 = time.time()
    out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.time() - t0
    stop.set()
    sampler.join()
    if out.returncode != 0:
        raise SystemExit(f"search failed ({out.returncode}):\n{out.stderr[-4000:]}")
    res = json.loads(out.stdout)
    trials = res["trials"]
    finished = [t for t in trials if t["status"] == "FINISHED"]
    # utilisation while trials ran: from the first sample above 0 to the last one
    busy = [i for i, r in enumerate(rows) if r[1] > 0]
    window = rows[busy[0]:busy[-1] + 1] if busy else []
    utils = [r[1] for r in window]
    return {
        "gpus_per_trial": gpus, "cpus_per_trial": cpus, "trials": len(trials), "finished": len(finished),
        "wall_seconds": wall, "trials_per_hour": len(finished) / wall * 3600,
        "median_trial_seconds": statistics.median(t["seconds"] for t in finished) if finished else None,
        "gpu_util_mean": statistics.fmean(utils) if utils else None,
        "gpu_util_median": statistics.median(utils) if utils else None,
        "gpu_busy_seconds": (window[-1][0] - window[0][0]) if window else 0.0,
        "gpu_mem_peak_mib": max((r[2] for r in rows), default=None),
        "best_objective": (res.get("best") or {}).get("objective"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpus-per-trial", type=float, nargs="+", default=[0.25, 1.0])
    ap.add_argument("--cpus", type=float, default=None,
                    help="CPUs per trial (default: the machine's CPUs / trials per GPU, less one)")
    ap.add_argument("--num-samples", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_search.json"))
    args = ap.parse_args()
    import torch

    runs: list[dict] = []
    results = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
               "command": "python -m benchmarks.gpu_search " + " ".join(sys.argv[1:]), "runs": runs}
    with tempfile.TemporaryDirectory(prefix="mtlo-gpu-") as tmp:
        for gpus in args.gpus_per_trial:
            cpus = args.cpus or max(1.0, (os.cpu_count() or 2) // max(1, round(1 / gpus)) - 1)
            r = one(gpus, cpus, args.num_samples, Path(tmp) / f"g{gpus}")
            print(json.dumps(r), flush=True)
            runs.append(r)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
