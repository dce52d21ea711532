"""Do the specialised multi-task methods beat well-tuned static weights (Xin et al. 2022;
Kurin et al. 2022)? Each loss weighting and gradient aggregator, and per-task LoRA adapters,
on the five built-in tasks with every task's batch in every step (``schedule: joint``: the
aggregators act across the tasks of a step), against static weights of 1 and against static
weights tuned by an Optuna search with as many trials as there are specialised methods (the
same budget: one trial each).

    .venv/bin/python -m benchmarks.methods [--seeds 0 1 2] [--jobs 2] [--set train.KEY=VALUE ...]
        [--out benchmarks/results/methods.json]

For every method and seed: each task's main metric on the held-out test split, as a relative
gain over that task trained alone at the same seed (DESIGN's Δ), averaged over the tasks; the
mean over seeds with a 95% t interval; seconds per optimizer step and peak memory (the run's
resident peak on CPU, torch's allocated peak on a GPU) against hard sharing with static
weights, and the trainable parameters. The tuning search ranks its trials by the same gain on
validation at the first seed; its best trial is that seed's run. Every finished run is kept in
``--out`` as it ends, and a rerun with the same ``--out`` skips them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import apply_sets
from orchestrator.domain import relative_gain

ROOT = Path(__file__).resolve().parent.parent
SPECIALISED = ["uncertainty", "gradnorm", "dwa", "pcgrad", "famo", "upgrad", "mgda", "cagrad", "nash_mtl"]
METHODS: dict[str, dict[str, Any]] = {"static": {}, **{m: {"weighting": m} for m in SPECIALISED},
                                      "lora": {"sharing": "lora"}}
TUNED = "static, tuned"


def train_one(run: dict[str, Any]) -> dict[str, Any]:
    """One run in a worker process: its validation and test main metrics and its costs."""
    from trainables import build, fit

    exp = build(run)
    rows: list[dict[str, Any]] = []
    result = fit(exp, rows.append)
    memory = [v for r in rows for k, v in r.items() if k.startswith("memory/")]
    return {"val": {t: m[result.main_metric[t]] for t, m in result.metrics.items()},
            "test": {t: m[result.main_metric[t]] for t, m in result.test.items()},
            "higher_is_better": result.higher_is_better, "steps": result.steps,
            "s_per_step": sum(r["train_seconds"] for r in rows) / max(result.steps, 1),
            "peak_mib": max(memory) if memory else None, "trainable": rows[-1]["params/trainable"],
            "seconds": result.seconds}


class Bench:
    def __init__(self, config: dict[str, Any], out: Path, jobs: int) -> None:
        self.config, self.out = config, out
        self.done: dict[str, Any] = json.loads(out.read_text())["runs"] if out.is_file() else {}
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))

    def spec(self, tasks: list[str], seed: int, over: dict[str, Any]) -> dict[str, Any]:
        run = json.loads(json.dumps(self.config))
        run["tasks"] = {t: run["tasks"][t] for t in tasks}
        run["train"].update(over, seed=seed, schedule="joint")
        return run

    def many(self, jobs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Train every job not done yet (two at a time); each result saved as it comes."""
        todo = {k: self.pool.submit(train_one, run) for k, run in jobs.items() if k not in self.done}
        for key, future in todo.items():
            self.done[key] = future.result()
            self.save()
            print(f"{key}: test {({t: round(v, 3) for t, v in self.done[key]['test'].items()})}, "
                  f"{self.done[key]['s_per_step']:.2f} s/step", file=sys.stderr, flush=True)
        return {k: self.done[k] for k in jobs}

    def save(self, **extra: Any) -> None:
        data = json.loads(self.out.read_text()) if self.out.is_file() else {}
        data.update(extra, runs=self.done)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(data, indent=1))


def gain(run: dict[str, Any], singles: dict[str, dict[str, Any]], split: str) -> float:
    """The mean over tasks of each task's relative gain over its single-task run."""
    gains = [relative_gain(run[split][t], singles[t][split][t], run["higher_is_better"][t]) for t in run[split]]
    return statistics.mean(g for g in gains if g is not None)


