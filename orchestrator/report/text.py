"""Short texts shared by the report and the terminal: percentages, intervals, notes on what
a study's figures can and cannot say, and the command that checks a grouping on new seeds."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from orchestrator.transfer.analysis import MIN_SEEDS, NOISY_BASELINE_CV
from orchestrator.transfer.shapes import GainRow, TransferResult


def param(v: Any) -> str:
    """A param as MLflow stores it (text), numbers shortened: 0.00013366875 -> 0.000134."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return str(v) if str(v).lstrip("-").isdigit() else f"{f:.3g}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|!])")  # emphasis, code, links and images, table cells


def md(text: Any, limit: int | None = None) -> str:
    """Text read from a store (a trial's id or error, a run name, a parameter's value) as plain
    text in markdown: on one line, its markdown and HTML made inert (a report over someone
    else's store must not carry their links, images or tags), at most ``limit`` characters."""
    s = " ".join(str(text).split())
    if limit is not None:
        s = s[:limit]
    s = s.replace("&", "&amp;").replace("<", "&lt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def pct(v: float | None, missing: str = "–") -> str:
    """A relative gain as a signed percentage (``missing`` for none, or NaN)."""
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:+.1f}%"


def noisy_note(res: TransferResult) -> str | None:
    """One sentence on the tasks whose baseline varies a lot from seed to seed (``noisy_baselines``)."""
    noisy = res.get("noisy_baselines") or {}
    if not noisy:
        return None
    parts = [f"{t} {100 * v:.0f}%" for t, v in noisy.items()]
    return (f"Noisy baselines (seed-to-seed std over |mean|, above {100 * NOISY_BASELINE_CV:.0f}%): "
            f"{', '.join(parts)}. A relative gain divides by the baseline, so these tasks' gains are noisy, and "
            "large ones weigh most in a grouping's total gain: read them with their intervals.")


def few_seeds_note(res: TransferResult) -> str | None:
    """With fewer seeds than the significance test asks, say that no evidence is all it can give."""
    n = len(res.get("seeds") or [])
    if n >= MIN_SEEDS:
        return None
    return (f"{n} seed(s): a gain or loss is declared significant only with at least {MIN_SEEDS} seeds on each "
            f"side, so none can be here (--seeds {MIN_SEEDS} or more to test them).")


def runs_text(res: TransferResult) -> str:
    """How many runs a study has finished: "21 runs", or "7 of 189 planned runs" while its
    first stage (the method's task sets at every seed) is not done (running, interrupted)."""
    done, planned = res["cost"]["trials"], res["cost"].get("planned") or 0
    return f"{done} of {planned} planned runs" if done < planned else f"{done} runs"


def zero_note(res: TransferResult) -> str | None:
    """One sentence on the tasks whose baseline is 0 (``analysis.zero_baselines``)."""
    zero = res.get("zero_baselines") or []
    if not zero:
        return None
    names = ", ".join(f"{t} ({res['main_metric'][t]})" for t in zero)
    return (f"Baseline 0: {names} scored 0 alone. A gain relative to 0 is undefined, so "
            f"{'its' if len(zero) == 1 else 'their'} gains are not computed (n/a below) and a grouping counts "
            f"{'it' if len(zero) == 1 else 'them'} 0 wherever placed; "
            f"{'its' if len(zero) == 1 else 'their'} scores in each group are in the runs (--json: runs).")


def check_command(res: TransferResult) -> str | None:
    """The command that trains a study's recommended groups (and the baselines) again on new
    seeds (where it recommends training apart: the budget's least harmful grouping); None
    where every task is alone anyway, and for a study that is such a check already (``--groups``)."""
    gr = res["grouping"].get("within_budget") or res["grouping"]
    groups = ",".join("+".join(g) for g in gr["groups"] if len(g) > 1)
    if not res.get("proposes", True) or not groups or not res["seeds"]:
        return None
    return (f"mtlo transfer CONFIG --groups {groups} --seeds {len(res['seeds'])} "
            f"--set train.seed={max(res['seeds']) + 1} --set name={res['name']}-check")


def ci_text(ci: list[float] | None, sep: str = " to ") -> str:
    """A gain's interval, "a to b" ("–" without one)."""
    return f"{pct(ci[0])}{sep}{pct(ci[1])}" if ci else "–"


def ci_clause(ci: list[float] | None) -> str:
    """", 95% CI a to b" for a grouping's interval over seeds (empty without one)."""
    return f", 95% CI {pct(ci[0])} to {pct(ci[1])}" if ci else ""


def test_clause(gr: Mapping[str, Any]) -> str:
    """"; on the held-out test split +x% (95% CI ...)" for a grouping (empty without test scores)."""
    if gr.get("test") is None:
        return ""
    return f"; on the held-out test split {pct(gr['test'])}{ci_clause(gr.get('test_ci'))}"


def num(v: float | None) -> str:
    return "–" if v is None else f"{v:.3g}"


