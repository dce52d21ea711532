"""Does the figure a study gives for its recommended grouping hold on new seeds?

Fifteen committed cases (issue "answers that hold on new seeds"): the exhaustive, pairwise,
affinity and surrogate methods on each six-task set (replayed from its exhaustive study's
runs table, as benchmarks/grouping.py does) and the pairwise, surrogate and affinity studies
of the ten built-in tasks (their own runs tables, as benchmarks/grouping_many.py reads them);
each recommendation scored on the new seeds 3-5 of the committed holdout tables.

For each case, before and after (docs/transfer.md, "Noise, shrinkage and the headline"):

- before: the grouping chosen on the measured gains, its headline the total gain on the seeds
  that chose it, with the t interval over those seeds;
- after: the grouping chosen on the shrunk gains, its headline the expected total on new
  seeds (the sum of the shrunk gains) with the 95% interval for a check at 3 new seeds;
  where no grouping within the budget is credible, the recommendation is to train apart
  (exactly 0 on any seed), the budget's least harmful grouping beside it;
- the new estimate of today's grouping too (the estimator alone, the choice unchanged), and
  cross-fitting over seeds (choose on two seeds, score on the third) for comparison.

Summaries over the cases: coverage (the new-seed figure inside the interval), the mean
|headline − new-seed|, the interval's mean width, and the noise floor: the mean |error| that a
headline equal to the true gain would still have, from the new seeds' own noise
(sqrt(2/π) · the sd of a 3-seed mean, from the study's pooled seed noise).

    python -m benchmarks.calibration [--out benchmarks/results/calibration.json] \\
        [--train-holdout sqlite:///.bench/grouping/mlflow.db]

``--train-holdout`` trains, at the new seeds, the recommendations the holdout tables lack
(into that store, appended to the tables), as benchmarks/grouping.py does.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.grouping import emit, holdout, holdout_runs, holdout_scores, holdout_todo, load_study, replay
from benchmarks.grouping_many import conclude
from orchestrator.domain import mean_matrix
from orchestrator.store.runs import read_runs_table, table_affinity, table_runs
from orchestrator.transfer import analysis as an
from orchestrator.transfer import noise as nz

TABLES = Path(__file__).resolve().parent / "results" / "tables"
CONFIGS = Path(__file__).resolve().parent / "configs"
SIX = (("six-b", "six_tasks_b_tiny"), ("six-c", "six_tasks_c_tiny"), ("six-d", "six_tasks_d_tiny"))
SIX_METHODS = ("exhaustive", "pairwise", "affinity", "surrogate")
TEN_METHODS = ("pairwise", "surrogate", "affinity")
Assignment = Mapping[str, Sequence[str]]


def raw_choice(study: Any, runs: list[an.Run]) -> an.Grouping:
    """Today's rule: the best grouping on the measured gains, its total and t interval as measured."""
    zero = an.zero_baselines(an.baselines(runs))
    g = an.best_grouping(study.tasks, an.gain_table(study.tasks, an.gains(runs, study.higher_is_better),
                                                    neutral=zero), study.budget)
    g.ci = an.grouping_interval(runs, g.assignment, study.higher_is_better)
    return g


def cross_fit(runs: list[an.Run], choose: Callable[[list[an.Run]], Assignment],
              higher_is_better: Mapping[str, bool]) -> float | None:
    """Choose on every seed but one, score the choice at the seed left out; the mean over seeds."""
    seeds = sorted({r.seed for r in runs})
    vals = []
    for s in seeds:
        totals = an.grouping_totals([r for r in runs if r.seed == s], choose([r for r in runs if r.seed != s]),
                                    higher_is_better)
        vals += [totals[s]] if s in totals else []
    return statistics.fmean(vals) if len(vals) == len(seeds) >= 3 else None


