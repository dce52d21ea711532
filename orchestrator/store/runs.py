"""A study or search read back from MLflow as typed rows: one :class:`Run` per finished
trial (task set, seed, each task's main metric at its best epoch, steps), the runs that
failed, the affinities measured, the trials of a search. Everything a report or an analysis
needs comes from here; nothing else reads child runs.

The arithmetic over runs (a run, a group, the relative gain) is ``orchestrator/domain.py``:
it needs no MLflow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.domain import DONE, FAILED, Run, group_of
from orchestrator.errors import ConfigError

STUDY_ROLES = ("trial", "confirm")  # a study's runs: its method's task sets and the confirmations
ALL_ROLES = (*STUDY_ROLES, "check")  # and --check-seeds' runs at new seeds (never in the study's figures)
TEXT_COLUMNS = ("run_id", "role", "tasks", "status")  # a runs table's columns that stay text
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # what a config's name may be (orchestrator/config.py)


# -- reading MLflow -----------------------------------------------------------------------------
MAIN_METRIC_TAG = "mtlo.main_metric"  # on a search's parent run: each task's main metric


def main_metric_tag(main_metric: Mapping[str, str]) -> dict[str, str]:
    """The tag naming each task's main metric (``rt=accuracy,vader=pearson``)."""
    return {MAIN_METRIC_TAG: ",".join(f"{t}={m}" for t, m in main_metric.items())}


def read_main_metric(tags: Mapping[str, str]) -> dict[str, str]:
    """What :func:`main_metric_tag` wrote; empty for a run logged before the tag existed."""
    return dict(kv.split("=", 1) for kv in tags.get(MAIN_METRIC_TAG, "").split(",") if "=" in kv)


def find_parent(client: Any, ref: str) -> Any:
    """The parent run of a search or transfer study, by run id or by name (the latest)."""
    if _RUN_ID.match(ref):
        try:
            run = client.get_run(ref)
        except Exception as exc:  # MLflow raises its own RestException / MlflowException
            raise ConfigError(f"report: no MLflow run with id {ref} ({type(exc).__name__})") from None
        role = run.data.tags.get("mtlo.role")
        if role not in ("search", "transfer"):
            raise ConfigError(f"report: run {ref} is {'a ' + role + ' run' if role else 'not an mtlo run'}, not the "
                              "parent run of a search or transfer study")
        return run
    if not _NAME.match(ref):
        raise ConfigError(f"report: {ref!r} is neither a run id nor a search or study name (letters, digits, "
                          "'_', '-', '.')")
    exps = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exps, filter_string=f"attributes.run_name = '{ref}'",
                              order_by=["attributes.start_time DESC"], max_results=50) if exps else []
    runs = [r for r in runs if r.data.tags.get("mtlo.role") in ("search", "transfer")]
    if not runs:
        raise ConfigError(f"report: no search or transfer study named '{ref}' in the MLflow store")
    return runs[0]


def child_runs(client: Any, experiment_id: str, parent_id: str, role: str | None = None) -> list[Any]:
    """The child runs of a parent run (``role``: only those tagged ``mtlo.role`` = role)."""
    where = f"tags.`mlflow.parentRunId` = '{parent_id}'" + (f" and tags.`mtlo.role` = '{role}'" if role else "")
    return client.search_runs([experiment_id], filter_string=where, max_results=50000)


def study_runs(children: list[Any], main_metric: Mapping[str, str], roles: tuple[str, ...] = STUDY_ROLES
               ) -> list[Run]:
    """The finished trials of a transfer study (trial and confirmation runs; ``roles``: others,
    such as the check runs) as typed rows."""
    out = []
    for r in children:
        tags, metrics = r.data.tags, r.data.metrics
        if tags.get("mtlo.role") not in roles or r.info.status != "FINISHED":
            continue
        group = group_of(tags["mtlo.tasks"].split(","))
        scores = {t: metrics.get(f"best/{t}/{main_metric[t]}") for t in group if t in main_metric}
        if any(v is None for v in scores.values()):
            continue
        test = {t: metrics[f"test/{t}/{main_metric[t]}"] for t in group
                if t in main_metric and f"test/{t}/{main_metric[t]}" in metrics}
        out.append(Run(group, int(tags.get("mtlo.seed", 0)), scores,  # type: ignore[arg-type]
                       steps=int(metrics.get("best_step", 0)), best_epoch=int(metrics.get("best_epoch", 0)),
                       run_id=r.info.run_id, test=test, trained=int(metrics.get("train_steps", 0))))
    return out


RUNS_TABLE_SUFFIXES = (".csv", ".json")


