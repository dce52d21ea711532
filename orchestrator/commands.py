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


def loopback_unless(address: str | None) -> None:
    """A local Ray (no cluster address) listens on loopback only; Ray reads this setting once,
    when it is first imported, so it is set before any command imports Ray."""
    import os

    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def cmd_search(config_path: str, *, sets: list[str], as_json: bool, resume: bool, address: str | None,
               num_samples: int | None) -> int:
    from pathlib import Path

    cfg = load_config(config_path, sets)
    loopback_unless(address or cfg.ray.address)
    from orchestrator.search.runner import run_search

    out = run_search(cfg, Path(config_path), num_samples=num_samples, resume=resume, address=address,
                     as_json=as_json)
    from orchestrator.report import build_report

    _, _, folder = build_report(cfg.mlflow.tracking_uri, out.parent_run_id)
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
        shown = (f"{obj:.4f}" if isinstance(obj, (int, float)) else  # pareto: one value per task
                 "  ".join(f"{k.removeprefix('obj/')} {v:.4f}" for k, v in obj.items()) if obj else "-")
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
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


def _pct(v: float | None) -> str:
    from orchestrator.report import pct

    return pct(v, missing="-")


def _grouping_text(gr: dict[str, Any]) -> str:
    if not gr["groups"]:
        return f"not available: {gr.get('note', 'too few runs')}"
    from orchestrator.report import ci_clause

    return "  |  ".join("+".join(g) for g in gr["groups"]) + f"  total gain {_pct(gr['score'])} " \
        f"(measured{ci_clause(gr.get('ci'))})"


def cmd_transfer(config_path: str, *, sets: list[str], as_json: bool, resume: bool, address: str | None,
                 method: str | None, seeds: int, budget: int, confirm_rounds: int = 1,
                 groups: str | None = None) -> int:
    from pathlib import Path

    cfg = load_config(config_path, sets)
    loopback_unless(address or cfg.ray.address)
    from orchestrator.transfer.runner import parse_groups, run_transfer

    out = run_transfer(cfg, Path(config_path), method=method or "groups", seeds=seeds, budget=budget, resume=resume,
                       address=address, as_json=as_json, confirm_rounds=confirm_rounds,
                       groups=None if groups is None else parse_groups(groups))
    from orchestrator.report import build_report

    _, _, folder = build_report(cfg.mlflow.tracking_uri, out["parent_run_id"])
    if as_json:
        json.dump(out, sys.stdout, indent=2, default=str)
        print()
        return 0
    print_transfer(out)
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


def cmd_report(ref: str, *, tracking_uri: str | None, out: str | None, as_json: bool) -> int:
    import os
    from pathlib import Path

    from rich.markdown import Markdown

    from orchestrator.config import resolve_tracking_uri
    from orchestrator.report import build_report

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    uri = resolve_tracking_uri(uri, Path.cwd())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise InputError(f"--tracking-uri: no MLflow store at {uri[len('sqlite:///'):]}")
    res, md, folder = build_report(uri, ref, Path(out) if out else None)
    if as_json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
        return 0
    out_console().print(Markdown(md))
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


def print_transfer(out: dict[str, Any]) -> None:
    con = out_console()
    tasks = out["tasks"]
    base = Table(title=f"{out['name']}: single-task baselines ({len(out['seeds'])} seeds)", title_justify="left")
    for col in ("task", "metric", "mean", "std", "n"):
        base.add_column(col)
    for t in tasks:
        b = out["baselines"].get(t)
        base.add_row(t, out["main_metric"][t], *(("-",) * 3 if b is None else
                                                  (f"{b['mean']:.4f}", f"{b['std']:.4f}", str(b["n"]))))
    con.print(base)
    from orchestrator.report import affinity_note, check_command, few_seeds_note, noisy_note, runs_text, zero_note

    for note in (zero_note(out), noisy_note(out), affinity_note(out.get("affinity_signals") or {})):
        if note:
            con.print(f"[yellow]{note}[/yellow]")
    mat = Table(title="pairwise transfer A[row, col] = gain of row when trained with col (relative to alone)",
                title_justify="left")
    mat.add_column("task")
    for t in tasks:
        mat.add_column(t, justify="right")
    sig = {(g["task"], tuple(g["group"])): g["significant"] for g in out["gains"]}
    zero = set(out.get("zero_baselines") or [])
    for i in tasks:
        cells = []
        for j in tasks:
            v = out["pairwise"][i][j]
            mark = "*" if i != j and sig.get((i, tuple(sorted((i, j))))) else ""
            cells.append("" if i == j else "n/a" if i in zero else _pct(v) + mark)
        mat.add_row(i, *cells)
    con.print(mat)
    con.print("* significant (Welch's t-test over seeds, p < 0.05)")
    neg = out["negative_transfer"]
    if neg:
        con.print("[bold]negative transfer[/bold] (significant losses):")
        for g in neg:
            con.print(f"  {g['task']} with {'+'.join(x for x in g['group'] if x != g['task'])}: "
                      f"{_pct(g['delta'])}  95% CI [{_pct(g['ci'][0])}, {_pct(g['ci'][1])}], p={g['p']:.3g}")
    else:
        con.print("negative transfer: none significant")
    few = few_seeds_note(out)
    if few:
        con.print(f"[yellow]{few}[/yellow]")
    if out.get("checked"):
        seeds = ", ".join(map(str, out["seeds"]))
        con.print(f"[bold]the task sets given[/bold] on seeds {seeds}: " + _grouping_text(out["checked"]))
    gr = out["grouping"]
    con.print(f"[bold]recommended grouping[/bold] (at most {len(gr['groups'])} model(s)): "
              + _grouping_text(gr)
              + ("" if gr["confirmed"] or not out.get("proposed") else
                 "  (the estimates propose " + "  |  ".join("+".join(g) for g in out["proposed"]["groups"])
                 + ", not all trained: --resume --confirm-rounds N trains them)"))
    check = check_command(out)
    if check:
        con.print(f"  best of the trained groups on these seeds; to check it on new seeds: {check}")
    failed = out.get("failed_runs") or []
    if failed:
        con.print(f"[bold]{len(failed)} run(s) failed or diverged[/bold] (left out of every figure): "
                  + ", ".join(f"{'+'.join(r['group'])} seed {r['seed']} {r['status']}" for r in failed))
    con.print(f"cost: {runs_text(out)}, {out['cost']['train_steps']} optimizer steps to their best epochs; "
              f"MLflow parent run {out['parent_run_id']}")


__all__ = ["InputError", "cmd_report", "cmd_search", "cmd_tasks", "cmd_train", "cmd_transfer"]
