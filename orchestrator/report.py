"""``mtlo report NAME_OR_RUN_ID``: a report of a transfer study or a search, rebuilt from
MLflow alone (also for a study that is still running or was interrupted).

Writes ``report.md`` and PNG figures to ``--out`` (default ``./reports/<run name>``, made safe as a folder name), logs them
on the parent run under ``report/`` and returns the figures as a dict (``--json``):

- transfer study: baselines, the pairwise transfer matrix (heat map), per-task gains with
  confidence intervals (bars), negative transfer, the recommended grouping with its
  evidence (measured or estimated gains), the cost;
- search: trials ranked by objective, the best configuration, the Pareto front (plot) for
  a multi-objective search.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from orchestrator import faults, tracking
from orchestrator.errors import ConfigError

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def find_parent(client: Any, ref: str) -> Any:
    """The parent run of a search or transfer study, by run id or by name (the latest)."""
    if _RUN_ID.match(ref):
        try:
            return client.get_run(ref)
        except Exception as exc:  # MLflow raises its own RestException / MlflowException
            raise ConfigError(f"report: no MLflow run with id {ref} ({type(exc).__name__})") from None
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"attributes.run_name = '{ref}'",
                              order_by=["attributes.start_time DESC"], max_results=50) if exps else []
    runs = [r for r in runs if r.data.tags.get("mtlo.role") in ("search", "transfer")]
    if not runs:
        raise ConfigError(f"report: no search or transfer study named '{ref}' in the MLflow store")
    return runs[0]


def _param(v: Any) -> str:
    """A param as MLflow stores it (text), numbers shortened: 0.00013366875 -> 0.000134."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(v) if str(v).lstrip("-").isdigit() else f"{f:.3g}"


def pct(v: float | None, missing: str = "–") -> str:
    """A relative gain as a signed percentage (``missing`` for none, or NaN)."""
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f}%"


# -- transfer ---------------------------------------------------------------------------------
def transfer_report(client: Any, parent: Any, out: Path) -> tuple[dict[str, Any], str, list[str]]:
    from orchestrator.transfer.runner import analyse, read_study, study_from_mlflow

    study = study_from_mlflow(client, parent.info.run_id)
    runs, affinity, failed, signals = read_study(client, parent.info.experiment_id, study)
    res = analyse(study, runs, affinity)
    res["failed_runs"] = failed
    res["affinity_signals"] = signals
    res["status"] = parent.info.status
    figures = []
    if _heatmap(res, out / "transfer_matrix.png"):
        figures.append("transfer_matrix.png")
    if res["affinity"] and _affinity_map(res, out / "affinity.png"):
        figures.append("affinity.png")
    if _gain_bars(res, out / "gains.png"):
        figures.append("gains.png")
    return res, _transfer_markdown(res, figures), figures


