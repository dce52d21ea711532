"""The CLI commands' bodies (``mtlo train`` is orchestrator/train.py's, ``mtlo predict`` draws on
orchestrator/predict.py)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from orchestrator.config import Config, load_config
from orchestrator.display import err_console, out_console
from orchestrator.errors import Interrupted, ServiceError
from orchestrator.redact import redact
from orchestrator.store import tracking
from trainables.data import BUILTIN_TASKS, read_source
from trainables.errors import InputError
from trainables.imports import collector_paused
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


def model_lines(model: dict[str, Any], tracking_uri: str) -> str:
    """Where the logged model is and the commands that use it."""
    uri = model["registered_uri"] or model["run_uri"]
    where = f"registered as {uri}" if model["registered_uri"] else f"logged as {uri}"
    shown = redact(tracking_uri)  # a password stays where the user gave it
    store = "" if tracking_uri == default_tracking_uri() else f" --tracking-uri {shown}"
    env = "" if tracking_uri == default_tracking_uri() else f"MLFLOW_TRACKING_URI={shown} "
    return (f"model: {where}\n  predict: mtlo predict {uri} INPUT.csv{store}\n"
            f"  serve:   {env or 'MLFLOW_TRACKING_URI=sqlite:///mlflow.db '}mlflow models serve -m {uri} "
            "--env-manager local -h 127.0.0.1 -p 5001")


def default_tracking_uri() -> str:
    """What ``mtlo predict`` and ``mtlo report`` read without --tracking-uri: ./mlflow.db."""
    from orchestrator.config import resolve_tracking_uri

    return resolve_tracking_uri("sqlite:///mlflow.db", Path.cwd())


@contextlib.contextmanager
def outage_is_service_error(uri: str) -> Iterator[None]:
    """A failure of the MLflow store at ``uri`` anywhere in a search or study (a write after
    the trials, the model, the report) ends it with one line and the resume message, not a
    traceback."""
    try:
        yield
    except (InputError, ServiceError, Interrupted, KeyboardInterrupt):
        raise
    except Exception as exc:
        error = tracking.as_outage(uri, exc)
        if error is None:
            raise
        raise error from exc


def ray_address(cli: str | None, cfg: Config) -> str | None:
    """The Ray to run on (``--address`` over ``ray.address``; None: a new local Ray on
    loopback), resolved and checked, Ray's environment set for it before Ray is imported
    (``runtime/address.py``)."""
    from orchestrator.runtime.address import prepare

    return prepare(cli or cfg.ray.address, "--address" if cli else "ray.address")


def cmd_search(config_path: str, *, sets: list[str], as_json: bool, resume: bool, address: str | None,
               num_samples: int | None) -> int:
    from orchestrator.runtime.lock import released_at_end

    cfg = load_config(config_path, sets)
    with released_at_end(), outage_is_service_error(cfg.mlflow.tracking_uri):  # one driver per search
        return _search(cfg, config_path, as_json=as_json, resume=resume, address=address,
                       num_samples=num_samples)


def _search(cfg: Config, config_path: str, *, as_json: bool, resume: bool, address: str | None,
            num_samples: int | None) -> int:
    address = ray_address(address, cfg)
    with collector_paused():  # Ray Tune, Optuna (trainables/imports.py)
        from orchestrator.search.runner import run_search

    out = run_search(cfg, Path(config_path), num_samples=num_samples, resume=resume, address=address,
                     as_json=as_json)
    t0 = time.perf_counter()
    _, _, folder = build_report(cfg.mlflow.tracking_uri, out.parent_run_id)
    phases = {**out.phases, "report": time.perf_counter() - t0}
    if as_json:
        json.dump({"name": out.name, "parent_run_id": out.parent_run_id, "trials": out.trials, "best": out.best,
                   "model": out.model, "importance": out.importance, "dashboard": out.dashboard, "phases": phases},
                  sys.stdout, indent=2, default=str)
        print()
        return 0
    from orchestrator.report.terminal import print_search

    print_search(out.name, out.parent_run_id, out.objective, out.trials, out.best)
    if out.importance:
        out_console().print("parameter importance (Optuna): " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(out.importance.items(), key=lambda kv: -kv[1])))
    out_console().print(f"Optuna study: {out.dashboard}", markup=False)
    if out.model is not None:
        out_console().print(model_lines(out.model, cfg.mlflow.tracking_uri))
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


def cmd_transfer(config_path: str, *, sets: list[str], as_json: bool, resume: bool, address: str | None,
                 method: str | None, seeds: int, budget: int, confirm_rounds: int = 1,
                 groups: str | None = None, runs: int | None = None, check_seeds: int = 0) -> int:
    from orchestrator.runtime.lock import released_at_end

    cfg = load_config(config_path, sets)
    with released_at_end(), outage_is_service_error(cfg.mlflow.tracking_uri):  # one driver per study
        return _transfer(cfg, config_path, as_json=as_json, resume=resume, address=address, method=method,
                         seeds=seeds, budget=budget, confirm_rounds=confirm_rounds, groups=groups, runs=runs,
                         check_seeds=check_seeds)


def _transfer(cfg: Config, config_path: str, *, as_json: bool, resume: bool, address: str | None,
              method: str | None, seeds: int, budget: int, confirm_rounds: int, groups: str | None,
              runs: int | None, check_seeds: int) -> int:
    address = ray_address(address, cfg)
    with collector_paused():
        from orchestrator.transfer.methods import parse_groups
        from orchestrator.transfer.runner import run_transfer

    out = run_transfer(cfg, Path(config_path), method=method or "groups", seeds=seeds, budget=budget, resume=resume,
                       address=address, as_json=as_json, confirm_rounds=confirm_rounds,
                       groups=None if groups is None else parse_groups(groups), sample=runs,
                       check_seeds=check_seeds)
    _, _, folder = build_report(cfg.mlflow.tracking_uri, out["parent_run_id"])
    if as_json:
        json.dump(out, sys.stdout, indent=2, default=str)
        print()
        return 0
    from orchestrator.report.terminal import print_transfer

    print_transfer(out)
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


def build_report(tracking_uri: str, ref: str, out: Path | None = None) -> tuple[dict[str, Any], str, Path]:
    """The report of a search or study (``ref``: its name or parent run id) from MLflow alone,
    written to ``out`` (default ``reports/<sanitized run name>``) and logged on its parent run."""
    from mlflow.tracking import MlflowClient

    from orchestrator.report import default_folder, write_report
    from orchestrator.runtime import faults
    from orchestrator.store.runs import find_parent

    client = MlflowClient(tracking_uri)
    parent = find_parent(client, ref)
    res: Any
    if parent.data.tags.get("mtlo.role") == "transfer":
        from orchestrator.transfer.results import study_results

        res = study_results(client, parent)
    else:
        from orchestrator.search.results import search_results

        res = search_results(client, parent)
    folder = out or default_folder(parent.info.run_name, parent.info.run_id)
    md, plain, paths = write_report(res, folder, halfway=faults.point("report"))  # test-only: driver@report
    for path in paths:
        client.log_artifact(parent.info.run_id, str(path), artifact_path="report")
    return plain, md, folder


def write_runs_table(uri: str, parent_run_id: str, path: Path) -> int:
    """The runs table of a search or study (``store.runs.runs_table``) written whole to ``path``;
    returns how many runs it holds."""
    from mlflow.tracking import MlflowClient

    from orchestrator.files import write_whole
    from orchestrator.store.runs import child_runs, runs_table, runs_table_text

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    rows = runs_table(child_runs(client, parent.info.experiment_id, parent_run_id), client)
    write_whole(path, runs_table_text(rows, path.suffix.lower()))
    err_console.print(f"runs table: {len(rows)} runs written to {path}", markup=False, highlight=False)
    return len(rows)


def tracking_uri_of(option: str | None) -> str:
    """``--tracking-uri``, else $MLFLOW_TRACKING_URI, else ./mlflow.db; a sqlite store must exist."""
    import os

    from orchestrator.config import resolve_tracking_uri

    uri = option or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    uri = resolve_tracking_uri(uri, Path.cwd())
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise InputError(f"--tracking-uri: no MLflow store at {uri[len('sqlite:///'):]}")
    problem = tracking.store_problem(uri) if not uri.startswith("sqlite:///") else None
    if problem:
        raise InputError(f"--tracking-uri: {problem}")
    return uri


def cmd_predict(model: str, input_path: str, *, out: str | None, tasks: str | None, tracking_uri: str | None,
                as_json: bool, batch_size: int, trust_remote_code: bool = False) -> int:
    from orchestrator.predict import run_predict

    uri = tracking_uri_of(tracking_uri) if model.startswith(("models:/", "runs:/")) else \
        (tracking_uri or "sqlite:///mlflow.db")
    res = run_predict(model, input_path, out=out, tasks=tasks, tracking_uri=uri, as_json=as_json,
                      batch_size=batch_size, trust_remote_code=trust_remote_code)
    if as_json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
    elif out is not None:
        err_console.print(f"{res['count']} predictions ({', '.join(res['tasks'])}) written to {res['out']} "
                          f"in {res['seconds']:.1f}s on {res['device']}", markup=False)
    return 0


def cmd_report(ref: str, *, tracking_uri: str | None, out: str | None, as_json: bool,
               runs_table: str | None = None) -> int:
    from rich.markdown import Markdown

    from orchestrator.store.runs import RUNS_TABLE_SUFFIXES

    table = Path(runs_table) if runs_table else None
    if table is not None:
        if table.suffix.lower() not in RUNS_TABLE_SUFFIXES:
            raise InputError(f"--runs-table: {table} must end in .csv or .json")
        if not table.resolve().parent.is_dir():
            raise InputError(f"--runs-table: the folder of {table} does not exist")
    uri = tracking_uri_of(tracking_uri)
    res, md, folder = build_report(uri, ref, Path(out) if out else None)
    if table is not None:
        write_runs_table(uri, res["parent_run_id"], table)
    if as_json:
        json.dump(res, sys.stdout, indent=2, default=str)
        print()
        return 0
    out_console().print(Markdown(md))
    out_console().print(f"report: {folder / 'report.md'} (also on the MLflow parent run, under report/)")
    return 0


__all__ = ["InputError", "build_report", "cmd_predict", "cmd_report", "cmd_search", "cmd_tasks",
           "cmd_transfer"]