def cases() -> list[dict[str, Any]]:
    """(set, method, study, the runs the method trained, its holdout config and table)."""
    out = []
    for name, cfg in SIX:
        rows = read_runs_table(TABLES / f"{name}-tiny.csv")
        study = load_study(str(CONFIGS / f"{cfg}.yaml"), rows, 2)
        runs = table_runs(rows, study.main_metric)
        affinity = mean_matrix(table_affinity(rows))
        for m in SIX_METHODS:
            res, used = replay(m, study, runs, affinity)
            out.append({"set": name, "method": m, "study": study, "runs": used, "result": res,
                        "config": str(CONFIGS / f"{cfg}.yaml"), "holdout": TABLES / f"{name}-tiny-holdout.csv"})
    for m in TEN_METHODS:
        study, runs, res = conclude(str(CONFIGS / "ten_tasks_tiny.yaml"), m, TABLES / f"ten-tiny-{m}.csv", 2)
        out.append({"set": "ten", "method": m, "study": study, "runs": runs, "result": res,
                    "config": str(CONFIGS / "ten_tasks_tiny.yaml"), "holdout": TABLES / "ten-tiny-holdout.csv"})
    return out


def new_seed(scores: dict[str, Any], key: str) -> dict[str, Any] | None:
    m = scores["methods"].get(key)
    if m is None:
        return None
    return {"total": m["total_gain"], "ci": m["ci"], "per_seed": m["per_seed"]}


