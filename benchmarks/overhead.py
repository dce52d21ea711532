"""Orchestration overhead: the same N trials run three ways, in one run of this script.

1. ``mtlo``: ``mtlo search benchmarks/configs/overhead.yaml --json`` (a subprocess, as a
   user runs it: config checks, data check, local Ray, OptunaSearch, MLflow parent and
   child runs with per-epoch metrics and artifacts, per-epoch checkpoints).
2. ``handwritten``: the script a Ray-savvy user would write without mtlo (a subprocess):
   Ray Tune + ``OptunaSearch`` (fed the same configurations as ``points_to_evaluate``) +
   Ray's own ``MLflowLoggerCallback``, calling the same trial function
   (``trainables.train``) with the same resources and ``reuse_actors=True``; no checkpoints,
   no data check, no report.
3. ``sequential``: the same configurations one after another in one process, no Ray, no
   MLflow, one torch thread each (what every trial gets in 1 and 2). The sum of its trial
   times is the trial compute; ideal wall time = compute / concurrency.

The configurations come from mtlo's first run (Optuna's seeded TPE: the first 10 are its
seeded random start-up trials, the same in every run; checked). ASHA is off (``fifo``) so
every way runs every epoch. Data is tokenized once beforehand (every way reads the cache).
The ways alternate in order across repeats; the script prints medians and ratios, mtlo's
own time per phase of its driver (``--json``'s ``phases``: checks, start, trials, record,
report; the rest of its wall time is the process start and imports) and writes
``benchmarks/results/overhead.json``.

    .venv/bin/python -m benchmarks.overhead [--trials 8] [--repeats 3] [--epochs N] [--no-sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "benchmarks" / "configs" / "overhead.yaml"
BIN = Path(sys.executable).parent

HANDWRITTEN = r'''
import json, os, sys, time
import optuna, ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.search.optuna import OptunaSearch
import yaml
from trainables import train

base = yaml.safe_load(open(sys.argv[1]))
configs = json.load(open(sys.argv[2]))
workdir = sys.argv[3]

def trial(config):
    run = {k: json.loads(json.dumps(base[k])) for k in ("encoder", "tasks", "train")}
    run["train"].update(config)
    run["train"]["num_threads"] = 1
    def report(row):
        tune.report({k: v for k, v in row.items() if isinstance(v, (int, float))})
    train(run, report)

ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
         log_to_driver=False, logging_level="ERROR")
space = {"lr": optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True),
         "weighting": optuna.distributions.CategoricalDistribution(["static", "uncertainty", "dwa"])}
searcher = OptunaSearch(space=space, metric="objective", mode="max", points_to_evaluate=configs,
                        sampler=optuna.samplers.TPESampler(seed=0))
tuner = tune.Tuner(
    tune.with_resources(trial, {"cpu": 1}),
    tune_config=tune.TuneConfig(search_alg=searcher, num_samples=len(configs), max_concurrent_trials=2,
                                reuse_actors=True),
    run_config=tune.RunConfig(
        name="handwritten", storage_path=os.path.join(workdir, "ray_results"), verbose=0,
        callbacks=[MLflowLoggerCallback(tracking_uri="sqlite:///" + os.path.join(workdir, "mlflow.db"),
                                        experiment_name="handwritten", save_artifact=False)]))
t0 = time.perf_counter()
grid = tuner.fit()
print(json.dumps({"errors": sum(1 for r in grid if r.error is not None), "trials": len(grid),
                  "fit_seconds": time.perf_counter() - t0}))
'''

SEQUENTIAL = r'''
import json, sys, time
import yaml
from trainables import train

base = yaml.safe_load(open(sys.argv[1]))
configs = json.load(open(sys.argv[2]))
seconds = []
for config in configs:
    run = {k: json.loads(json.dumps(base[k])) for k in ("encoder", "tasks", "train")}
    run["train"].update(config)
    run["train"]["num_threads"] = 1
    t0 = time.perf_counter()
    train(run, lambda row: None)
    seconds.append(time.perf_counter() - t0)
print(json.dumps({"trial_seconds": seconds}))
'''


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def run_mtlo(config: Path, n: int, env: dict[str, str], work: Path, tag: str
             ) -> tuple[float, list[dict[str, Any]], float, dict[str, float]]:
    work.mkdir(parents=True)
    seconds, stdout = _run([str(BIN / "mtlo"), "search", str(config), "--json", "--num-samples", str(n),
                            "--set", f"name=overhead-{tag}",
                            "--set", f"mlflow.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                            "--set", f"ray.storage={work / 'ray_results'}"], env, work)
    out = json.loads(stdout)
    bad = [t for t in out["trials"] if t["status"] != "FINISHED"]
    if bad:
        raise SystemExit(f"mtlo: {len(bad)} trial(s) did not finish: {bad}")
    configs = [{k: t["params"][k] for k in ("lr", "weighting")} for t in out["trials"]]
    in_trials = sum(t["seconds"] for t in out["trials"])  # training time as Ray measured it per trial
    return seconds, sorted(configs, key=lambda c: json.dumps(c, sort_keys=True)), in_trials, out["phases"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="train.epochs (default: the config's)")
    ap.add_argument("--no-sequential", action="store_true",
                    help="skip the sequential way (no ideal wall time; a third of the run's time saved)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "overhead.json"))
    args = ap.parse_args()

    base = yaml.safe_load(CONFIG.read_text())
    if args.epochs is not None:
        base["train"]["epochs"] = args.epochs
    ways = ("mtlo", "handwritten") if args.no_sequential else ("mtlo", "handwritten", "sequential")
    with tempfile.TemporaryDirectory(prefix="mtlo-overhead-") as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "overhead.yaml"
        config.write_text(yaml.safe_dump({**base, "search": {**base["search"],
                                                             "space": str(CONFIG.parent / base["search"]["space"])}}))
        env = {**os.environ, "MTLO_CACHE_DIR": str(tmp / "cache"), "MLFLOW_DISABLE_TELEMETRY": "true",
               "RAY_AIR_NEW_OUTPUT": "0", "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
        # tokenize once: every way below reads the cache
        _run([sys.executable, "-c", "import sys, yaml; from trainables import inspect_tasks; "
              "inspect_tasks(yaml.safe_load(open(sys.argv[1])))", str(config)], env, ROOT)
        (tmp / "hand.py").write_text(HANDWRITTEN)
        (tmp / "seq.py").write_text(SEQUENTIAL)

        walls: dict[str, list[float]] = {w: [] for w in ways}
        compute: list[float] = []
        hand_fit: list[float] = []
        mtlo_trial_seconds: list[float] = []
        mtlo_phases: list[dict[str, float]] = []
        configs: list[dict[str, Any]] | None = None
        for rep in range(args.repeats):
            order = ways[rep % len(ways):] + ways[:rep % len(ways)]  # rotating; mtlo first at first (its configs)
            for way in order:
                work = tmp / f"{way}-{rep}"
                if way == "mtlo":
                    seconds, seen, in_trials, phases = run_mtlo(config, args.trials, env, work, str(rep))
                    mtlo_trial_seconds.append(in_trials)
                    mtlo_phases.append(phases)
                    if configs is None:
                        configs = seen
                        (tmp / "configs.json").write_text(json.dumps(configs))
                    elif seen != configs:
                        raise SystemExit(f"mtlo proposed other configurations in repeat {rep}: {seen}")
                elif way == "handwritten":
                    work.mkdir(parents=True)
                    seconds, stdout = _run([sys.executable, str(tmp / "hand.py"), str(config),
                                            str(tmp / "configs.json"), str(work)], env, work)
                    out = json.loads(stdout.strip().splitlines()[-1])
                    if out["errors"]:
                        raise SystemExit(f"handwritten: {out['errors']} trial(s) failed")
                    hand_fit.append(out["fit_seconds"])
                else:
                    seconds, stdout = _run([sys.executable, str(tmp / "seq.py"), str(config),
                                            str(tmp / "configs.json")], env, ROOT)
                    compute.append(sum(json.loads(stdout.strip().splitlines()[-1])["trial_seconds"]))
                walls[way].append(seconds)
                print(f"repeat {rep} {way}: {seconds:.1f}s", flush=True)

    med = {k: statistics.median(v) for k, v in walls.items()}
    phases_med = {k: statistics.median(p[k] for p in mtlo_phases) for k in mtlo_phases[0]}
    # everything but the trials: mtlo's wall less its trials phase (Ray Tune's fit); the script's
    # wall less its fit (which also opens its MLflow store, in MLflowLoggerCallback's setup)
    mtlo_rest = [w - p["trials"] for w, p in zip(walls["mtlo"], mtlo_phases, strict=True)]
    hand_rest = [w - f for w, f in zip(walls["handwritten"], hand_fit, strict=True)]
    result: dict[str, Any] = {
        "command": "python -m benchmarks.overhead " + " ".join(sys.argv[1:]),
        "trials": args.trials, "repeats": args.repeats, "epochs": base["train"]["epochs"], "configs": configs,
        "wall_seconds": walls, "median_wall_seconds": med,
        "paired_wall_differences": [m - h for m, h in zip(walls["mtlo"], walls["handwritten"], strict=True)],
        "mtlo_wall_minus_handwritten": med["mtlo"] - med["handwritten"],
        "ratio_mtlo_to_handwritten": med["mtlo"] / med["handwritten"],
        "mtlo_trials_phase": [p["trials"] for p in mtlo_phases], "handwritten_fit": hand_fit,
        "mtlo_all_but_trials": mtlo_rest, "handwritten_all_but_fit": hand_rest,
        "median_all_but_trials": {"mtlo": statistics.median(mtlo_rest), "handwritten": statistics.median(hand_rest)},
        # mtlo's driver, per phase (median over repeats); the rest of its wall: process start, imports, exit
        "mtlo_phases_median": phases_med,
        # the same trials' own time inside mtlo's run (two at a time on two cores), summed
        "mtlo_in_trial_seconds": mtlo_trial_seconds,
        "cpu_count": os.cpu_count(),
    }
    if compute:
        concurrency = 2
        ideal = statistics.median(compute) / concurrency
        result.update({"trial_compute_seconds": compute, "ideal_wall_seconds": ideal,
                       "median_seconds_per_trial": statistics.median(compute) / args.trials,
                       "slowdown_in_trial_concurrent_vs_alone": statistics.median(mtlo_trial_seconds)
                       / statistics.median(compute),
                       "ratio_mtlo_to_sequential": med["mtlo"] / med["sequential"],
                       "efficiency_mtlo": ideal / med["mtlo"], "efficiency_handwritten": ideal / med["handwritten"]})
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("configs",)}, indent=2))


if __name__ == "__main__":
    main()
