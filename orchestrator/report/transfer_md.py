"""The markdown report of a transfer study (``transfer.results``' shape)."""

from __future__ import annotations

from typing import Any

from orchestrator.report.text import (
    affinity_note,
    apart_text,
    check_command,
    check_text,
    ci_clause,
    ci_text,
    expected_clause,
    few_seeds_note,
    md,
    measured_clause,
    noisy_note,
    num,
    pct,
    power_lines,
    raw_only_losses,
    runs_text,
    test_clause,
    train_command,
    zero_note,
)
from orchestrator.transfer.shapes import GainRow, RunRow, TransferResult


def _confirmation(res: TransferResult) -> str:
    if res["grouping"]["confirmed"]:
        return "every group that the estimates propose was trained."
    src = res.get("estimate_source") or "the method's estimates"
    prop = (res.get("proposed") or {}).get("groups") or []
    return (f"the estimates from {src} propose " + ", ".join("**" + " + ".join(g) + "**" for g in prop)
            + ", not all trained yet (`mtlo transfer ... --resume --confirm-rounds N` trains them).")


def _estimator_lines(res: TransferResult) -> list[str]:
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


def surrogate_lines(res: TransferResult) -> list[str]:
    """The surrogate method's model: each task's coefficients with intervals (who helps, who
    hurts), its cross-validated fit, and every proposed group estimated beside measured."""
    fit = res.get("surrogate")
    if not fit:
        return []
    tasks, models = res["tasks"], fit["tasks"]
    cv = fit.get("cv") or {}
    lines = ["", "## Surrogate model (estimated)", "",
             "For each task t, a linear model of its gain in a group S fitted on the trained subsets (Li, Nguyen and "
             "Zhang 2023): Δ_t(S) ≈ Σ θ[t][j] over the other members j of S + γ_t · (1 − 1/|S|), the last term for "
             "the group's size (t's own share of the equal step cap). θ[t][j] > 0: j helps t; < 0: j hurts t. "
             "Cells: the least-squares coefficient (95% interval, where the subsets identify it); **bold**: the "
             "interval excludes 0. The estimates of untrained groups come from the same model fitted with a small "
             "penalty (chosen on left-out subsets). These are estimates; the gains elsewhere in this report are "
             "measured by training.", "",
             "| task ↓ / with → | " + " | ".join(tasks) + " | size γ | subsets |", "| --- " * (len(tasks) + 3) + "|"]

    def cell(c: dict[str, Any] | None) -> str:
        if not c:
            return "–"
        text = pct(c["coef"]) + (f" ({ci_text(c['ci'])})" if c.get("ci") else "")
        return f"**{text}**" if c.get("sign") else text

    for t in tasks:
        m = models.get(t)
        if not m:
            lines.append(f"| **{t}** | " + " | ".join("" if j == t else "–" for j in tasks) + " | – | 0 |")
            continue
        co = m["coefficients"]
        lines.append(f"| **{t}** | " + " | ".join("" if j == t else cell(co.get(j)) for j in tasks)
                     + f" | {cell(co.get('size'))} | {m['subsets']} |")
    found = [f"{j} helps {t}" for t in tasks for j in (models.get(t) or {}).get("helpers", [])]
    found += [f"{j} hurts {t}" for t in tasks for j in (models.get(t) or {}).get("hurters", [])]
    lines += ["", "Found (interval excludes 0): " + ("; ".join(found) if found else "none") + "."]
    if cv.get("n", 0) >= 3:
        r2 = "–" if cv.get("r2") is None else f"{cv['r2']:.2f}"
        rho = "–" if cv.get("spearman") is None else f"{cv['spearman']:+.2f}"
        lines += ["", f"How well it predicts (each of the {cv['subsets']} trained subsets left out in turn, its "
                  f"{cv['n']} gains predicted by the models fitted on the others): R² **{r2}**, Spearman **{rho}**, "
                  f"mean absolute error {pct(cv['mean_abs_error'])}. An R² near or below 0 means the estimates "
                  "rank groups little better than the mean gain: trust the measured gains, or train more subsets "
                  "(`--runs`)."]
    else:
        lines += ["", f"Its fit could not be cross-validated: {cv.get('n', 0)} left-out predictions (three or more "
                  "needed; train more subsets with `--runs`)."]
    prop = res.get("proposed")
    if prop:
        by = {(g["task"], tuple(g["group"])): g["delta"] for g in res["gains"]}
        groups = [tuple(sorted(g)) for g in prop["groups"] if len(g) > 1]
        lines += ["", "Groups proposed from the model: " + (", ".join("**" + " + ".join(g) + "**" for g in groups)
                                                           or "every task alone") + "."]
        if fit.get("proposed"):
            lines += ["", "| group | task | measured | estimated by the model |", "| --- | --- | --- | --- |"]
            lines += [f"| {'+'.join(e['group'])} | {e['task']} | {pct(by.get((e['task'], tuple(e['group']))))} | "
                      f"{pct(e['estimated'])} |" for e in fit["proposed"]]
    return lines


