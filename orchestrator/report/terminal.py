"""The end of ``mtlo search`` and ``mtlo transfer`` in the terminal: tables of typed results
(a search's trials, a study's baselines, transfer matrix and grouping)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table

from orchestrator.display import out_console, task_table
from orchestrator.report.text import (
    affinity_note,
    apart_text,
    check_command,
    check_text,
    ci_text,
    expected_clause,
    few_seeds_note,
    measured_clause,
    noisy_note,
    pct,
    raw_only_losses,
    runs_text,
    train_command,
    zero_note,
)
from orchestrator.transfer.shapes import GroupingRow, TransferResult


def print_search(name: str, parent_run_id: str, objective: Any, trials: list[dict[str, Any]],
                 best: dict[str, Any] | None) -> None:
    table = Table(title=f"search {name}: {len(trials)} trials, objective {objective.kind} "
                        f"(MLflow parent run {parent_run_id})", title_justify="left")
    for col in ("trial", "status", "epochs", "tasks", "objective", "params"):
        table.add_column(col)
    ranked = sorted(trials, key=lambda t: -float(t["objective"]) if isinstance(t["objective"], (int, float))
                    else float("inf"))
    for t in ranked:
        obj = t["objective"]
        shown = (f"{obj:.4f}" if isinstance(obj, (int, float)) else  # pareto: one value per task
                 "  ".join(f"{k.removeprefix('obj/')} {v:.4f}" for k, v in obj.items()) if obj else "-")
        params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        table.add_row(t["trial_id"], t["status"], str(t["epochs"]), ",".join(t["tasks"]), shown, params)
    out_console().print(table)
    if best is not None and "pareto_front" not in best:
        out_console().print(f"best: trial {best['trial_id']} (MLflow run {best['run_id']}), objective "
                            f"{best['objective']:.4f}, params {json.dumps(best['params'], default=str)}")
        out_console().print(task_table(best["metrics"], objective.main_metric, test=best.get("test") or None,
                                       title=f"best trial, per task, at its best epoch ({best.get('best_epoch')}: "
                                             "validation chose it; test is held out)"))
    elif best is not None:
        out_console().print(f"Pareto front: {len(best['pareto_front'])} trial(s): "
                            + ", ".join(t["trial_id"] for t in best["pareto_front"]))


def _pct(v: float | None) -> str:
    return pct(v, missing="-")


def _grouping_text(gr: GroupingRow, seeds: list[int], label: str = "on the seeds that chose it") -> str:
    if not gr["groups"]:
        return f"not available: {gr.get('note', 'too few runs')}"
    expected = expected_clause(gr)
    return "  |  ".join("+".join(g) for g in gr["groups"]) + "  total gain " \
        + (f"{expected}; " if expected else "") + measured_clause(gr, seeds, label)


def print_transfer(out: TransferResult) -> None:
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
    con.print(f"* significant (Welch's t-test over seeds, Benjamini-Hochberg adjusted p < 0.05 over the study's "
              f"{sum(1 for g in out['gains'] if g.get('p') is not None)} tests)")
    neg = out["negative_transfer"]
    if neg:
        con.print("[bold]negative transfer[/bold] (significant losses):")
        for g in neg:
            con.print(f"  {g['task']} with {'+'.join(x for x in g['group'] if x != g['task'])}: "
                      f"{_pct(g['delta'])}  95% CI [{ci_text(g['ci'], ', ')}], p={g['p'] or 0:.3g} "
                      f"(adjusted {g.get('p_adjusted') or 0:.3g})")
    else:
        con.print("negative transfer: none significant")
    raw_only = raw_only_losses(out)
    if raw_only:
        con.print(f"  {len(raw_only)} loss(es) at a raw p < 0.05 not significant after the adjustment for "
                  "the study's many tests: " + ", ".join(
                      f"{g['task']} with {'+'.join(x for x in g['group'] if x != g['task'])} {_pct(g['delta'])}"
                      for g in raw_only))
    few = few_seeds_note(out)
    if few:
        con.print(f"[yellow]{few}[/yellow]")
    fit = out.get("surrogate")
    if fit:
        found = [f"{j} helps {t}" for t, m in fit["tasks"].items() for j in m["helpers"]]
        found += [f"{j} hurts {t}" for t, m in fit["tasks"].items() for j in m["hurters"]]
        cv = fit.get("cv") or {}
        r2 = f"R² {cv['r2']:.2f} on left-out subsets" if cv.get("r2") is not None else "not cross-validated"
        con.print(f"[bold]surrogate model[/bold] ({r2}): " + ("; ".join(found) or "no coefficient clear of 0"))
    checked = out.get("checked")
    if checked:
        seeds = ", ".join(map(str, out["seeds"]))
        con.print(f"[bold]the task sets given[/bold] on seeds {seeds}: "
                  + _grouping_text(checked, out["seeds"], "measured"))
    _print_grouping(con, out)
    failed = out.get("failed_runs") or []
    if failed:
        con.print(f"[bold]{len(failed)} run(s) failed or diverged[/bold] (left out of every figure): "
                  + ", ".join(f"{'+'.join(r['group'])} seed {r['seed']} {r['status']}" for r in failed))
    con.print(f"cost: {runs_text(out)}, {out['cost']['train_steps']} optimizer steps to their best epochs; "
              f"MLflow parent run {out['parent_run_id']}")


def _print_grouping(con: Any, out: TransferResult) -> None:
    """The recommendation (or "train apart", the budget's grouping beside it), the check on new
    seeds, and the commands that check it and train its models."""
    gr, prop = out["grouping"], out.get("proposed")
    apart = apart_text(out)
    if apart:
        con.print(f"[bold]recommendation[/bold]: {apart}")
    else:
        con.print(f"[bold]recommended grouping[/bold] (at most {out.get('budget', len(gr['groups']))} model(s)): "
                  + _grouping_text(gr, out["seeds"])
                  + ("" if gr["confirmed"] or not prop else
                     "  (the estimates propose " + "  |  ".join("+".join(g) for g in prop["groups"])
                     + ", not all trained: --resume --confirm-rounds N trains them)"))
    check, train, held = check_command(out), train_command(out), check_text(out)
    if held:
        con.print(f"  {held}")
    if check:
        con.print(f"  to check it on new seeds: {check}")
    if train:
        con.print(f"  to train the models: {train}")