def runs_table(children: list[Any], client: Any = None) -> list[dict[str, Any]]:
    """Every trained run of a search or study, one row each, from MLflow alone: its role,
    task set, seed, status, best epoch, steps (to the best epoch and in all), and each task's
    validation metrics at the best epoch (``val/<task>/<metric>``) and test metrics
    (``test/<task>/<metric>``); a study's groups each task's own batches (``own/<task>``,
    ``judged_own/<task>``); a search's trials also their parameters (``param.<name>``);
    a study's all-tasks runs the affinity they measured (``affinity/<i>/<j>``,
    ``gaffinity/<i>/<j>``), and (with ``client``) its single-task runs their learning curves
    (``curve/<task>/<metric>``: JSON ``[[steps, score], ...]`` per epoch). What a store that
    may not outlive its machine holds of a study, as a table to commit: a study's analysis
    can be replayed from it (:func:`table_runs`)."""
    rows = []
    for r in sorted(children, key=lambda r: (r.info.start_time or 0, r.info.run_id)):
        tags, metrics, params = r.data.tags, r.data.metrics, r.data.params
        if tags.get("mtlo.role") not in ALL_ROLES:
            continue
        row: dict[str, Any] = {
            "run_id": r.info.run_id, "role": tags["mtlo.role"],
            "tasks": "+".join(sorted(tags["mtlo.tasks"].split(","))),
            "seed": int(tags.get("mtlo.seed", 0)), "status": tags.get("mtlo.status") or r.info.status,
            "best_epoch": int(metrics.get("best_epoch", 0)), "best_step": int(metrics.get("best_step", 0)),
            "train_steps": int(metrics.get("train_steps", 0))}
        row.update({k: v for k, v in sorted(params.items()) if k.startswith("param.")})
        row.update({f"val/{k.removeprefix('best/')}": v for k, v in sorted(metrics.items())
                    if k.startswith("best/") and k.count("/") == 2})
        row.update({k: v for k, v in sorted(metrics.items()) if k.startswith("test/")})
        # train.own_batches (a group of a study): each task's own batches, and those at its judgement
        row.update({k: int(v) for k, v in sorted(metrics.items()) if k.startswith(("own/", "judged_own/"))})
        row.update({k: v for k, v in sorted(metrics.items()) if k.startswith(("affinity/", "gaffinity/"))})
        group = row["tasks"].split("+")
        if client is not None and len(group) == 1 and r.info.status == "FINISHED":
            steps = {m.step: m.value for m in client.get_metric_history(r.info.run_id, "step")}
            for k in sorted(metrics):
                if k.startswith(f"val/{group[0]}/"):
                    hist = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, k))
                    row[f"curve/{k.removeprefix('val/')}"] = json.dumps(
                        [[int(steps[e]), float(v)] for e, v in hist if e in steps])
        rows.append(row)
    return rows


def read_runs_table(path: Path) -> list[dict[str, Any]]:
    """A runs table written by ``mtlo report --runs-table`` (CSV or JSON), numbers as numbers
    (a run id of digits alone stays text) and a CSV's empty cells left out."""
    text = path.read_text()
    if path.suffix.lower() == ".json":
        return list(json.loads(text))
    import csv
    import io

    def cell(v: str) -> Any:
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v

    return [{k: v if k in TEXT_COLUMNS else cell(v) for k, v in row.items() if v != ""}
            for row in csv.DictReader(io.StringIO(text))]


def table_runs(rows: list[dict[str, Any]], main_metric: Mapping[str, str]) -> list[Run]:
    """The finished runs of a study from its runs table, as ``study_runs`` reads them from
    MLflow (with the single-task runs' learning curves where the table has them)."""
    out = []
    for row in rows:
        if row.get("role") not in STUDY_ROLES or row.get("status") not in DONE:
            continue
        group = group_of(str(row["tasks"]).split("+"))
        scores = {t: row.get(f"val/{t}/{main_metric[t]}") for t in group if t in main_metric}
        if any(v is None for v in scores.values()):
            continue
        test = {t: float(row[f"test/{t}/{main_metric[t]}"]) for t in group
                if t in main_metric and f"test/{t}/{main_metric[t]}" in row}
        curve: tuple[tuple[int, float], ...] = ()
        if len(group) == 1 and f"curve/{group[0]}/{main_metric[group[0]]}" in row:
            curve = tuple((int(s), float(v)) for s, v in json.loads(row[f"curve/{group[0]}/{main_metric[group[0]]}"]))
        out.append(Run(group, int(row["seed"]), {t: float(v) for t, v in scores.items()},  # type: ignore[arg-type]
                       steps=int(row.get("best_step", 0)), best_epoch=int(row.get("best_epoch", 0)),
                       run_id=row.get("run_id"), curve=curve, test=test, trained=int(row.get("train_steps", 0))))
    return out


def table_affinity(rows: list[dict[str, Any]], prefix: str = "affinity") -> list[dict[str, dict[str, float]]]:
    """Per finished run of a runs table that measured it, the affinity ``prefix/<i>/<j>`` as Z[i][j]."""
    return [z for row in rows if row.get("status") in DONE for z in [_matrix(row, prefix)] if z]


def runs_table_text(rows: list[dict[str, Any]], suffix: str) -> str:
    """``rows`` as CSV (a column for every key any row has; empty where a row has none) or JSON."""
    if suffix == ".json":
        return json.dumps(rows, indent=2) + "\n"
    import csv
    import io

    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: inert_cell(v) for k, v in row.items()} for row in rows])
    return buf.getvalue()