def one_case(case: dict[str, Any], train_uri: str | None) -> dict[str, Any]:
    study, runs, res = case["study"], case["runs"], case["result"]
    hib = study.higher_is_better
    old = raw_choice(study, runs)
    sg = nz.seed_gains(runs, hib)
    noise = nz.task_noise(sg)
    old_new_estimate = nz.headline(old.assignment, sg, noise)
    rec = res["grouping"]
    within = rec.get("within_budget") or rec
    choices = {"old": old.assignment, "within_budget": within["assignment"]}
    done = holdout_runs(read_runs_table(case["holdout"]), study)
    if train_uri or not holdout_todo(study, choices, done)[0]:
        scores = holdout(case["config"], study, choices, case["holdout"], train_uri, ref="old")
    else:  # the budget's grouping was never trained at the new seeds: today's only
        scores = holdout_scores(study, done, {"old": old.assignment}, ref="old")
    apart = bool(rec.get("apart"))
    assert old_new_estimate is not None and rec["expected"] is not None
    sd_new = old_new_estimate.sd_check  # the new seeds' own noise, for today's grouping
    return {
        "set": case["set"], "method": case["method"], "tasks": len(study.tasks), "seeds": study.seeds,
        "noise": {t: n.as_dict() for t, n in sorted(noise.items())},
        "before": {"groups": old.groups, "headline": old.score, "interval": list(old.ci) if old.ci else None,
                   "new_seeds": new_seed(scores, "old")},
        "estimate_only": {"headline": old_new_estimate.expected, "interval": list(old_new_estimate.interval)},
        "after": {"groups": rec["groups"], "apart": apart, "headline": rec["expected"]["expected"],
                  "interval": rec["expected"]["interval"], "in_sample": rec["score"],
                  "p_noise": (within.get("expected") or {}).get("p_noise"),
                  "within_budget": {"groups": within["groups"], "headline": within["expected"]["expected"],
                                    "interval": within["expected"]["interval"],
                                    "new_seeds": new_seed(scores, "within_budget")},
                  # every task alone is 0 at any seed: its new-seed figure needs no training
                  "new_seeds": {"total": 0.0, "ci": [0.0, 0.0], "per_seed": [0.0] * len(scores["seeds"])}
                  if apart else new_seed(scores, "within_budget")},
        "cross_fit": {"before": cross_fit(runs, lambda rs: raw_choice(study, rs).assignment, hib)},
        "floor": math.sqrt(2 / math.pi) * sd_new,
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def stats_of(headline: Callable[[dict[str, Any]], float], interval: Callable[[dict[str, Any]], Any],
                 truth: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        errs = [abs(headline(r) - truth(r)) for r in rows]
        ivs = [interval(r) for r in rows]
        inside = [iv is not None and iv[0] <= truth(r) <= iv[1] for r, iv in zip(rows, ivs)]
        return {"cases": len(rows), "coverage": sum(inside) / len(rows), "mean_abs_error": statistics.fmean(errs),
                "max_abs_error": max(errs),
                "mean_width": statistics.fmean(iv[1] - iv[0] for iv in ivs if iv is not None)}

    today = lambda r: r["before"]["new_seeds"]["total"]  # noqa: E731
    return {
        "before": stats_of(lambda r: r["before"]["headline"], lambda r: r["before"]["interval"], today),
        "estimate_only": stats_of(lambda r: r["estimate_only"]["headline"], lambda r: r["estimate_only"]["interval"],
                                  today),
        "after": stats_of(lambda r: r["after"]["headline"], lambda r: r["after"]["interval"],
                          lambda r: r["after"]["new_seeds"]["total"]),
        "cross_fit_mean_abs_error": statistics.fmean(abs(r["cross_fit"]["before"] - today(r)) for r in rows
                                                     if r["cross_fit"]["before"] is not None),
        "floor_mean_abs_error": statistics.fmean(r["floor"] for r in rows),
    }


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:+.1f}%"


def _iv(iv: Sequence[float] | None) -> str:
    return "–" if not iv else f"{_pct(iv[0])} to {_pct(iv[1])}"


def markdown(out: dict[str, Any]) -> str:
    """The tables of docs/research/honest-headline.md: each case before and after (the headline
    against the new seeds), the replay of the choice (today's grouping, the new recommendation
    and the budget's grouping beside it, on new seeds), and the summaries."""
    lines = ["| set | method | before: headline (95% CI) | estimate of the same grouping (95% interval) | "
             "after: headline (95% interval) | p (noise) | new seeds: before / after |", "| --- " * 7 + "|"]
    for r in out["cases"]:
        b, e, a = r["before"], r["estimate_only"], r["after"]
        lines.append(f"| {r['set']} | {r['method']} | {_pct(b['headline'])} ({_iv(b['interval'])}) | "
                     f"{_pct(e['headline'])} ({_iv(e['interval'])}) | {_pct(a['headline'])} ({_iv(a['interval'])}) | "
                     f"{a['p_noise']:.3f} | {_pct(b['new_seeds']['total'])} / {_pct(a['new_seeds']['total'])} |")
    lines += ["", "| set | method | today's choice | on new seeds (95% CI) | new recommendation | on new seeds | "
              "not below today's by more than its noise | the budget's grouping | its headline | on new seeds |",
              "| --- " * 10 + "|"]
    for r in out["cases"]:
        b, a = r["before"], r["after"]
        wb = a["within_budget"]
        today, new = b["new_seeds"], a["new_seeds"]
        ok = new["total"] >= today["ci"][0] if today["ci"] else new["total"] >= today["total"]
        wbn = wb["new_seeds"]
        lines.append(f"| {r['set']} | {r['method']} | {_groups(b['groups'])} | {_pct(today['total'])} "
                     f"({_iv(today['ci'])}) | {'train apart' if a['apart'] else _groups(a['groups'])} | "
                     f"{_pct(new['total'])} | {'yes' if ok else 'no'} | {_groups(wb['groups'])} | "
                     f"{_pct(wb['headline'])} | {_pct(wbn['total']) if wbn else 'not trained'} |")
    lines += ["", "| cases | headline | coverage | mean abs error | max abs error | mean width | noise floor |",
              "| --- " * 7 + "|"]
    for key, label in (("six_tasks", "12 six-task"), ("ten_tasks", "3 ten-task")):
        sm = out[key]
        for kind, name in (("before", "before (on the choosing seeds)"),
                           ("estimate_only", "shrunk estimate, today's grouping"), ("after", "after (new choice)")):
            x = sm[kind]
            lines.append(f"| {label} | {name} | {100 * x['coverage']:.0f}% | {100 * x['mean_abs_error']:.1f} pts | "
                         f"{100 * x['max_abs_error']:.1f} pts | {100 * x['mean_width']:.1f} pts | "
                         f"{100 * sm['floor_mean_abs_error']:.1f} pts |")
    return "\n".join(lines) + "\n"


def _groups(groups: list[list[str]]) -> str:
    return " \\| ".join("+".join(g) for g in groups)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-holdout", default=None, metavar="TRACKING_URI",
                    help="train the recommendations the holdout tables lack into this MLflow store")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", action="store_true", help="print the tables of the findings page instead")
    args = ap.parse_args()
    rows = [one_case(c, args.train_holdout) for c in cases()]
    out = {"cases": rows,
           "six_tasks": summary([r for r in rows if r["tasks"] == 6]),
           "ten_tasks": summary([r for r in rows if r["tasks"] == 10]),
           "all": summary(rows)}
    if args.markdown:
        print(markdown(out))
        return
    emit(out, args.out)


if __name__ == "__main__":
    main()
