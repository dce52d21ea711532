"""``mtlo train CONFIG``: one configuration trained in this process (no Ray) as one MLflow run,
its model logged and registered; with ``--groups a+b,c`` one such run and model a group (a
transfer study's accepted grouping), each on all of its tasks' data unless capped."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from orchestrator.commands import model_lines
from orchestrator.config import Config, load_config
from orchestrator.display import epoch_line, err_console, out_console, task_table
from orchestrator.redact import redact
from orchestrator.store import tracking
from trainables.errors import InputError


def cmd_train(config_path: str, *, sets: list[str], as_json: bool, log_model: bool = True,
              groups: str | None = None, study: str | None = None) -> int:
    """``mtlo train CONFIG``: one run of the config's tasks. ``groups`` ("a+b,c"): one model a
    group instead, each trained on all of its tasks' data (unless the config or --set caps
    ``train.max_train_examples``), scored on their test splits and registered in MLflow with its
    tasks and, with ``study``, the transfer study whose recommendation it is."""
    cfg = load_config(config_path, sets)
    tracking.check_store(cfg.mlflow.tracking_uri)  # an unusable store: one line, before any data loads
    if groups is None:
        if study is not None:
            raise InputError("--study: only with --groups (the models of a study's grouping)")
        out = train_one(cfg, log_model=log_model, register=cfg.registered_model, tags={})
        _print_trained(cfg, out, as_json)
        return 0
    configs, tags = group_configs(cfg, config_path, sets, groups, study)
    outs = []
    for gcfg in configs:
        group = sorted(gcfg.tasks)
        out = train_one(gcfg, log_model=log_model, register=gcfg.registered_model,
                        tags={**tags, "mtlo.group": "+".join(group)})
        if not as_json:
            _print_trained(gcfg, out, False)
        out.pop("result")
        outs.append({"group": group, **out})
    if as_json:
        json.dump({"models": outs}, sys.stdout, indent=2)
        print()
    return 0


def group_configs(cfg: Config, config_path: str, sets: list[str], groups: str, study: str | None
                  ) -> tuple[list[Config], dict[str, str]]:
    """One config a group (its tasks, all of their data unless capped, named and registered
    ``NAME-task-task``), and the tags every group's model carries (the study it came from: its
    name and parent run id, checked to be a transfer study in the config's store)."""
    from orchestrator.config import was_set
    from orchestrator.transfer.methods import check_groups, parse_groups

    parsed = parse_groups(groups)
    check_groups(list(cfg.tasks), parsed, "--groups")
    seen: set[tuple[str, ...]] = set()
    for g in parsed:
        if len(set(g)) < len(g) or tuple(sorted(g)) in seen:
            raise InputError(f"--groups: {'+'.join(g)}: " + ("a task twice in one group" if len(set(g)) < len(g)
                                                             else "the same group twice"))
        seen.add(tuple(sorted(g)))
    tags: dict[str, str] = {}
    if study is not None:
        from mlflow.tracking import MlflowClient

        from orchestrator.store.runs import find_parent

        parent = find_parent(MlflowClient(cfg.mlflow.tracking_uri), study)
        if parent.data.tags.get("mtlo.role") != "transfer":
            raise InputError(f"--study: {study} is a search, not a transfer study")
        tags = {"mtlo.study": parent.info.run_name, "mtlo.study_run_id": parent.info.run_id}
    capped = was_set(config_path, sets, "train.max_train_examples")
    train = cfg.train if capped else dataclasses.replace(cfg.train, max_train_examples=None)
    out = []
    for g in parsed:
        name = f"{cfg.name}-{'-'.join(sorted(g))}"
        model = cfg.model.model_copy(update={"register_as": f"{cfg.registered_model}-{'-'.join(sorted(g))}"})
        out.append(cfg.model_copy(update={"name": name, "tasks": {t: cfg.tasks[t] for t in sorted(g)},
                                          "train": train, "model": model}))
    return out, tags