def affinity_note(signals: dict[str, Any]) -> str | None:
    """One sentence when the lookahead's ranking of helpers disagrees across seeds."""
    look = (signals.get("lookahead") or {}).get("agreement")
    if look is None or look >= 0.5:
        return None
    return (f"The lookahead affinity's ranking of helpers agrees only {look:+.2f} across seeds: which task a "
            "transfer comes from is mostly seed noise here, so groups proposed from it rest on the measured gains "
            "(the all-tasks group, the baselines' learning curves) and must be confirmed by training.")


def raw_only_losses(res: TransferResult) -> list[GainRow]:
    """The measured losses with a raw p < 0.05 that the false-discovery-rate control does not
    declare significant (enough seeds on both sides: the seeds note covers the rest)."""
    return [g for g in res["gains"] if g["delta"] < 0 and not g["significant"] and not g.get("estimated")
            and (g.get("p") or 1.0) < 0.05 and g["n"] >= MIN_SEEDS and g.get("p_adjusted") is not None]


def expected_clause(gr: Mapping[str, Any]) -> str:
    """"expected on new seeds +x% (95% interval for a check at K new seeds: a to b; noise alone reaches +y%
    in 5% of studies, p = ...)" for a grouping (empty without an estimate: a study at one seed)."""
    e = gr.get("expected")
    if not e:
        return ""
    lo, hi = e["interval"]
    noise = (f"; noise alone reaches {pct(e['noise_95'])} in 5% of studies, p = {e['p_noise']:.3f}"
             if e.get("p_noise") is not None else "")
    return (f"expected on new seeds {pct(e['expected'])} (95% interval for a check at {e['check_seeds']} new seeds: "
            f"{pct(lo)} to {pct(hi)}{noise})")


def measured_clause(gr: Mapping[str, Any], seeds: list[int], label: str = "on the seeds that chose it") -> str:
    """"on the seeds that chose it (0, 1, 2) +y% (95% CI ...)": the total as measured (for a
    recommendation, optimistic by selection; ``label`` says which seeds)."""
    return f"{label} ({', '.join(map(str, seeds))}) {pct(gr['score'])}{ci_clause(gr.get('ci'))}{test_clause(gr)}"


def apart_text(res: TransferResult) -> str | None:
    """Why a study recommends training every task alone, and the budget's least harmful
    grouping for a user who cannot deploy that many models."""
    gr = res["grouping"]
    if not gr.get("apart"):
        return None
    n, budget = len(res["tasks"]), res.get("budget", 1)
    wb = gr.get("within_budget")
    if wb is None:
        return f"Train every task alone ({n} models): no grouping gains over training apart."
    return (f"Train every task alone ({n} models): no grouping of at most {budget} model(s) gains more than noise "
            f"and selection give in a study without transfer. If you must deploy at most {budget}, the "
            f"least harmful is " + "  |  ".join("+".join(g) for g in wb["groups"]) + ": "
            + expected_clause(wb) + "; " + measured_clause(wb, res["seeds"]) + ".")


def train_command(res: TransferResult) -> str | None:
    """The command that turns the recommendation into models: one per group, all of its data,
    each registered in MLflow with its tasks and this study."""
    groups = res["grouping"]["groups"]
    if not groups or not res.get("proposes", True):
        return None
    return f"mtlo train CONFIG --groups {','.join('+'.join(g) for g in groups)} --study {res['name']}"


def power_lines(res: TransferResult) -> list[str]:
    """Each task's seed noise and what the study's seeds can detect (``noise.power_table``)."""
    nz = res.get("noise") or {}
    if not nz:
        return []
    n = len(res["seeds"])
    lines = [f"| task | seed-to-seed sd of a gain | smallest gain {n} seeds detect | seeds for a 5% gain "
             "| for a 10% gain |",
             "| --- | --- | --- | --- | --- |"]
    for t, row in nz.items():
        need = row.get("seeds_for") or {}
        lines.append(f"| {t} | {100 * row['sigma']:.1f} pts | {pct(row.get('detectable')).lstrip('+')} | "
                     f"{need.get('0.05') or '> 1000'} | {need.get('0.1') or '> 1000'} |")
    return lines


def check_text(res: TransferResult) -> str | None:
    """``--check-seeds``: "held on new seeds ..." or "did not hold ...", beside the estimate."""
    ck = res.get("check")
    if not ck:
        return None
    seeds = ", ".join(map(str, ck.get("seeds", [])))
    groups = "  |  ".join("+".join(g) for g in ck.get("groups", []))
    if ck.get("total") is None:
        return f"Check on new seeds ({seeds}): {ck.get('note', 'not available')}."
    lo, hi = ck.get("interval") or (None, None)
    beside = (f"the study expected {pct(ck.get('expected'))}, 95% interval for this check {pct(lo)} to {pct(hi)}"
              if lo is not None else "the study gave no interval")
    verdict = "held" if ck.get("held") else "did not hold" if ck.get("held") is False else "measured"
    return (f"Check on new seeds ({seeds}) of {groups}: {verdict} on new seeds: {pct(ck['total'])}"
            f"{ci_clause(ck.get('ci'))} ({beside}).")