def agreement_lines(signals: dict[str, Any]) -> list[str]:
    """Whether the affinity's ranking of helpers is reproducible across the all-tasks runs."""
    rows = [(name, s) for name, s in signals.items() if s.get("agreement") is not None]
    if not rows:
        return []
    what = {"lookahead": "lookahead (the table above)"}
    out = ["", "How far the all-tasks runs (one per seed) agree on who helps whom: for each task, the Spearman "
           "correlation between two runs of the affinity onto it from the other tasks, mean over tasks and pairs "
           "of runs (1: the same ranking at every seed; near 0: seed noise).", ""]
    out += [f"- {what.get(name, name)}: **{s['agreement']:+.2f}** over {s['runs']} runs" for name, s in rows]
    note = affinity_note(signals)
    return out + (["", note] if note else [])


def transfer_markdown(res: TransferResult, figures: list[str]) -> str:
    lines = [f"# Transfer study `{res['name']}`", "",
             f"Method **{res['method']}**, {len(res['seeds'])} seed(s) ({', '.join(map(str, res['seeds']))}), "
             f"parent run `{res['parent_run_id']}` ({res.get('status', '')}). "
             f"Cost: {runs_text(res)} finished, {res['cost']['train_steps']} optimizer steps to their "
             "best epochs. Every run trained under the equal budget (docs/transfer.md).", ""]
    for section in (_baseline_lines(res), _pairwise_lines(res, figures), _negative_lines(res), _affinity_lines(res),
                    surrogate_lines(res), _checked_lines(res), _grouping_lines(res), _power_lines(res),
                    _runs_lines(res)):
        lines += section
    return "\n".join(lines) + "\n"


def _baseline_lines(res: TransferResult) -> list[str]:
    lines = ["## Single-task baselines", "", "| task | metric | mean | std | seeds |",
             "| --- | --- | --- | --- | --- |"]
    for t in res["tasks"]:
        b = res["baselines"].get(t)
        lines.append(f"| {t} | {res['main_metric'][t]} | " +
                     (f"{b['mean']:.4f} | {b['std']:.4f} | {b['n']} |" if b else "– | – | 0 |"))
    for note in (zero_note(res), noisy_note(res)):
        if note:
            lines += ["", note]
    return lines


def _pairwise_lines(res: TransferResult, figures: list[str]) -> list[str]:
    tasks = res["tasks"]
    lines = ["", "## Pairwise transfer", "",
             "Gain of the row task when trained with the column task, relative to the row task alone "
             "(* significant: Welch's t-test over seeds, Benjamini-Hochberg adjusted p < 0.05 over the study's "
             f"{sum(1 for g in res['gains'] if g.get('p') is not None)} tests of a gain).", "",
             "| | " + " | ".join(tasks) + " |", "| --- " * (len(tasks) + 1) + "|"]
    sig = {(g["task"], tuple(g["group"])) for g in res["gains"] if g["significant"]}
    zero = set(res.get("zero_baselines") or [])
    for i in tasks:
        cells = ["" if i == j else "n/a" if i in zero else
                 pct(res["pairwise"][i][j]) + ("*" if (i, tuple(sorted((i, j)))) in sig else "") for j in tasks]
        lines.append(f"| **{i}** | " + " | ".join(cells) + " |")
    return lines + [""] + [f"![{f}]({f})" for f in figures]


