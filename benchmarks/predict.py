"""Inference: ``mtlo predict``'s throughput on CPU against the training loop's own evaluation,
and the size of a logged MiniLM-L6 model.

    .venv/bin/python -m benchmarks.predict [--repeats 3] [--out benchmarks/results/predict.json]

MiniLM-L6 (6 layers, max_length 64), the built-in tasks of benchmarks/configs/five_tasks.yaml,
the models untrained (speed and size do not depend on the weights' values). Both sides score
the same held-out test texts with batches of 64 on the same threads:

- ``predict``: what ``mtlo predict`` runs after loading: :class:`trainables.serving.Predictor`
  from a saved model folder, raw texts in (tokenizing them), a dict per text out;
- ``evaluate``: the loop's evaluation (``trainables.evaluate(exp, split="test")``) on data the
  cache already tokenized, metrics out.

One task (rt_polarity, its 853 test sentences) and all five (every text of the five test
splits through its own task for ``evaluate``; rt's test sentences through all five tasks for
``predict``, whose sentence-level tasks share one encoder pass). Median of ``--repeats``, the
two sides alternating. The size: the five-task model logged to a temporary MLflow store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from trainables import build, evaluate
from trainables.data import raw_splits
from trainables.serving import Predictor, save_model

ROOT = Path(__file__).resolve().parent.parent


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def texts_of(exp, task: str) -> list[str]:
    test = raw_splits(task, exp.spec.tasks[task], exp.spec.train).test
    return [" ".join(t) if isinstance(t, list) else t for t in test.texts]


def measure(exp, folder: Path, texts: list[str], repeats: int) -> dict:
    predictor = Predictor(folder, device="cpu")
    n_eval = sum(len(d.test) for d in exp.data.values())
    predictor.predict(texts[:64])  # warm both up (first-call allocations)
    evaluate(exp, split="test")
    times: dict[str, list[float]] = {"predict": [], "evaluate": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict(texts, batch_size=64)
        times["predict"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        evaluate(exp, split="test", batch_size=64)
        times["evaluate"].append(time.perf_counter() - t0)
    predict_s, eval_s = statistics.median(times["predict"]), statistics.median(times["evaluate"])
    return {"tasks": exp.tasks, "predict_texts": len(texts), "evaluate_examples": n_eval,
            "predict_s": [round(t, 3) for t in times["predict"]],
            "evaluate_s": [round(t, 3) for t in times["evaluate"]],
            "predict_per_s": round(len(texts) / predict_s, 1), "evaluate_per_s": round(n_eval / eval_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "benchmarks" / "configs" / "five_tasks.yaml"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    full = yaml.safe_load(Path(args.config).read_text())
    config = {k: full[k] for k in ("encoder", "tasks", "train")}
    config["train"]["max_eval_examples"] = None  # every test example
    config["train"]["device"] = "cpu"
    report: dict = {"config": args.config, "threads": torch.get_num_threads(), "repeats": args.repeats, "runs": []}
    with tempfile.TemporaryDirectory(prefix="mtlo-bench-") as tmp:
        for tasks in (["rt"], list(config["tasks"])):
            cfg = {**config, "tasks": {t: config["tasks"][t] for t in tasks}}
            exp = build(cfg)
            folder = save_model(exp, Path(tmp) / "-".join(tasks))
            row = measure(exp, folder, texts_of(exp, "rt"), args.repeats)
            row["weights_mb"] = round((folder / "weights.pt").stat().st_size / 2**20, 1)
            report["runs"].append(row)
            print(json.dumps(row), flush=True)
        import mlflow

        from orchestrator.store.models import log_model

        uri = f"sqlite:///{tmp}/mlflow.db"
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("bench")
        with mlflow.start_run() as run:
            pass
        t0 = time.perf_counter()
        model = log_model(uri, run.info.run_id, exp, register="bench", tags={}, info={})
        seconds = time.perf_counter() - t0
        local = Path(mlflow.artifacts.download_artifacts(model["model_uri"], dst_path=f"{tmp}/dl"))
        report["logged_model"] = {"tasks": exp.tasks, "mb": round(folder_size(local) / 2**20, 1),
                                  "weights_mb": round(folder_size(local / "artifacts") / 2**20, 1),
                                  "code_kb": round(folder_size(local / "code") / 2**10, 1),
                                  "log_and_register_s": round(seconds, 1)}
        print(json.dumps(report["logged_model"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
