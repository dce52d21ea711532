"""The markdown report of a search (``search.results``' shape)."""

from __future__ import annotations

from typing import Any

from orchestrator.domain import FAILED, scored
from orchestrator.report.text import md, param


def search_markdown(res: dict[str, Any], figures: list[str]) -> str:
    trials = res["trials"]
    bad = [t for t in trials if t["status"] in FAILED]
    ok = scored(trials)
    pareto = "pareto_front" in res
    counts = ", ".join(f"{sum(t['status'] == s for t in trials)} {s.lower()}" for s in FAILED)
    lines = [f"# Search `{res['name']}`", "", f"Objective **{res['objective']}**, {len(trials)} trials "
             f"({counts}), parent run `{res['parent_run_id']}` ({res['status']}).", ""]
    if not pareto:
        lines += ["| trial | status | objective | params |", "| --- | --- | --- | --- |"]
        for t in sorted(ok, key=lambda t: -t["objective"]):
            lines.append(f"| {md(t['trial_id'])} | {md(t['status'])} | {t['objective']:.4f} | "
                         + ", ".join(f"{md(k)}={md(param(v))}" for k, v in t["params"].items()) + " |")
    else:
        lines += [f"Pareto front: {len(res['pareto_front'])} trial(s).", "", "| trial | "
                  + " | ".join(sorted(ok[0]["objective"]) if ok else []) + " | params |"]
        lines.append("| --- " * (len(ok[0]["objective"]) + 2 if ok else 2) + "|")
        for t in res["pareto_front"]:
            objs = " | ".join(f"{t['objective'][k]:.4f}" for k in sorted(t["objective"]))
            params = ", ".join(f"{md(k)}={md(param(v))}" for k, v in t["params"].items())
            lines.append(f"| {md(t['trial_id'])} | {objs} | {params} |")
    best = res.get("best")
    if best and best["scores"]:
        test = best.get("test") or {}
        lines += ["", f"Best trial `{best['trial_id']}` (MLflow run `{best['run_id']}`), per task at its best epoch "
                  f"({best.get('best_epoch', '?')}): validation chose it; test is held out and ranks nothing.",
                  "", "| task | validation | test |", "| --- | --- | --- |"]
        lines += [f"| {task} | " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(ms.items())) + " | "
                  + (", ".join(f"{k}={v:.4f}" for k, v in sorted(test.get(task, {}).items())) or "-") + " |"
                  for task, ms in sorted(best["scores"].items())]
    if res.get("model"):
        lines += ["", f"Model: `{res['model']}` (`mtlo predict {res['model']} INPUT.csv`; docs/models.md)."]
    if res.get("importance"):
        lines += ["", "Parameter importance (Optuna): " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(res["importance"].items(), key=lambda kv: -kv[1])) + "."]
    if res.get("dashboard"):
        lines += ["", f"The Optuna study: `{res['dashboard']}`."]
    retried = [t for t in trials if t["retries"]]
    if bad or retried:
        lines += ["", "Trials that failed, diverged or were retried:", "",
                  "| trial | status | retries | error |", "| --- | --- | --- | --- |"]
        for t in sorted(bad + [t for t in retried if t not in bad], key=lambda t: str(t["trial_id"])):
            lines.append(f"| {md(t['trial_id'])} | {md(t['status'])} | {t['retries']} | {md(t['error'] or '', 200)} |")
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"
