"""How much of a task's gain was training it longer: the ten-task study's ner rows under the
rule before own data (every run stopped on its group's mean objective) and under the own-data
rule (a task in a group trains the own batches it took alone at the same seed, judged on its
own validation score within them).

The old rows come from the committed pairwise study (``tables/ten-tiny-pairwise.csv``, seeds
0-2); the new ones from the same config and seeds trained again, ner alone and with each of its
nine partners (and every task alone):

    mtlo transfer benchmarks/configs/ten_tasks_tiny.yaml --seeds 3 --set name=ten-tiny-ner-own-data \\
        --groups ner+rt,ner+imdb,ner+movies,ner+tweets,ner+amazon,ner+nyt,ner+sms,ner+trec,ner+fine
    mtlo report ten-tiny-ner-own-data --runs-table benchmarks/results/tables/ten-tiny-ner-own-data.csv
    python -m benchmarks.own_data [--out benchmarks/results/own_data.json]

For each partner: ner's gain with it and its gain from ner (relative to alone, 95% Welch
interval), before and after; ner's own batches in the pair (before: about half the pair's steps
under round robin; after: what ner took alone); and whether the single-task runs, which the
rule leaves as they were, came out the same (to 1e-9: a metric's last float digit may differ).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from benchmarks.grouping import emit, load_study
from orchestrator.store.runs import read_runs_table, table_runs
from orchestrator.transfer import analysis as an

TABLES = Path(__file__).resolve().parent / "results" / "tables"
CONFIG = Path(__file__).resolve().parent / "configs" / "ten_tasks_tiny.yaml"
TASK = "ner"


def gains_of(runs: list[an.Run], hib: dict[str, bool]) -> dict[tuple[str, an.Group], an.Gain]:
    return {(g.task, g.group): g for g in an.gains(runs, hib)}


def own_batches(rows: list[dict[str, Any]], group: an.Group, after: bool) -> list[float]:
    """ner's own batches in ``group`` at each seed: after, the run's own/ner; before, half of the
    pair's steps (round robin alternates the two tasks)."""
    out = []
    for r in rows:
        if r.get("role") in ("trial", "confirm") and an.group_of(str(r["tasks"]).split("+")) == group:
            out.append(float(r["own/ner"]) if after and "own/ner" in r else float(r["train_steps"]) / len(group))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=str(TABLES / "ten-tiny-pairwise.csv"))
    ap.add_argument("--after", default=str(TABLES / "ten-tiny-ner-own-data.csv"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    before_rows, after_rows = read_runs_table(Path(args.before)), read_runs_table(Path(args.after))
    study = load_study(str(CONFIG), before_rows, 2)
    hib = study.higher_is_better
    before, after = table_runs(before_rows, study.main_metric), table_runs(after_rows, study.main_metric)
    seeds = sorted({r.seed for r in after})
    before = [r for r in before if r.seed in seeds]
    g_before, g_after = gains_of(before, hib), gains_of(after, hib)
    alone = {(r.group[0], r.seed): r.scores[r.group[0]] for r in before if len(r.group) == 1}
    diffs = [abs(alone[(r.group[0], r.seed)] - r.scores[r.group[0]]) for r in after
             if len(r.group) == 1 and (r.group[0], r.seed) in alone]
    same_singles = len(diffs) == sum(1 for r in after if len(r.group) == 1) and max(diffs) < 1e-9
    rows = []
    for partner in [t for t in study.tasks if t != TASK]:
        group = an.group_of((TASK, partner))
        row: dict[str, Any] = {"partner": partner}
        for side, gains, table, is_after in (("before", g_before, before_rows, False),
                                             ("after", g_after, after_rows, True)):
            mine, theirs = gains.get((TASK, group)), gains.get((partner, group))
            row[side] = {"ner_gain": mine.delta if mine else None,
                         "ner_ci": list(mine.ci) if mine and mine.ci else None,
                         "partner_gain": theirs.delta if theirs else None,
                         "partner_ci": list(theirs.ci) if theirs and theirs.ci else None,
                         "ner_own_batches": statistics.fmean(own_batches(table, group, is_after) or [0.0])}
        rows.append(row)
    ner_alone = [r.trained for r in after if r.group == (TASK,)]
    out = {"seeds": seeds, "task": TASK, "same_single_task_runs": same_singles, "max_single_difference": max(diffs),
           "ner_alone_batches": statistics.fmean(ner_alone) if ner_alone else None, "pairs": rows,
           "mean_ner_gain": {side: statistics.fmean(r[side]["ner_gain"] for r in rows
                                                    if r[side]["ner_gain"] is not None)
                             for side in ("before", "after")},
           "mean_partner_gain": {side: statistics.fmean(r[side]["partner_gain"] for r in rows
                                                        if r[side]["partner_gain"] is not None)
                                 for side in ("before", "after")}}
    emit(out, args.out)


if __name__ == "__main__":
    main()
