"""The CLI commands' bodies: ``mtlo tasks`` and ``mtlo train``."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.table import Table

from orchestrator import tracking
from orchestrator.config import load_config
from orchestrator.display import epoch_line, err_console, out_console, task_table
from trainables.data import BUILTIN_TASKS, read_source
from trainables.errors import InputError
from trainables.spec import TaskSpec


def tasks_info() -> list[dict[str, Any]]:
    rows = []
    for name, bt in BUILTIN_TASKS.items():
        path = bt.path()
        installed = path is not None and path.is_file()
        size = None
        if installed:
            raw = read_source(name, TaskSpec(source=f"builtin:{name}"))
            size = len(raw.train)
        rows.append({
            "name": name, "type": bt.type, "classes": bt.classes, "examples": size,
            "installed": installed, "install": None if installed else bt.package.pip,
            "source": f"builtin:{name}", "description": bt.description,
        })
    return rows


def cmd_tasks(*, as_json: bool) -> int:
    rows = tasks_info()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(title="Built-in tasks (use as  source: builtin:NAME)", title_justify="left")
    for col in ("name", "type", "labels", "examples", "status", "description"):
        table.add_column(col, justify="right" if col == "examples" else "left")
    for r in rows:
        status = "installed" if r["installed"] else f"missing: {r['install']}"
        table.add_row(r["name"], r["type"], r["classes"],
                      str(r["examples"]) if r["examples"] is not None else "-", status, r["description"])
    out_console().print(table)
    return 0


def cmd_train(config_path: str, *, sets: list[str], as_json: bool) -> int:
    from trainables import build, fit

    cfg = load_config(config_path, sets)
    log = err_console
    exp = build(cfg.run_dict())  # bad data or encoder fails here, before any MLflow run exists
    sizes = ", ".join(f"{t} {len(d.train)}/{len(d.val)}" for t, d in exp.data.items())
    log.print(f"[bold]mtlo train[/bold] {cfg.name}: encoder {cfg.encoder.model} on {exp.device}; "
              f"examples (train/val): {sizes}")

    mlflow = tracking.configure(cfg)
    with mlflow.start_run(run_name=cfg.name) as run:
        mlflow.set_tags(tracking.run_tags(cfg, command="train"))
        mlflow.log_params(tracking.run_params(cfg))
        tracking.log_yaml(mlflow, cfg.model_dump(mode="json"), "config.yaml")

        def report(row: dict[str, Any]) -> None:
            mlflow.log_metrics(tracking.metric_row(row), step=int(row["epoch"]))
            log.print(epoch_line(row, exp.main_metric))

        try:
            result = fit(exp, report)
        except BaseException as exc:
            mlflow.set_tag("mtlo.error", f"{type(exc).__name__}: {exc}"[:5000])
            mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        summary = {
            "tasks": result.metrics, "main_metric": result.main_metric,
            "higher_is_better": result.higher_is_better, "objective": result.objective,
            "best_epoch": result.best_epoch, "best_step": result.best_step, "epochs": result.epochs,
            "train_steps": result.steps, "train_examples": result.examples,
            "seconds": result.seconds, "stopped": result.stopped,
            "data": {t: {"train": len(d.train), "val": len(d.val), "origin": d.origin}
                     for t, d in exp.data.items()},
        }
        tracking.log_json(mlflow, summary, "summary.json")
        best = {f"best/{t}/{m}": v for t, ms in result.metrics.items() for m, v in ms.items()}
        mlflow.log_metrics({**best, "best/objective": result.objective, "best_epoch": result.best_epoch,
                            "train_steps": result.steps, "train_seconds": result.seconds})
        mlflow.set_tag("mtlo.stopped", result.stopped)
        run_id = run.info.run_id
    if as_json:
        json.dump({"run_id": run_id, "tasks": result.metrics, "main_metric": result.main_metric},
                  sys.stdout, indent=2)
        print()
    else:
        out_console().print(task_table(result.metrics, result.main_metric,
                                   title=f"{cfg.name}: best epoch {result.best_epoch} of {result.epochs} "
                                         f"({result.steps} steps, {result.seconds:.0f}s), MLflow run {run_id}"))
    return 0


def cmd_search(config_path: str, *, sets: list[str], as_json: bool, resume: bool, address: str | None,
               num_samples: int | None) -> int:
    import os
    from pathlib import Path

    cfg = load_config(config_path, sets)
    if not (address or cfg.ray.address):
        # a local Ray listens on loopback only; Ray reads this once, when first imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from orchestrator.search.runner import run_search

    out = run_search(cfg, Path(config_path), num_samples=num_samples, resume=resume, address=address,
                     as_json=as_json)
    if as_json:
        json.dump({"name": out.name, "parent_run_id": out.parent_run_id, "trials": out.trials, "best": out.best},
                  sys.stdout, indent=2, default=str)
        print()
        return 0
    table = Table(title=f"search {out.name}: {len(out.trials)} trials, objective {out.objective.kind} "
                        f"(MLflow parent run {out.parent_run_id})", title_justify="left")
    for col in ("trial", "status", "epochs", "tasks", "objective", "params"):
        table.add_column(col)
    ranked = sorted(out.trials, key=lambda t: -float(t["objective"]) if isinstance(t["objective"], (int, float))
                    else float("inf"))
    for t in ranked:
        obj = t["objective"]
        shown = f"{obj:.4f}" if isinstance(obj, (int, float)) else json.dumps(obj) if obj else "-"
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        table.add_row(t["trial_id"], t["status"], str(t["epochs"]), ",".join(t["tasks"]), shown, params)
    out_console().print(table)
    if out.best is not None and "pareto_front" not in out.best:
        best = out.best
        out_console().print(f"best: trial {best['trial_id']} (MLflow run {best['run_id']}), objective "
                            f"{best['objective']:.4f}, params {json.dumps(best['params'], default=str)}")
        out_console().print(task_table(best["metrics"], out.objective.main_metric,
                                       title="best trial, per task (last reported epoch)"))
    elif out.best is not None:
        out_console().print(f"Pareto front: {len(out.best['pareto_front'])} trial(s): "
                            + ", ".join(t["trial_id"] for t in out.best["pareto_front"]))
    return 0


__all__ = ["InputError", "cmd_search", "cmd_tasks", "cmd_train"]
