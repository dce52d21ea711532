"""Grouping quality and cost of the transfer methods, replayed from one exhaustive study's runs table.

An exhaustive study (``mtlo transfer CONFIG --method exhaustive``) trains every subset at
every seed, and its all-tasks run also measures the lookahead affinity; ``mtlo report NAME
--runs-table FILE`` writes its runs (scores, steps, the affinity, the single-task learning
curves) as one table, committed under benchmarks/results/tables/. The runs are deterministic
configurations, so what another method would have trained is a subset of them: this script
replays each method on the runs it would train (pairwise: singles + pairs, then the proposed
larger groups to confirm them; affinity: singles + the all-tasks run, then the proposed
groups; surrogate: singles + the subsets Optuna proposes at the study's first seed, then the
proposed groups), from the table alone, and scores each method's final grouping with the
*measured* gains of the exhaustive study:

- quality: the total gain of the method's grouping (each task in its best chosen group,
  measured) against the exhaustive optimum;
- cost: runs and optimizer steps (to the best epoch) the method needed; and the same with
  the lookahead's measurements counted, in training steps (``--lookahead-cost``: the output
  of benchmarks/affinity_cost.py), wherever the method's all-tasks runs measure it (affinity
  and exhaustive; pairwise never measures it): ``compute_fraction_with_lookahead``.

``affinity`` is mtlo's affinity method (groups proposed from the estimates of
orchestrator/transfer/predict.py); ``affinity_tag`` proposes them from TAG's own score (mean
affinity onto each task), everything else equal; ``surrogate`` is ``--method surrogate`` with
its default 2n subsets, ``surrogate_M`` the same with ``--runs M`` (``--runs``). ``estimates``
compares every estimate with the gain the exhaustive study measured for the same task in the
same group (Pearson and Spearman correlation, mean absolute error), over the groups each
estimate did not see.

The exhaustive optimum is the best of many groupings scored on the same three seeds it was
chosen on, so its score is biased upward (selection on seed noise). ``--holdout-table``
scores every method's grouping again on *fresh* seeds: each task in the group its method
chose for it, against fresh single-task baselines, and compared with the exhaustive method's
choice scored the same way (per-seed differences, t interval). ``--train-holdout URI``
first trains, at the seeds following the study's, whatever the holdout table lacks (studies
named ``NAME-holdout-<key>`` in that MLflow store, ``run_transfer(groups=...)``) and rewrites
the holdout table from every such study in the store.

With ``--truth`` (``truth.json`` of benchmarks/planted.py) it also checks the planted signs
and counts negative-transfer flags on the planted null pairs.

    python -m benchmarks.grouping --table benchmarks/results/tables/NAME.csv --config CONFIG [--budget 2] \
        [--holdout-table benchmarks/results/tables/NAME-holdout.csv [--train-holdout sqlite:///PATH/mlflow.db]] \
        [--runs 8 12] [--truth PATH/truth.json] [--out benchmarks/results/grouping_NAME.json]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.domain import mean_matrix
from orchestrator.store.runs import read_runs_table, runs_table, runs_table_text, table_affinity, table_runs
from orchestrator.transfer import analysis as an
from orchestrator.transfer import surrogate
from orchestrator.transfer.methods import Affinity
from orchestrator.transfer.results import analyse, check_seed_list, to_confirm
from orchestrator.transfer.study import Study, affinity_every, batches_per_pass, study_run


def value(groups: list[list[str]], tasks: list[str], table: dict[an.Group, dict[str, float]]) -> float:
    """Total measured gain of a grouping: each task in its best chosen group."""
    total = 0.0
    for t in tasks:
        scores = [table[an.group_of(g)][t] for g in groups if t in g and an.group_of(g) in table]
        total += max(scores) if scores else float("-inf")
    return total


RESULTS = Path(__file__).resolve().parent / "results"
MEASURES = ("exhaustive", "affinity", "affinity_tag")  # the methods whose all-tasks runs measure


def lookahead_cost_file(encoder: str, folder: Path = RESULTS) -> Path:
    """The benchmarks/affinity_cost.py output measured with ``encoder`` (the study's
    ``encoder.model``); an output without the field was made with the script's default, the
    tiny encoder. A measurement's cost in training steps depends on the encoder (six tasks:
    11.8 tiny, 22.1 MiniLM-L6), so a study is never charged another encoder's."""
    for path in sorted(folder.glob("affinity_cost*.json")):
        if json.loads(path.read_text()).get("encoder", "builtin:tiny-random") == encoder:
            return path
    raise SystemExit(f"grouping.py: no affinity_cost*.json in {folder} measured with {encoder}: run "
                     f"benchmarks/affinity_cost.py --encoder {encoder}, or give --lookahead-cost")