def train_one(cfg: Config, *, log_model: bool, register: str, tags: dict[str, str]) -> dict[str, Any]:
    """Train ``cfg`` in this process as one MLflow run (its tasks' data as dataset inputs), log
    its model and register it under ``register``; what ``--json`` prints of it."""
    from orchestrator.store.datasets import log_datasets, task_datasets
    from trainables import build, fit
    from trainables.taskinfo import task_info

    log = err_console
    exp = build(cfg.run_dict())  # bad data or encoder fails here, before any MLflow run exists
    sizes = ", ".join(f"{t} {len(d.train)}/{len(d.val)}/{len(d.test)}" for t, d in exp.data.items())
    log.print(f"[bold]mtlo train[/bold] {cfg.name}: encoder {cfg.encoder.model} on {exp.device}; "
              f"examples (train/validation/test): {sizes}")

    mlflow = tracking.configure(cfg)
    with mlflow.start_run(run_name=cfg.name) as run:
        mlflow.set_tags({**tracking.run_tags(cfg, command="train"), **tags})
        mlflow.log_params(tracking.run_params(cfg))
        tracking.log_yaml(mlflow, cfg.model_dump(mode="json"), "config.yaml")
        infos = {t: task_info(d, exp.main_metric[t], exp.types[t].higher_is_better[exp.main_metric[t]])
                 for t, d in exp.data.items()}
        log_datasets(mlflow.tracking.MlflowClient(), run.info.run_id,
                     task_datasets(infos, {t: s.source for t, s in cfg.tasks.items()}), exp.data)

        def report(row: dict[str, Any]) -> None:
            mlflow.log_metrics(tracking.metric_row(row), step=int(row["epoch"]))
            log.print(epoch_line(row, exp.main_metric))

        try:
            result = fit(exp, report)
        except BaseException as exc:
            mlflow.set_tag("mtlo.error", redact(f"{type(exc).__name__}: {exc}")[:5000])
            mlflow.end_run(status="KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        summary = {
            "tasks": result.metrics, "test": result.test, "main_metric": result.main_metric,
            "higher_is_better": result.higher_is_better, "objective": result.objective,
            "best_epoch": result.best_epoch, "best_step": result.best_step, "epochs": result.epochs,
            "train_steps": result.steps, "train_examples": result.examples,
            "seconds": result.seconds, "stopped": result.stopped,
            "data": {t: {"train": len(d.train), "val": len(d.val), "test": len(d.test), "origin": d.origin,
                         "digest": infos[t].digest} for t, d in exp.data.items()},
        }
        tracking.log_json(mlflow, summary, "summary.json")
        best = {f"best/{t}/{m}": v for t, ms in result.metrics.items() for m, v in ms.items()}
        mlflow.log_metrics({**best, "best/objective": result.objective, "best_epoch": result.best_epoch,
                            "train_steps": result.steps, "train_seconds": result.seconds})
        mlflow.set_tag("mtlo.stopped", result.stopped)
        run_id = run.info.run_id
    model = None
    if log_model and cfg.model.log:  # exp.model holds the best epoch's weights (trainables.fit)
        from orchestrator.store.models import log_model as log_mlflow_model
        from orchestrator.store.models import score_tags

        mtags = {"mtlo.config_name": cfg.name, "mtlo.command": "train", "mtlo.run_id": run_id,
                 "mtlo.tasks": ",".join(sorted(exp.data)), **tags,
                 **score_tags(result.metrics, result.test, result.main_metric)}
        model = log_mlflow_model(cfg.mlflow.tracking_uri, run_id, exp, register=register, tags=mtags,
                                 info={"command": "train", "run_id": run_id, "val": result.metrics,
                                       "test": result.test, "best_epoch": result.best_epoch})
    return {"run_id": run_id, "tasks": result.metrics, "test": result.test, "main_metric": result.main_metric,
            "model": model, "result": result}


def _print_trained(cfg: Config, out: dict[str, Any], as_json: bool) -> None:
    result = out["result"]
    if as_json:
        json.dump({k: v for k, v in out.items() if k != "result"}, sys.stdout, indent=2)
        print()
        return
    out_console().print(task_table(result.metrics, result.main_metric, test=result.test,
                                   title=f"{cfg.name}: best epoch {result.best_epoch} of {result.epochs} "
                                         f"({result.steps} steps, {result.seconds:.0f}s), MLflow run {out['run_id']}"))
    if out["model"] is not None:
        out_console().print(model_lines(out["model"], cfg.mlflow.tracking_uri))