def _negative_lines(res: TransferResult) -> list[str]:
    lines = ["", "## Negative transfer", ""]
    if res["negative_transfer"]:
        for g in res["negative_transfer"]:
            lines.append(f"- **{g['task']}** with {'+'.join(x for x in g['group'] if x != g['task'])}: "
                         f"{pct(g['delta'])} (95% CI {ci_text(g['ci'])}, p = {g['p'] or 0:.3g}, adjusted "
                         f"{g.get('p_adjusted') or 0:.3g}, "
                         f"{g['n']} seeds)")
    else:
        lines.append("No significant loss: no task was measurably hurt by another "
                     "(a loss that is not significant is reported as no evidence).")
    raw_only = raw_only_losses(res)
    if raw_only:
        tests = sum(1 for g in res["gains"] if g.get("p") is not None)
        lines += ["", f"{len(raw_only)} loss(es) at a raw p < 0.05 do not survive the adjustment for the study's "
                  f"{tests} tests (about {0.05 * tests:.1f} would pass a raw 0.05 by seed noise alone): "
                  + "; ".join(f"{g['task']} with {'+'.join(x for x in g['group'] if x != g['task'])} "
                              f"{pct(g['delta'])} (p = {g['p']:.3g}, adjusted {g.get('p_adjusted') or 0:.3g})"
                              for g in raw_only) + ". More seeds would tell."]
    few = few_seeds_note(res)
    return lines + (["", few] if few else [])


def _affinity_lines(res: TransferResult) -> list[str]:
    tasks = res["tasks"]
    if not res.get("affinity"):
        return []
    lines = ["", "## Affinity (estimated)", "",
             "Lookahead inter-task affinity Z[i → j] = 1 − L_j(θ − η∇L_i) / L_j(θ), measured inside the "
             "all-tasks run(s) and averaged over training and seeds (Fifty et al. 2021). These figures are "
             "estimates; the gains below are measured by training.", "",
             "| step on ↓ / loss of → | " + " | ".join(tasks) + " |", "| --- " * (len(tasks) + 1) + "|"]
    for i in tasks:
        cells = [num(res["affinity"].get(i, {}).get(j)) for j in tasks]
        lines.append(f"| **{i}** | " + " | ".join(cells) + " |")
    lines += ["", "The diagonal Z[i → i] is a step on i measured on another batch of i: the yardstick for "
              "what a step on another task is worth to i."]
    lines += agreement_lines(res.get("affinity_signals") or {})
    prop = res.get("proposed")
    if prop and res.get("estimator") is not None:  # the affinity estimator proposed them
        lines += ["", "Groups proposed from the affinity: "
                  + ", ".join("**" + " + ".join(g) + "**" for g in prop["groups"])
                  + (" (trained to confirm)." if res["grouping"]["confirmed"] else " (not trained yet).")]
    lines += _estimator_lines(res)
    return lines


def _checked_lines(res: TransferResult) -> list[str]:
    ck = res.get("checked")
    if not ck:
        return []
    lines = ["", "## The task sets given", ""]
    seeds = ", ".join(map(str, res["seeds"]))
    sets = "**" + "**, **".join(" + ".join(g) for g in ck["groups"]) + "**"
    lines.append(f"{sets} (each task in its best given set, a task in none alone): total gain "
                 f"{pct(ck['score'])} (measured on seeds {seeds}{ci_clause(ck.get('ci'))}{test_clause(ck)}), "
                 "against baselines "
                 "trained at the same seeds." if ck["groups"]
                 else f"Not available: {ck.get('note', 'too few runs')}.")
    return lines