def lookahead_steps(method: str, study: Any, used: list[an.Run], per_measurement: float) -> float:
    """Training steps the lookahead's measurements cost in the runs ``used``: its all-tasks
    runs measure every ``affinity_every`` steps (counted, like the steps, to the best epoch)."""
    if method not in MEASURES:
        return 0.0
    every = affinity_every(study.tasks, study.max_steps)
    return sum(r.steps // every for r in used if len(r.group) == len(study.tasks)) * per_measurement


def replay(method: str, study: Any, runs: list[an.Run], affinity: dict | None, rounds: int = 1
           ) -> tuple[Any, list[an.Run]]:
    """What ``mtlo transfer --method METHOD`` would conclude, trained on these runs."""
    tasks = study.tasks
    if method == "pairwise":
        used = [r for r in runs if len(r.group) <= 2]
    elif method in ("affinity", "affinity_tag"):
        used = [r for r in runs if len(r.group) == 1 or len(r.group) == len(tasks)]
    elif method.startswith("surrogate"):
        sampled = set(surrogate.propose_subsets(tasks, surrogate_runs(method, len(tasks)), study.seeds[0]))
        used = [r for r in runs if len(r.group) == 1 or r.group in sampled]
    else:
        used = list(runs)
    if method == "affinity_tag":
        return replay_tag(study, runs, used, affinity or {})
    st = replace(study, method=method.split("_")[0])
    res = analyse(st, used, affinity if method != "pairwise" else None)
    for _ in range(rounds):  # confirmation, as mtlo transfer does (here: taken from the exhaustive runs)
        todo = {an.group_of(g) for g in to_confirm(res)}
        if not todo:
            break
        used += [r for r in runs if r.group in todo]
        res = analyse(st, used, affinity if method != "pairwise" else None)
    return res, used


def surrogate_runs(method: str, n: int) -> int:
    """``surrogate``: its default subsets (2n); ``surrogate_M``: M."""
    return int(method.split("_")[1]) if "_" in method else surrogate.default_runs(n)


def affinity_table(tasks: list[str], z: dict[str, dict[str, float]]) -> dict[an.Group, dict[str, float]]:
    """TAG's own group score, the comparison for mtlo's estimate: task t in group G scores the
    mean affinity of the others onto it, mean over j in G \\ {t} of Z[j -> t]; a task alone
    scores 0."""
    table: dict[an.Group, dict[str, float]] = {(t,): {t: 0.0} for t in tasks}
    for k in range(2, len(tasks) + 1):
        for combo in itertools.combinations(sorted(tasks), k):
            row = {}
            for t in combo:
                vals = [z.get(j, {}).get(t) for j in combo if j != t]
                if any(v is None for v in vals):
                    break
                row[t] = sum(vals) / len(vals)  # type: ignore[arg-type]
            else:
                table[combo] = row
    return table


def replay_tag(study: Any, runs: list[an.Run], used: list[an.Run], affinity: dict) -> tuple[Any, list[an.Run]]:
    """The affinity method with TAG's own group score for the proposal (then the same
    confirmation and the same choice on measured gains)."""
    st = replace(study, method="exhaustive")
    proposed = an.best_grouping(study.tasks, affinity_table(study.tasks, affinity), study.budget)
    todo = {an.group_of(g) for g in proposed.groups if len(g) > 1} - {r.group for r in used}
    used = used + [r for r in runs if r.group in todo]
    res = analyse(st, used)  # its recommendation is chosen on measured gains only
    res["proposed"] = proposed.as_dict()
    return res, used


def correlations(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    from scipy import stats

    if len(pairs) < 3:
        return {"n": len(pairs)}
    est, meas = zip(*pairs, strict=True)
    return {"n": len(pairs), "pearson": float(stats.pearsonr(est, meas)[0]),
            "spearman": float(stats.spearmanr(est, meas)[0]),
            "mean_abs_error": sum(abs(a - b) for a, b in pairs) / len(pairs)}


def estimate_accuracy(study: Any, runs: list[an.Run], affinity: dict, gains: list[an.Gain]) -> dict[str, Any]:
    """Every estimate against the measured Δ_t(G), over the groups of 2 to n-1 tasks (the ones
    the affinity method estimates: it measures the all-tasks group)."""
    n = len(study.tasks)
    every = an.group_of(study.tasks)
    singles_all = [r for r in runs if len(r.group) == 1 or r.group == every]
    at_all = [g for g in gains if g.group == every]
    est = Affinity.estimator(study, singles_all, at_all, affinity)
    tag = affinity_table(study.tasks, affinity)
    matrix = an.pairwise_matrix(gains, study.tasks)
    rows = [g for g in gains if 2 <= len(g.group) < n]
    out: dict[str, Any] = {"carry": est.carry, "residual": est.residual, "groups": len({g.group for g in rows})}
    for name, f in (("affinity", lambda t, g: est(t, g)), ("dilution_only", lambda t, g: est.dilution(t, g)),
                    ("tag_score", lambda t, g: tag.get(g, {}).get(t)),
                    ("standley", lambda t, g: an.standley_estimate(matrix, t, g) if len(g) > 2 else None)):
        pairs = [(v, g.delta) for g in rows for v in [f(g.task, g.group)] if v is not None]
        out[name] = correlations(pairs)
        if name == "tag_score":
            out[name].pop("mean_abs_error", None)
    three = [g for g in rows if len(g.group) > 2]  # where Standley estimates too: the same rows for both
    out["affinity_3plus"] = correlations([(v, g.delta) for g in three for v in [est(g.task, g.group)] if v is not None])
    return out


def surrogate_accuracy(study: Any, runs: list[an.Run], gains: list[an.Gain], m: int) -> dict[str, Any]:
    """The surrogate fitted on what ``--method surrogate --runs m`` trains first (every task
    alone, the subsets Optuna proposes) against the measured Δ_t(G) of every other group of
    two or more tasks; and its own cross-validated fit on the subsets it was given."""
    sampled = set(surrogate.propose_subsets(study.tasks, m, study.seeds[0]))
    fit = surrogate.fit(study.tasks, [r for r in runs if len(r.group) == 1 or r.group in sampled],
                        study.higher_is_better)
    pairs = [(v, g.delta) for g in gains if g.group not in sampled for v in [fit.predict(g.task, g.group)]
             if v is not None]
    d = fit.as_dict()
    return {"runs": m, "unseen": correlations(pairs), "cv": d["cv"],
            "found": {t: {"helpers": x["helpers"], "hurters": x["hurters"]} for t, x in d["tasks"].items()}}


def holdout_runs(rows: list[dict[str, Any]], study: Any) -> list[an.Run]:
    """The finished runs of a holdout table (the holdout studies of one study), one per task set
    and seed (a task set trained by more than one study counts once, the first)."""
    out: dict[tuple[an.Group, int], an.Run] = {}
    for r in table_runs(rows, study.main_metric):
        out.setdefault((r.group, r.seed), r)
    return list(out.values())


def export_holdout(uri: str, prefix: str, path: Path) -> None:
    """Every holdout study ``prefix...`` of the store, its runs as one table at ``path``, after
    the rows already there of studies this store does not hold (a committed table outlives
    the store its first studies were trained in)."""
    from mlflow.tracking import MlflowClient

    from orchestrator.files import write_whole
    from orchestrator.store.runs import child_runs

    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    parents = client.search_runs(exps, filter_string=f"attributes.run_name LIKE '{prefix}%'",
                                 order_by=["attributes.start_time ASC"], max_results=100)
    studies = [p for p in parents if p.data.tags.get("mtlo.role") == "transfer"]
    here = {p.info.run_name for p in studies}
    rows = [r for r in (read_runs_table(path) if path.is_file() else []) if r.get("study") not in here]
    for p in studies:
        rows += [{"study": p.info.run_name, **row}
                 for row in runs_table(child_runs(client, p.info.experiment_id, p.info.run_id))]
    write_whole(path, runs_table_text(rows, path.suffix.lower()))


def load_study(config: str, rows: list[dict[str, Any]], budget: int) -> Study:
    """The exhaustive study of a runs table, as ``mtlo transfer`` built it from ``config``
    (tasks, main metrics, the equal-budget step cap; the seeds are the table's)."""
    from orchestrator.config import load_config
    from trainables import inspect_tasks

    cfg = load_config(config, [])
    run = cfg.run_dict()
    info = inspect_tasks(run)
    run = study_run(run, info)
    seeds = sorted({int(r["seed"]) for r in rows if r.get("role") == "trial"})
    tasks = list(cfg.tasks)
    return Study(cfg.name, "", tasks, {t: i.main_metric for t, i in info.items()},
                 {t: i.higher_is_better for t, i in info.items()}, "exhaustive", seeds, budget,
                 run["train"]["max_steps"], run["train"]["schedule"], batches_per_pass(run, info),
                 float(run["train"]["temperature"]))


def holdout_seeds(study: Any) -> list[int]:
    """The fresh seeds: as many as the study's, following them (as ``--check-seeds`` takes them)."""
    return check_seed_list(study, len(study.seeds))


def holdout_todo(study: Any, choices: dict[str, dict[str, list[str]]], done: list[an.Run]
                 ) -> tuple[list[an.Group], bool]:
    """What the holdout studies still lack: the task sets the methods chose (and every task
    alone) never trained there, and whether the baselines must be trained with them (not
    when an earlier holdout study trained every task alone at every fresh seed)."""
    have = {(r.group, r.seed) for r in done}
    need = {an.group_of(g) for a in choices.values() for g in a.values()} | {(t,) for t in study.tasks}
    missing = sorted(need - {g for g, _ in have}, key=lambda g: (len(g), g))
    singles = not all(((t,), s) in have for t in study.tasks for s in holdout_seeds(study))
    return missing, singles


def train_holdout(config: str, tracking_uri: str, name: str, study: Any, groups: list[list[str]],
                  singles: bool = True) -> None:
    """Train ``groups`` at fresh seeds as the study ``name``, with every task alone unless
    ``singles`` is false (an earlier holdout study trained them at these seeds)."""
    from orchestrator.config import load_config
    from orchestrator.runtime.address import prepare
    from orchestrator.transfer.runner import run_transfer

    seed = holdout_seeds(study)[0]
    cfg = load_config(config, [f"name={name}", f"train.seed={seed}", f"mlflow.tracking_uri={tracking_uri}"])
    prepare(None, "--address")  # a new local Ray, on loopback
    # the committed tables were trained before the own-data rule: their new seeds are trained as they were
    run_transfer(cfg, Path(config), method="exhaustive", seeds=len(study.seeds), budget=study.budget,
                 groups=groups, singles=singles, own_data=False)


def holdout_scores(study: Any, runs: list[an.Run], choices: dict[str, dict[str, list[str]]],
                   ref: str = "exhaustive") -> dict[str, Any]:
    """Each method's grouping scored on the fresh-seed runs: each task in the group its
    method chose for it (assignment), its total gain per seed (``an.grouping_totals``), and
    per seed the difference from the ``ref`` method's choice, with its t interval (the
    baselines cancel out of it)."""
    base = an.grouping_totals(runs, choices[ref], study.higher_is_better)
    out: dict[str, Any] = {"seeds": sorted(base), "runs": len(runs), "reference": ref, "methods": {}}
    for m, assign in choices.items():
        totals = an.grouping_totals(runs, assign, study.higher_is_better)
        vals = [totals[s] for s in sorted(base)]
        diff = [totals[s] - base[s] for s in sorted(base)]
        mean_diff, total = statistics.fmean(diff), statistics.fmean(vals)
        ci = an.t_interval(diff) if any(d != diff[0] for d in diff) else None
        out["methods"][m] = {"total_gain": total, "ci": an.t_interval(vals), "per_seed": vals,
                             f"diff_to_{ref}": mean_diff, "diff_ci": list(ci) if ci else None,
                             "relative_gap": -mean_diff / abs(statistics.fmean(base.values()))}
    return out


def holdout(config: str, study: Any, choices: dict[str, dict[str, list[str]]], path: Path,
            train_uri: str | None, ref: str = "exhaustive") -> dict[str, Any]:
    """Every method's grouping scored on the fresh seeds of the holdout table at ``path``;
    with ``train_uri``, what the table lacks is trained first into that store (studies named
    ``NAME-holdout-<key>``) and the table written again from all of them."""
    prefix = f"{study.name}-holdout"
    done = holdout_runs(read_runs_table(path), study) if path.is_file() else []
    missing, singles = holdout_todo(study, choices, done)
    if missing and train_uri:
        key = hashlib.sha1(" ".join("+".join(g) for g in missing).encode()).hexdigest()[:8]
        train_holdout(config, train_uri, f"{prefix}-{key}", study, [list(g) for g in missing], singles)
        export_holdout(train_uri, prefix, path)
        done = holdout_runs(read_runs_table(path), study)
        missing, _ = holdout_todo(study, choices, done)
    if missing:
        sys.exit(f"--holdout-table: {path} lacks {', '.join('+'.join(g) for g in missing)} at the fresh seeds "
                 "(--train-holdout URI trains them)")
    return holdout_scores(study, done, choices, ref)


def emit(out: dict[str, Any], path: str | None) -> None:
    """A benchmark's result as JSON on stdout, and at ``path`` if given."""
    text = json.dumps(out, indent=2, default=str)
    if path:
        Path(path).write_text(text)
    print(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True, help="runs table of an exhaustive study (mtlo report NAME --runs-table)")
    ap.add_argument("--config", required=True, help="the study's config")
    ap.add_argument("--budget", type=int, default=2, help="groups allowed (default 2)")
    ap.add_argument("--confirm-rounds", type=int, default=1, help="as mtlo transfer --confirm-rounds (default 1)")
    ap.add_argument("--runs", type=int, nargs="*", default=[],
                    help="also replay --method surrogate with these --runs (default: only its default, 2n)")
    ap.add_argument("--holdout-table", default=None, help="runs table of the groupings trained on fresh seeds")
    ap.add_argument("--train-holdout", default=None, metavar="TRACKING_URI",
                    help="train what --holdout-table lacks into this MLflow store, then rewrite the table")
    ap.add_argument("--truth", default=None)
    ap.add_argument("--lookahead-cost", default=None,
                    help="benchmarks/affinity_cost.py's output: training steps one lookahead measurement costs "
                         "(default: the one in benchmarks/results measured with the study's encoder)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.train_holdout and not args.holdout_table:
        sys.exit("--train-holdout: give --holdout-table, the table to write")
    rows = read_runs_table(Path(args.table))
    study = load_study(args.config, rows, args.budget)
    runs = table_runs(rows, study.main_metric)
    affinity = mean_matrix(table_affinity(rows))
    full = analyse(study, runs)
    gains = an.gains(runs, study.higher_is_better)
    table = an.gain_table(study.tasks, gains, neutral=an.zero_baselines(an.baselines(runs)))  # as analyse scores it
    opt: Any = full["grouping"]
    out: dict[str, Any] = {"study": study.name, "table": args.table, "tasks": study.tasks, "seeds": study.seeds,
                           "budget": study.budget, "confirm_rounds": args.confirm_rounds,
                           "optimum": {"groups": opt["groups"], "score": opt["score"], "ci": opt["ci"]},
                           "methods": {}}
    all_steps = sum(r.steps for r in runs)
    from orchestrator.config import load_config

    cost_file = Path(args.lookahead_cost or lookahead_cost_file(load_config(args.config, []).encoder.model))
    per = float(json.loads(cost_file.read_text())["lookahead_steps_per_measurement"])
    all_look = all_steps + lookahead_steps("exhaustive", study, runs, per)
    out["lookahead"] = {"every": affinity_every(study.tasks, study.max_steps), "steps_per_measurement": per,
                        "from": str(cost_file)}
    choices: dict[str, dict[str, list[str]]] = {}  # method -> task -> the group it is scored in
    extra = [f"surrogate_{m}" for m in args.runs if m != surrogate.default_runs(len(study.tasks))]
    for method in ("exhaustive", "pairwise", "affinity", "affinity_tag", "surrogate", *extra):
        res, used = replay(method, study, runs, affinity, args.confirm_rounds)
        groups = res["grouping"]["groups"]
        v = value(groups, study.tasks, table)
        steps = sum(r.steps for r in used)
        look = lookahead_steps(method, study, used, per)
        out["methods"][method] = {
            "groups": groups, "proposed": (res.get("proposed") or {}).get("groups"),
            "measured_total_gain": v, "gap_to_optimum": opt["score"] - v,
            "runs": len(used), "train_steps": steps, "compute_fraction": steps / all_steps if all_steps else None,
            "lookahead_steps": look, "compute_fraction_with_lookahead": (steps + look) / all_look if all_look else None,
            "negative_transfer": [(g["task"], g["group"]) for g in res["negative_transfer"]],
        }
        choices[method] = res["grouping"]["assignment"]
    if args.holdout_table:
        out["holdout"] = holdout(args.config, study, choices, Path(args.holdout_table), args.train_holdout)
    out["estimates"] = estimate_accuracy(study, runs, affinity, gains)
    out["estimates"]["surrogate"] = [surrogate_accuracy(study, runs, gains, m)
                                     for m in sorted({surrogate.default_runs(len(study.tasks)), *args.runs})]
    if args.truth:
        truth = json.loads(Path(args.truth).read_text())
        pair = {(g["task"], tuple(g["group"])): g for g in full["gains"] if len(g["group"]) == 2}
        checks = {}
        for kind, pairs in truth.items():
            for task, partner in pairs:
                g = pair.get((task, an.group_of((task, partner))))
                checks[f"{kind}: {task} with {partner}"] = None if g is None else {
                    "delta": g["delta"], "ci": g["ci"], "p": g["p"], "significant": g["significant"],
                    "as_planted": (g["delta"] > 0 and g["significant"]) if kind == "helps" else
                    (not (g["significant"] and g["delta"] > 0)) if kind == "hurts_or_neutral" else
                    (not g["significant"])}
        out["planted"] = checks
        nulls = [tuple(p) for p in truth.get("null", [])]
        out["null_flags"] = {m: sum(1 for t, grp in r["negative_transfer"]
                                    if any(t == a and b in grp and len(grp) == 2 for a, b in nulls))
                             for m, r in out["methods"].items()}
        out["null_pairs"] = len(nulls)
    emit(out, args.out)


if __name__ == "__main__":
    main()