def tune(bench: Bench, tasks: list[str], seed: int, trials: int, singles: dict[str, Any], jobs: int) -> str:
    """An Optuna TPE search of ``trials`` static-weight sets (log-uniform 0.1..10 per task) at
    ``seed``, ranked by the validation gain; returns the key of its best run."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    keys: list[str] = []
    while len(keys) < trials:
        batch = [study.ask() for _ in range(min(jobs, trials - len(keys)))]
        runs = {}
        for trial in batch:
            weights = {t: trial.suggest_float(f"task_weight.{t}", 0.1, 10.0, log=True) for t in tasks}
            runs[f"{TUNED}|trial{trial.number}|{seed}"] = bench.spec(tasks, seed, {"task_weights": weights})
        for trial, (key, result) in zip(batch, bench.many(runs).items()):
            result["weights"] = runs[key]["train"]["task_weights"]
            study.tell(trial, gain(result, singles, "val"))
            keys.append(key)
    bench.save()
    return max(keys, key=lambda k: gain(bench.done[k], singles, "val"))


def interval(values: list[float]) -> tuple[float, float]:
    """The mean and the half-width of its 95% t interval (0 for one value)."""
    from scipy import stats

    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, float(stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5)


def table(results: dict[str, list[dict[str, Any]]], singles: dict[int, dict[str, Any]], seeds: list[int]) -> list[str]:
    ref = results["static"]
    ref_step = statistics.median(r["s_per_step"] for r in ref)
    ref_mem = statistics.median(r["peak_mib"] for r in ref)
    lines = ["| method | mean relative gain on test (95% CI) | per seed | vs static, paired by seed (95% CI) | "
             "vs tuned static, paired (95% CI) | s/step vs hard + static | peak memory vs hard + static | "
             "trainable parameters |", "|---|---|---|---|---|---|---|---|"]
    base = [gain(r, singles[s], "test") for r, s in zip(ref, seeds)]
    tuned = [gain(r, singles[s], "test") for r, s in zip(results[TUNED], seeds)]

    def paired(per_seed: list[float], against: list[float]) -> str:
        diff, half = interval([g - b for g, b in zip(per_seed, against)])
        return f"{100 * diff:+.1f} pts (± {100 * half:.1f})"

    for name, runs in results.items():
        per_seed = [gain(r, singles[s], "test") for r, s in zip(runs, seeds)]
        mean, half = interval(per_seed)
        lines.append(f"| {name} | {100 * mean:+.1f}% (± {100 * half:.1f}) | "
                     f"{', '.join(f'{100 * g:+.1f}' for g in per_seed)} | "
                     f"{paired(per_seed, base)} | {paired(per_seed, tuned)} | "
                     f"{statistics.median(r['s_per_step'] for r in runs) / ref_step:.2f}x | "
                     f"{statistics.median(r['peak_mib'] for r in runs) / ref_mem:.2f}x | "
                     f"{runs[0]['trainable']:,} |")
    return lines


def per_task(results: dict[str, list[dict[str, Any]]], singles: dict[int, dict[str, Any]], seeds: list[int]
             ) -> list[str]:
    """Each task's relative gain on test over its single-task run, mean over seeds."""
    tasks = list(results["static"][0]["test"])
    lines = [f"| method | {' | '.join(tasks)} |", "|---|" + "---|" * len(tasks)]
    for name, runs in results.items():
        cells = []
        for t in tasks:
            gains = [relative_gain(r["test"][t], singles[s][t]["test"][t], r["higher_is_better"][t])
                     for r, s in zip(runs, seeds)]
            cells.append(f"{100 * statistics.mean(g for g in gains if g is not None):+.1f}%")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    alone = [f"{statistics.mean(singles[s][t]['test'][t] for s in seeds):.3f}" for t in tasks]
    return [*lines, f"| (alone: main metric on test) | {' | '.join(alone)} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "benchmarks" / "configs" / "five_tasks.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (one CPU thread each)")
    ap.add_argument("--tune-trials", type=int, default=len(SPECIALISED),
                    help="the tuning search's trials (default: one per specialised method)")
    ap.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "methods.json"))
    args = ap.parse_args()
    full = apply_sets(yaml.safe_load(Path(args.config).read_text()), args.sets)
    config = {k: full[k] for k in ("encoder", "tasks", "train")}
    config["train"]["num_threads"] = 1
    tasks = list(config["tasks"])
    bench = Bench(config, Path(args.out), args.jobs)
    bench.save(config=args.config, sets=args.sets, seeds=args.seeds, tune_trials=args.tune_trials)
    alone = bench.many({f"single|{t}|{s}": bench.spec([t], s, {}) for s in args.seeds for t in tasks})
    singles = {s: {t: alone[f"single|{t}|{s}"] for t in tasks} for s in args.seeds}
    best = tune(bench, tasks, args.seeds[0], args.tune_trials, singles[args.seeds[0]], args.jobs)
    weights = bench.done[best]["weights"]
    jobs = {f"{name}|all|{s}": bench.spec(tasks, s, over) for name, over in METHODS.items() for s in args.seeds}
    jobs.update({f"{TUNED}|all|{s}": bench.spec(tasks, s, {"task_weights": weights}) for s in args.seeds[1:]})
    runs = bench.many(jobs)
    runs[f"{TUNED}|all|{args.seeds[0]}"] = bench.done[best]
    results = {name: [runs[f"{name}|all|{s}"] for s in args.seeds] for name in [*METHODS, TUNED]}
    lines, tasks_lines = table(results, singles, args.seeds), per_task(results, singles, args.seeds)
    bench.save(tuned_weights=weights, table=lines, per_task=tasks_lines)
    print("\n".join([*lines, "", *tasks_lines]))


if __name__ == "__main__":
    main()