def _matrix_figure(tasks: list[str], m: Any, text: Any, path: Path, *, lim: float, title: str, label: str,
                   xlabel: str, ylabel: str, rows: list[str] | None = None) -> None:
    """A task x task heat map (diverging, centred on 0) with a text in every measured cell;
    ``rows``: the row labels, if not the tasks' names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(1.2 * len(tasks) + 2, 1.0 * len(tasks) + 1.5))
    im = ax.imshow(m, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_yticks(range(len(tasks)), rows or tasks)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for i in range(len(tasks)):
        for j in range(len(tasks)):
            if not np.isnan(m[i, j]):
                dark = abs(m[i, j]) > 0.6 * lim
                ax.text(j, i, text(i, j), ha="center", va="center", fontsize=8, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=label)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _heatmap(res: dict[str, Any], path: Path) -> bool:
    import numpy as np

    tasks = res["tasks"]
    m = np.array([[np.nan if res["pairwise"][i][j] is None or i == j else 100 * res["pairwise"][i][j]
                   for j in tasks] for i in tasks], dtype=float)
    if np.isnan(m).all():
        return False
    sig = {(g["task"], tuple(g["group"])) for g in res["gains"] if g["significant"]}

    def text(i: int, j: int) -> str:
        a, b = tasks[i], tasks[j]
        return f"{m[i, j]:+.1f}%" + ("*" if (a, tuple(sorted((a, b)))) in sig else "")

    _matrix_figure(tasks, m, text, path, lim=max(1.0, float(np.nanmax(np.abs(m)))),
                   title=f"{res['name']}: pairwise transfer (* p < 0.05, {len(res['seeds'])} seeds)",
                   label="relative gain, %", xlabel="trained together with",
                   ylabel="gain of this task (relative to alone)",
                   rows=[f"{t} (baseline 0: n/a)" if t in (res.get("zero_baselines") or []) else t for t in tasks])
    return True


def noisy_note(res: dict[str, Any]) -> str | None:
    """One sentence on the tasks whose baseline varies a lot from seed to seed (``noisy_baselines``)."""
    from orchestrator.transfer.analysis import NOISY_BASELINE_CV

    noisy = res.get("noisy_baselines") or {}
    if not noisy:
        return None
    parts = [f"{t} {100 * v:.0f}%" for t, v in noisy.items()]
    return (f"Noisy baselines (seed-to-seed std over |mean|, above {100 * NOISY_BASELINE_CV:.0f}%): "
            f"{', '.join(parts)}. A relative gain divides by the baseline, so these tasks' gains are noisy, and "
            "large ones weigh most in a grouping's total gain: read them with their intervals.")


def few_seeds_note(res: dict[str, Any]) -> str | None:
    """With fewer seeds than the significance test asks, say that no evidence is all it can give."""
    from orchestrator.transfer.analysis import MIN_SEEDS

    n = len(res.get("seeds") or [])
    if n >= MIN_SEEDS:
        return None
    return (f"{n} seed(s): a gain or loss is declared significant only with at least {MIN_SEEDS} seeds on each "
            f"side, so none can be here (--seeds {MIN_SEEDS} or more to test them).")


def runs_text(res: dict[str, Any]) -> str:
    """How many runs a study has finished: "21 runs", or "7 of 189 planned runs" while its
    first stage (the method's task sets at every seed) is not done (running, interrupted)."""
    done, planned = res["cost"]["trials"], res["cost"].get("planned") or 0
    return f"{done} of {planned} planned runs" if done < planned else f"{done} runs"


def zero_note(res: dict[str, Any]) -> str | None:
    """One sentence on the tasks whose baseline is 0 (``analysis.zero_baselines``)."""
    zero = res.get("zero_baselines") or []
    if not zero:
        return None
    names = ", ".join(f"{t} ({res['main_metric'][t]})" for t in zero)
    return (f"Baseline 0: {names} scored 0 alone. A gain relative to 0 is undefined, so "
            f"{'its' if len(zero) == 1 else 'their'} gains are not computed (n/a below) and a grouping counts "
            f"{'it' if len(zero) == 1 else 'them'} 0 wherever placed; "
            f"{'its' if len(zero) == 1 else 'their'} scores in each group are in the runs (--json: runs).")


def check_command(res: dict[str, Any]) -> str | None:
    """The command that trains a study's recommended groups (and the baselines) again on new
    seeds; None where it recommends training every task alone, and for a study that is such a
    check already (``--groups``)."""
    groups = ",".join("+".join(g) for g in res["grouping"]["groups"] if len(g) > 1)
    if res["method"] == "groups" or not groups or not res["seeds"]:
        return None
    return (f"mtlo transfer CONFIG --groups {groups} --seeds {len(res['seeds'])} "
            f"--set train.seed={max(res['seeds']) + 1} --set name={res['name']}-check")


def ci_clause(ci: list[float] | None) -> str:
    """", 95% CI a to b" for a grouping's interval over seeds (empty without one)."""
    return f", 95% CI {pct(ci[0])} to {pct(ci[1])}" if ci else ""


def _confirmation(res: dict[str, Any]) -> str:
    if res["grouping"]["confirmed"]:
        return "every group that the estimates propose was trained."
    src = "the affinity" if res["method"] == "affinity" else "the pairs (Standley et al.)"
    prop = (res.get("proposed") or {}).get("groups") or []
    return (f"the estimates from {src} propose " + ", ".join("**" + " + ".join(g) + "**" for g in prop)
            + ", not all trained yet (`mtlo transfer ... --resume --confirm-rounds N` trains them).")


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def _estimator_lines(res: dict[str, Any]) -> list[str]:
    """How the affinity method proposed its groups (orchestrator/transfer/predict.py), and
    what the estimate said of each proposed group beside what training measured."""
    fit = res.get("estimator")
    if not fit:
        return []
    tasks = res["tasks"]
    everyone = sorted(tasks)
    measured_all = {g["task"]: g["delta"] for g in res["gains"] if sorted(g["group"]) == everyone}
    lines = ["", "The groups were proposed from estimated gains (orchestrator/transfer/predict.py): the gain of "
             "task t in group G is estimated as its *dilution* in G (t trains only its share of the step cap for "
             "its own batches, plus a part λ of the other members' steps, which train the shared encoder too: "
             "what its own single-task runs had reached by then, against their best; λ is fitted on the "
             "all-tasks group) plus its *transfer*: what it gained in the all-tasks group beyond its dilution "
             "there (measured), times the presence in G of the task that the affinity says it came from (its "
             "best helper, or for a loss its most harmful task; relative to the yardstick Z[t → t]).",
             "", "| task | measured (all tasks) | λ | dilution (all tasks) | transfer (all tasks) | came from |",
             "| --- | --- | --- | --- | --- | --- |"]
    carry = fit.get("carry") or {}
    for t in tasks:
        lam = f"{carry[t]:.2f}" if t in carry else "–"
        lines.append(f"| {t} | {pct(measured_all.get(t))} | {lam} | {pct(fit['dilution'].get(t))} | "
                     f"{pct(fit['residual'].get(t))} | {fit['helper'].get(t) or '–'} |")
    if fit.get("proposed"):
        by = {(g["task"], tuple(g["group"])): g["delta"] for g in res["gains"]}
        lines += ["", "Every group proposed so far, estimated and (once trained) measured:", "",
                  "| group | task | estimated | measured |", "| --- | --- | --- | --- |"]
        for e in fit["proposed"]:
            grp = tuple(e["group"])
            measured = by.get((e["task"], grp))
            lines.append(f"| {'+'.join(grp)} | {e['task']} | {pct(e['estimated'])} | {pct(measured)} |")
    return lines


def _agreement_lines(signals: dict[str, Any]) -> list[str]:
    """Whether the affinity's ranking of helpers is reproducible across the all-tasks runs."""
    rows = [(name, s) for name, s in signals.items() if s.get("agreement") is not None]
    if not rows:
        return []
    what = {"lookahead": "lookahead (the table above)",
            "gradient": "first-order, from the training gradients at every step"}
    out = ["", "How far the all-tasks runs (one per seed) agree on who helps whom: for each task, the Spearman "
           "correlation between two runs of the affinity onto it from the other tasks, mean over tasks and pairs "
           "of runs (1: the same ranking at every seed; near 0: seed noise).", ""]
    out += [f"- {what.get(name, name)}: **{s['agreement']:+.2f}** over {s['runs']} runs" for name, s in rows]
    note = affinity_note(signals)
    return out + (["", note] if note else [])


def affinity_note(signals: dict[str, Any]) -> str | None:
    """One sentence when the lookahead's ranking of helpers disagrees across seeds."""
    look = (signals.get("lookahead") or {}).get("agreement")
    if look is None or look >= 0.5:
        return None
    return (f"The lookahead affinity's ranking of helpers agrees only {look:+.2f} across seeds: which task a "
            "transfer comes from is mostly seed noise here, so groups proposed from it rest on the measured gains "
            "(the all-tasks group, the baselines' learning curves) and must be confirmed by training.")


def _affinity_map(res: dict[str, Any], path: Path) -> bool:
    import numpy as np

    tasks = res["tasks"]
    z = np.array([[np.nan if i == j else res["affinity"].get(j, {}).get(i, np.nan) for j in tasks] for i in tasks],
                 dtype=float)
    if np.isnan(z).all():
        return False
    _matrix_figure(tasks, z, lambda i, j: f"{z[i, j]:.2g}", path, lim=float(np.nanmax(np.abs(z))) or 1.0,
                   title=f"{res['name']}: inter-task affinity (TAG), mean over training and seeds",
                   label="lookahead affinity Z (estimated)", xlabel="a step on this task's loss ...",
                   ylabel="... changes this task's loss (Z > 0: lowers it)")
    return True


GAIN_BARS_ONE_PANEL = 40  # above this many gains, one panel per task (an exhaustive study of 6 tasks has 186)


def _gain_bars(res: dict[str, Any], path: Path) -> bool:
    """Every measured gain with its interval; one panel per task, its groups sorted best first,
    once a single column of bars would be too tall to read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [g for g in res["gains"] if not g["estimated"]]
    if not gains:
        return False
    by_task: dict[str, list[dict[str, Any]]] = {}
    if len(gains) <= GAIN_BARS_ONE_PANEL:
        by_task[""] = sorted(gains, key=lambda g: (g["task"], len(g["group"]), g["group"]))
    else:
        for g in gains:
            by_task.setdefault(g["task"], []).append(g)
        for rows in by_task.values():
            rows.sort(key=lambda g: -g["delta"])
    cols = 1 if len(by_task) == 1 else 2
    nrows = -(-len(by_task) // cols)
    tallest = max(len(v) for v in by_task.values())
    fig, axes = plt.subplots(nrows, cols, figsize=(8 * cols, nrows * (0.24 * tallest + 1.2) + 0.6), squeeze=False,
                             layout="constrained")
    for ax, (task, rows) in zip(axes.flat, by_task.items(), strict=False):
        others = ["+".join(x for x in g["group"] if x != g["task"]) for g in rows]
        labels = [f"{g['task']} | {o}" for g, o in zip(rows, others, strict=True)] if not task else others
        vals = [100 * g["delta"] for g in rows]
        lo = [100 * (g["delta"] - g["ci"][0]) if g["ci"] else 0 for g in rows]
        hi = [100 * (g["ci"][1] - g["delta"]) if g["ci"] else 0 for g in rows]
        colors = ["#b2182b" if g["significant"] and g["delta"] < 0 else "#2166ac" if g["significant"] else "#999999"
                  for g in rows]
        ax.barh(range(len(rows)), vals, xerr=[lo, hi], color=colors, capsize=2)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)), labels, fontsize=8 if len(rows) <= 20 else 7)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        if task:
            ax.set_title(f"{task}, trained with ... (best first)", fontsize=10)
    for ax in list(axes.flat)[len(by_task):]:
        ax.axis("off")
    fig.supxlabel("relative gain over the task alone, % (95% Welch CI; colour: significant)", fontsize=10)
    fig.suptitle(f"{res['name']}: gain of each task in each trained group")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _transfer_markdown(res: dict[str, Any], figures: list[str]) -> str:
    tasks = res["tasks"]
    lines = [f"# Transfer study `{res['name']}`", "",
             f"Method **{res['method']}**, {len(res['seeds'])} seed(s) ({', '.join(map(str, res['seeds']))}), "
             f"parent run `{res['parent_run_id']}` ({res.get('status', '')}). "
             f"Cost: {runs_text(res)} finished, {res['cost']['train_steps']} optimizer steps to their "
             "best epochs. Every run trained under the same step cap and patience (equal budget).", "",
             "## Single-task baselines", "", "| task | metric | mean | std | seeds |",
             "| --- | --- | --- | --- | --- |"]
    for t in tasks:
        b = res["baselines"].get(t)
        lines.append(f"| {t} | {res['main_metric'][t]} | " +
                     (f"{b['mean']:.4f} | {b['std']:.4f} | {b['n']} |" if b else "– | – | 0 |"))
    for note in (zero_note(res), noisy_note(res)):
        if note:
            lines += ["", note]
    lines += ["", "## Pairwise transfer", "",
              "Gain of the row task when trained with the column task, relative to the row task alone "
              "(* significant, Welch's t-test over seeds, p < 0.05).", "",
              "| | " + " | ".join(tasks) + " |", "| --- " * (len(tasks) + 1) + "|"]
    sig = {(g["task"], tuple(g["group"])) for g in res["gains"] if g["significant"]}
    zero = set(res.get("zero_baselines") or [])
    for i in tasks:
        cells = ["" if i == j else "n/a" if i in zero else
                 pct(res["pairwise"][i][j]) + ("*" if (i, tuple(sorted((i, j)))) in sig else "") for j in tasks]
        lines.append(f"| **{i}** | " + " | ".join(cells) + " |")
    lines += [""] + [f"![{f}]({f})" for f in figures] + ["", "## Negative transfer", ""]
    if res["negative_transfer"]:
        for g in res["negative_transfer"]:
            lines.append(f"- **{g['task']}** with {'+'.join(x for x in g['group'] if x != g['task'])}: "
                         f"{pct(g['delta'])} (95% CI {pct(g['ci'][0])} to {pct(g['ci'][1])}, p = {g['p']:.3g}, "
                         f"{g['n']} seeds)")
    else:
        lines.append("No significant loss: no task was measurably hurt by another "
                     "(a loss that is not significant is reported as no evidence).")
    few = few_seeds_note(res)
    if few:
        lines += ["", few]
    if res.get("affinity"):
        lines += ["", "## Affinity (estimated)", "",
                  "Lookahead inter-task affinity Z[i → j] = 1 − L_j(θ − η∇L_i) / L_j(θ), measured inside the "
                  "all-tasks run(s) and averaged over training and seeds (Fifty et al. 2021). These figures are "
                  "estimates; the gains below are measured by training.", "",
                  "| step on ↓ / loss of → | " + " | ".join(tasks) + " |", "| --- " * (len(tasks) + 1) + "|"]
        for i in tasks:
            cells = [_num(res["affinity"].get(i, {}).get(j)) for j in tasks]
            lines.append(f"| **{i}** | " + " | ".join(cells) + " |")
        lines += ["", "The diagonal Z[i → i] is a step on i measured on another batch of i: the yardstick for "
                  "what a step on another task is worth to i."]
        lines += _agreement_lines(res.get("affinity_signals") or {})
        if res.get("proposed") and res["method"] == "affinity":
            lines += ["", "Groups proposed from the affinity: "
                      + ", ".join("**" + " + ".join(g) + "**" for g in res["proposed"]["groups"])
                      + (" (trained to confirm)." if res["grouping"]["confirmed"] else " (not trained yet).")]
        lines += _estimator_lines(res)
    ck = res.get("checked")
    if ck:
        lines += ["", "## The task sets given", ""]
        seeds = ", ".join(map(str, res["seeds"]))
        sets = "**" + "**, **".join(" + ".join(g) for g in ck["groups"]) + "**"
        lines.append(f"{sets} (each task in its best given set, a task in none alone): total gain "
                     f"{pct(ck['score'])} (measured on seeds {seeds}{ci_clause(ck.get('ci'))}), against baselines "
                     "trained at the same seeds." if ck["groups"]
                     else f"Not available: {ck.get('note', 'too few runs')}.")
    gr = res["grouping"]
    lines += ["", "## Recommended grouping", ""]
    if not gr["groups"]:
        lines.append(f"Not available yet: {gr.get('note', 'too few runs')}.")
    else:
        lines.append(f"At most {res.get('budget', len(gr['groups']))} model(s): "
                     + ", ".join("**" + " + ".join(g) + "**" for g in gr["groups"])
                     + f"; total gain {pct(gr['score'])} (measured{ci_clause(gr.get('ci'))} over seeds); "
                     + _confirmation(res))
        check = check_command(res)
        if check:
            lines += ["", "It is the best of the trained groups *on these seeds*, so part of its lead over the "
                      "alternatives can be seed noise, and its gain on new seeds is likely lower. To check it on "
                      f"new seeds: `{check}`."]
        lines += ["", "| task | scored in | gain | 95% CI | evidence |", "| --- | --- | --- | --- | --- |"]
        by = {(g["task"], tuple(g["group"])): g for g in res["gains"]}
        est = {(g["task"], tuple(g["group"])): g for g in res.get("estimated_gains", [])}
        for t in tasks:
            grp = tuple(gr["assignment"].get(t, [t]))
            if len(grp) == 1:
                lines.append(f"| {t} | alone | 0 | – | baseline |")
                continue
            if t in (res.get("zero_baselines") or []):
                lines.append(f"| {t} | {'+'.join(grp)} | n/a | – | baseline 0: counted 0 |")
                continue
            g = by.get((t, grp)) or est.get((t, grp))
            ci = f"{pct(g['ci'][0])} to {pct(g['ci'][1])}" if g and g.get("ci") else "–"
            kind = "estimated" if g and g.get("estimated") else f"measured, {g['n'] if g else 0} seeds"
            lines.append(f"| {t} | {'+'.join(grp)} | {pct(g['delta'] if g else None)} | {ci} | {kind} |")
    lines += ["", "## Runs", "", "Each task set at each seed, trained until its validation objective stopped improving "
              "(steps to its best epoch; the same cap for every run).", "",
              "| task set | seeds | steps to best epoch (mean) | " + " | ".join(tasks) + " |",
              "| --- " * (len(tasks) + 3) + "|"]
    by_group: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in res["runs"]:
        by_group.setdefault(tuple(r["group"]), []).append(r)
    for grp in sorted(by_group, key=lambda g: (len(g), g)):
        rs = by_group[grp]
        cells = [f"{sum(r['scores'][t] for r in rs) / len(rs):.4f}" if t in grp else "" for t in tasks]
        lines.append(f"| {'+'.join(grp)} | {len(rs)} | {sum(r['best_step'] for r in rs) / len(rs):.0f} | "
                     + " | ".join(cells) + " |")
    if res.get("failed_runs"):
        lines += ["", f"{len(res['failed_runs'])} run(s) failed or diverged and are left out of every figure above:",
                  "", "| task set | seed | status | error |", "| --- | --- | --- | --- |"]
        lines += [f"| {'+'.join(r['group'])} | {r['seed']} | {r['status']} | "
                  + r["error"].replace("|", "/").replace("\n", " ")[:200] + " |" for r in res["failed_runs"]]
    return "\n".join(lines) + "\n"


# -- search -----------------------------------------------------------------------------------
def search_report(client: Any, parent: Any, out: Path) -> tuple[dict[str, Any], str, list[str]]:
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                                "and tags.`mtlo.role` = 'trial'", max_results=50000)
    trials = []
    for c in children:
        m = c.data.metrics
        obj_keys = sorted(k for k in m if k.startswith("obj/"))
        trials.append({"trial_id": c.data.tags.get("mtlo.trial_id"), "run_id": c.info.run_id,
                       "status": c.data.tags.get("mtlo.status", c.info.status),
                       "params": {k[6:]: v for k, v in c.data.params.items() if k.startswith("param.")},
                       "tasks": c.data.tags.get("mtlo.tasks", "").split(","),
                       "objective": {k[4:]: m[k] for k in obj_keys} if obj_keys else m.get("objective"),
                       "retries": int(c.data.tags.get("mtlo.retries", 0)), "error": c.data.tags.get("mtlo.error"),
                       "scores": _best_scores(m)})
    pareto = parent.data.tags.get("mtlo.objective") == "pareto"
    bad = [t for t in trials if t["status"] in ("FAILED", "DIVERGED")]
    ok = [t for t in trials if t["objective"] is not None and t not in bad]
    res: dict[str, Any] = {"name": parent.info.run_name, "parent_run_id": parent.info.run_id,
                           "objective": parent.data.tags.get("mtlo.objective"), "status": parent.info.status,
                           "trials": trials}
    figures = []
    if pareto:
        from orchestrator.search.runner import pareto_front

        front = pareto_front(ok)
        res["pareto_front"] = front
        if _pareto_plot(ok, front, out / "pareto.png"):
            figures.append("pareto.png")
    else:
        res["best"] = max(ok, key=lambda t: t["objective"]) if ok else None
    counts = ", ".join(f"{sum(t['status'] == s for t in trials)} {s.lower()}" for s in ("FAILED", "DIVERGED"))
    lines = [f"# Search `{res['name']}`", "", f"Objective **{res['objective']}**, {len(trials)} trials "
             f"({counts}), parent run `{res['parent_run_id']}` ({res['status']}).", ""]
    if not pareto:
        lines += ["| trial | status | objective | params |", "| --- | --- | --- | --- |"]
        for t in sorted(ok, key=lambda t: -t["objective"]):
            lines.append(f"| {t['trial_id']} | {t['status']} | {t['objective']:.4f} | "
                         + ", ".join(f"{k}={_param(v)}" for k, v in t["params"].items()) + " |")
    else:
        lines += [f"Pareto front: {len(res['pareto_front'])} trial(s).", "", "| trial | "
                  + " | ".join(sorted(ok[0]["objective"]) if ok else []) + " | params |"]
        lines.append("| --- " * (len(ok[0]["objective"]) + 2 if ok else 2) + "|")
        for t in res["pareto_front"]:
            objs = " | ".join(f"{t['objective'][k]:.4f}" for k in sorted(t["objective"]))
            params = ", ".join(f"{k}={_param(v)}" for k, v in t["params"].items())
            lines.append(f"| {t['trial_id']} | {objs} | {params} |")
    best = res.get("best")
    if best and best["scores"]:
        lines += ["", f"Best trial `{best['trial_id']}` (MLflow run `{best['run_id']}`), per task at its best epoch:",
                  "", "| task | metrics |", "| --- | --- |"]
        lines += [f"| {task} | " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(ms.items())) + " |"
                  for task, ms in sorted(best["scores"].items())]
    retried = [t for t in trials if t["retries"]]
    if bad or retried:
        lines += ["", "Trials that failed, diverged or were retried:", "",
                  "| trial | status | retries | error |", "| --- | --- | --- | --- |"]
        for t in sorted(bad + [t for t in retried if t not in bad], key=lambda t: str(t["trial_id"])):
            error = (t["error"] or "").replace("|", "/").replace("\n", " ")[:200]
            lines.append(f"| {t['trial_id']} | {t['status']} | {t['retries']} | {error} |")
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return res, "\n".join(lines) + "\n", figures


def _best_scores(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from a child run's ``best/<task>/<metric>`` metrics."""
    out: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == "best":
            out.setdefault(parts[1], {})[parts[2]] = v
    return out


def _pareto_plot(ok: list[dict[str, Any]], front: list[dict[str, Any]], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(ok[0]["objective"]) if ok else []
    if len(keys) < 2:
        return False
    x, y = keys[0], keys[1]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.scatter([t["objective"].get(x) for t in ok], [t["objective"].get(y) for t in ok], c="#999999", label="trials")
    ax.scatter([t["objective"].get(x) for t in front], [t["objective"].get(y) for t in front], c="#b2182b",
               label="Pareto front")
    ax.set_xlabel(f"{x} (signed main metric)")
    ax.set_ylabel(f"{y} (signed main metric)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _write(path: Path, text: str) -> None:
    """Whole or not at all: a reader never sees a half-written report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def safe_name(name: str, fallback: str) -> str:
    """A run name as one folder name: every character but letters, digits, '-', '_' and '.'
    becomes '_', and no leading dot (so never '..', a hidden folder or a path); ``fallback``
    (the run id) where nothing is left."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name or "").lstrip(".")
    return cleaned or fallback


def build_report(tracking_uri: str, ref: str, out: Path | None = None) -> tuple[dict[str, Any], str, Path]:
    """Write the report of the parent run ``ref`` to ``out`` (default ``reports/<sanitized run
    name>``) and log the files it wrote, and only those, on the parent run under ``report/``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = find_parent(client, ref)
    folder = out or Path("reports") / safe_name(parent.info.run_name, parent.info.run_id)
    folder.mkdir(parents=True, exist_ok=True)
    if parent.data.tags.get("mtlo.role") == "transfer":
        res, md, figures = transfer_report(client, parent, folder)
    else:
        res, md, figures = search_report(client, parent, folder)
    _write(folder / "report.md", md)
    faults.driver_point(faults.from_env(), "report")  # test-only (MTLO_FAULT=driver@report)
    _write(folder / "report.json", tracking.as_json(res))
    for name in ["report.md", "report.json", *figures]:
        client.log_artifact(parent.info.run_id, str(folder / name), artifact_path="report")
    return json.loads(tracking.as_json(res)), md, folder