def inert_cell(value: Any) -> Any:
    """A CSV cell that a spreadsheet will not run: text starting with ``= + - @`` (or a tab or
    carriage return) gets a leading ``'`` (OWASP's CSV injection advice); numbers stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def failed_runs(children: list[Any]) -> list[dict[str, Any]]:
    """The trials of a study that failed or diverged (left out of the analysis, never dropped
    silently: the report and ``--json`` list them)."""
    return [{"group": tags["mtlo.tasks"].split(","), "seed": int(tags.get("mtlo.seed", 0)),
             "status": tags["mtlo.status"], "error": tags.get("mtlo.error", ""), "run_id": r.info.run_id}
            for r in children for tags in [r.data.tags]
            if tags.get("mtlo.role") in ALL_ROLES and tags.get("mtlo.status") in FAILED]


def affinity_matrices(children: list[Any], prefix: str) -> list[dict[str, dict[str, float]]]:
    """Per finished run that measured it, the affinity ``prefix/<i>/<j>`` as Z[i][j]."""
    return [z for r in children if r.info.status == "FINISHED" for z in [_matrix(r.data.metrics, prefix)] if z]


def _matrix(metrics: Mapping[str, Any], prefix: str) -> dict[str, dict[str, float]]:
    z: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        if k.startswith(prefix + "/"):
            _, i, j = k.split("/", 2)
            z.setdefault(i, {})[j] = float(v)
    return z


def with_curves(client: Any, runs: list[Run], main_metric: Mapping[str, str],
                known: list[Run] | None = None) -> list[Run]:
    """The single-task runs with their learning curves (the validation score and the steps
    at every epoch, from their MLflow metric histories; a finished run's never change, so
    those of ``known`` runs are reused)."""
    have = {r.run_id: r.curve for r in known or [] if r.curve}
    out = []
    for r in runs:
        if r.run_id in have:
            r = replace(r, curve=have[r.run_id])
        elif len(r.group) == 1 and r.run_id:
            t = r.group[0]
            steps = {m.step: m.value for m in client.get_metric_history(r.run_id, "step")}
            scores = {m.step: m.value for m in client.get_metric_history(r.run_id, f"val/{t}/{main_metric[t]}")}
            r = replace(r, curve=tuple((int(steps[e]), float(v)) for e, v in sorted(scores.items()) if e in steps))
        out.append(r)
    return out


def split_scores(metrics: Mapping[str, float], prefix: str) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from a run's ``<prefix>/<task>/<metric>`` metrics."""
    out: dict[str, dict[str, float]] = {}
    for k, v in metrics.items():
        parts = k.split("/")
        if len(parts) == 3 and parts[0] == prefix:
            out.setdefault(parts[1], {})[parts[2]] = v
    return out


def closing_metrics(best: dict[str, Any], last: dict[str, Any]) -> dict[str, float]:
    """A trial's metrics at its best epoch (by objective: ``best/<task>/<metric>``, and for a
    pareto search ``best_obj/<task>``), a transfer study's group's tasks each at its own judgement
    within its own batches (``judged/`` of the last row, train.own_batches), and its cost."""
    def renamed(row: dict[str, Any], prefix: str, to: str) -> dict[str, float]:
        return {to + k[len(prefix):]: float(v) for k, v in row.items()
                if k.startswith(prefix) and isinstance(v, (int, float))}

    return {**renamed(best, "val/", "best/"), **renamed(best, "obj/", "best_obj/"), **renamed(last, "judged/", "best/"),
            "best/objective": float(best["objective"]), "best_epoch": float(best.get("epoch") or 0),
            "best_step": float(best.get("step") or 0), "train_steps": float(last.get("step") or best.get("step") or 0)}


def best_scores(metrics: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """{task: {metric: value}} from a child run's ``best/<task>/<metric>`` metrics (validation,
    at the run's best epoch)."""
    return split_scores(metrics, "best")


def search_trials(client: Any, parent: Any) -> list[dict[str, Any]]:
    """The trials of a search as MLflow has them: status, params, objective(s), retries,
    error and each task's metrics at its best epoch."""
    trials = []
    for c in child_runs(client, parent.info.experiment_id, parent.info.run_id, role="trial"):
        m = c.data.metrics
        # each trial at its best epoch (its kept weights), once the recorder closed its run
        best_obj = sorted(k for k in m if k.startswith("best_obj/"))
        obj_keys = sorted(k for k in m if k.startswith("obj/"))
        objective = {k.split("/", 1)[1]: m[k] for k in best_obj or obj_keys} if obj_keys else \
            m.get("best/objective", m.get("objective"))
        trials.append({"trial_id": c.data.tags.get("mtlo.trial_id"), "run_id": c.info.run_id,
                       "status": c.data.tags.get("mtlo.status", c.info.status),
                       "params": {k[6:]: v for k, v in c.data.params.items() if k.startswith("param.")},
                       "tasks": c.data.tags.get("mtlo.tasks", "").split(","),
                       "objective": objective,
                       "retries": int(c.data.tags.get("mtlo.retries", 0)), "error": c.data.tags.get("mtlo.error"),
                       "scores": best_scores(m), "test": split_scores(m, "test"),
                       "best_epoch": int(m.get("best_epoch", 0)), "started": c.info.start_time})
    return trials