def _grouping_lines(res: TransferResult) -> list[str]:
    tasks = res["tasks"]
    gr = res["grouping"]
    lines = ["", "## Recommended grouping", ""]
    if not gr["groups"]:
        lines.append(f"Not available yet: {gr.get('note', 'too few runs')}.")
    else:
        apart = apart_text(res)
        shown = gr.get("within_budget") or gr
        if apart:
            lines.append(apart)
        else:
            lines.append(f"At most {res.get('budget', len(gr['groups']))} model(s): "
                         + ", ".join("**" + " + ".join(g) + "**" for g in gr["groups"])
                         + (f"; total gain {expected_clause(gr)}" if gr.get("expected") else "")
                         + f"; {measured_clause(gr, res['seeds'])}; " + _confirmation(res))
        lines += ["", "The expected figure counts each measured gain for what its seeds support: it is shrunk "
                  "toward 0 by its task's seed noise (docs/transfer.md, \"Noise, shrinkage and the headline\"), "
                  "and the grouping is chosen on these shrunk gains. The figure on the seeds that chose it is "
                  "optimistic: it is the best of many groupings scored on the same noise."]
        check, train = check_command(res), train_command(res)
        if check:
            lines += ["", f"To check it on new seeds: `{check}` (or `--check-seeds K` when the study runs)."]
        if train:
            lines += ["", "To train the models (one per group, all of its data, each registered in MLflow): "
                      f"`{train}`."]
        lines += ["", "| task | scored in | gain (measured) | 95% CI | expected on new seeds | evidence |",
                  "| --- | --- | --- | --- | --- | --- |"]
        by = {(g["task"], tuple(g["group"])): g for g in res["gains"]}
        est = {(g["task"], tuple(g["group"])): g for g in res.get("estimated_gains", [])}
        for t in tasks:
            grp = tuple(shown["assignment"].get(t, [t]))
            if len(grp) == 1:
                lines.append(f"| {t} | alone | 0 | – | 0 | baseline |")
                continue
            if t in (res.get("zero_baselines") or []):
                lines.append(f"| {t} | {'+'.join(grp)} | n/a | – | – | baseline 0: counted 0 |")
                continue
            row: GainRow | None = by.get((t, grp)) or est.get((t, grp))
            ci = ci_text(row["ci"]) if row else "–"
            kind = "estimated" if row and row.get("estimated") else f"measured, {row['n'] if row else 0} seeds"
            lines.append(f"| {t} | {'+'.join(grp)} | {pct(row['delta'] if row else None)} | {ci} | "
                         f"{pct(row.get('expected') if row else None)} | {kind} |")
    checked_text = check_text(res)
    if checked_text:
        lines += ["", checked_text]
    return lines


def _power_lines(res: TransferResult) -> list[str]:
    power = power_lines(res)
    if not power:
        return []
    return ["", "## Seed noise and power", "",
            "How far one seed's relative gain of each task moves from seed to seed (pooled over the groups it "
            "was trained in), the smallest true gain the study's seeds detect (a paired t-test, raw p < 0.05, "
            "80% power) and the seeds a gain of 5% or 10% needs. A task whose smallest detectable gain is "
            "larger than the gains in play cannot decide a grouping on these seeds.", ""] + power


def _runs_lines(res: TransferResult) -> list[str]:
    tasks = res["tasks"]
    lines = ["", "## Runs", "", "Each task set at each seed under the equal budget (steps to its best epoch; "
             "docs/transfer.md, \"The equal budget\").", "",
             "| task set | seeds | steps to best epoch (mean) | " + " | ".join(tasks) + " |",
             "| --- " * (len(tasks) + 3) + "|"]
    by_group: dict[tuple[str, ...], list[RunRow]] = {}
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
        lines += [f"| {md('+'.join(r['group']))} | {r['seed']} | {md(r['status'])} | {md(r['error'], 200)} |"
                  for r in res["failed_runs"]]
    return lines
