"""``mtlo``: the command line. Exit codes: 0 success, 2 bad input (one line), 1 anything else."""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import NoReturn

from orchestrator.errors import Interrupted, ServiceError
from orchestrator.transfer.methods import METHODS
from trainables.errors import InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own errors: one line, exit 2
        sys.stderr.write(f"mtlo: error: {message}\n")
        raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mtlo", description="Multi-task learning experiment orchestrator.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("tasks", help="list the built-in tasks: type, size, installed or how to install")
    t.add_argument("--json", action="store_true", help="JSON on stdout")
    tr = sub.add_parser("train", help="train one configuration in-process (no Ray); one MLflow run")
    tr.add_argument("config", help="the YAML config file")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key by dotted path, e.g. --set train.lr=1e-4")
    tr.add_argument("--json", action="store_true", help="only JSON on stdout; logs go to stderr")
    tr.add_argument("--no-model", action="store_true", help="do not log the trained model to MLflow")
    tr.add_argument("--groups", default=None, metavar="A+B,C",
                    help="one model a group (a transfer study's grouping): each trained on all of its tasks' data "
                    "(unless train.max_train_examples is set), scored on test and registered as NAME-TASK-TASK")
    tr.add_argument("--study", default=None, metavar="NAME",
                    help="with --groups: the transfer study the grouping came from (recorded on each model)")
    s = sub.add_parser("search", help="search configurations with Ray Tune + Optuna; MLflow parent + child runs")
    s.add_argument("config", help="the YAML config file")
    s.add_argument("--address", default=None,
                   help="Ray cluster: its head's HOST:PORT, 'auto', or ray://HOST:10001 (default: a new local Ray)")
    s.add_argument("--num-samples", type=int, default=None, help="trials to run (default: search.num_samples)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted search of the same name")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    s.add_argument("--json", action="store_true", help="only JSON on stdout; logs go to stderr")
    x = sub.add_parser("transfer", help="negative-transfer study: task subsets x seeds, gains, grouping")
    x.add_argument("config", help="the YAML config file")
    what = x.add_mutually_exclusive_group(required=True)
    what.add_argument("--method", choices=list(METHODS),
                      help="pairwise: every task alone and every pair; exhaustive: every subset; "
                      "affinity: every task alone and one all-tasks run that measures affinity (TAG), "
                      "then the proposed groups; surrogate: every task alone and --runs subsets proposed by Optuna, "
                      "a linear model of each task's gain on its group's members, then the proposed groups")
    what.add_argument("--groups", default=None, metavar="A+B,C+D",
                      help="train these task sets (and every task alone) instead: e.g. to check a recommended "
                      "grouping on new seeds with --set train.seed=N")
    x.add_argument("--seeds", type=int, default=3, help="seeds per task set (default 3)")
    x.add_argument("--budget", type=int, default=2, help="at most this many groups (models) in the grouping")
    x.add_argument("--runs", type=int, default=None, metavar="M",
                   help="--method surrogate: task subsets of two or more tasks to train (default: twice the tasks)")
    x.add_argument("--confirm-rounds", type=int, default=1, metavar="N",
                   help="rounds of training the proposed groups that were only estimated (default 1; 0: none)")
    x.add_argument("--check-seeds", type=int, default=0, metavar="K",
                   help="after the study, train the recommendation and every task alone again at K new seeds and "
                   "report whether its estimate held (default 0: no check)")
    x.add_argument("--address", default=None,
                   help="Ray cluster: its head's HOST:PORT, 'auto', or ray://HOST:10001 (default: a new local Ray)")
    x.add_argument("--resume", action="store_true", help="continue an interrupted study of the same name")
    x.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    x.add_argument("--json", action="store_true", help="only JSON on stdout; logs go to stderr")
    r = sub.add_parser("report", help="report of a transfer study or a search, rebuilt from MLflow")
    r.add_argument("ref", metavar="NAME_OR_RUN_ID", help="the study's or search's name, or its parent run id")
    r.add_argument("--tracking-uri", default=None,
                   help="the MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    r.add_argument("--out", default=None, help="folder for report.md and the figures (default: reports/NAME)")
    r.add_argument("--json", action="store_true", help="only JSON on stdout")
    r.add_argument("--runs-table", default=None, metavar="FILE",
                   help="also write every run (task set, seed, status, steps, validation and test metrics) "
                   "to FILE: .csv or .json")
    pr = sub.add_parser("predict", help="predictions of a logged or registered model for a file of texts")
    pr.add_argument("model", metavar="MODEL",
                    help="models:/NAME/VERSION, models:/NAME@alias, runs:/RUN_ID/model, or a model folder")
    pr.add_argument("input", metavar="INPUT", help=".csv or .jsonl with a 'text' column (and 'text_pair'), "
                    "or .txt with one text a line")
    pr.add_argument("--out", default=None, metavar="FILE", help="write predictions here: .jsonl or .csv "
                    "(default: JSON lines on stdout)")
    pr.add_argument("--tasks", default=None, metavar="A,B", help="only these tasks (default: every task)")
    pr.add_argument("--batch-size", type=int, default=64, help="texts per batch (default 64)")
    pr.add_argument("--trust-remote-code", action="store_true",
                    help="let the encoder's files import their own code (transformers' auto_map; default off, "
                    "whatever the model says)")
    pr.add_argument("--tracking-uri", default=None,
                    help="the MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    pr.add_argument("--json", action="store_true", help="only JSON on stdout: a summary (and the predictions "
                    "without --out)")
    return p


def _log_path() -> Path:
    """A new crash log's path, in a folder only this user can read (a traceback holds paths,
    config values and library error text)."""
    root = Path(os.environ.get("MTLO_CACHE_DIR", Path.home() / ".cache" / "mtlo")) / "logs"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    root.chmod(0o700)
    return root / f"mtlo-{dt.datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.log"


def _write_log(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    """Run one command with stdout and stderr redacted (orchestrator/redact.py)."""
    from orchestrator.redact import RedactingStream

    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)  # type: ignore[assignment]
    _redact_log_handlers()
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _redact_log_handlers() -> None:
    """Every logging handler already made (MLflow's and Ray's write to the stderr of import
    time) redacts what it emits."""
    import logging

    from orchestrator.redact import redact

    class Redacting(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = redact(record.getMessage()), None
            return True

    loggers = [logging.getLogger(), *[lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger)]]
    for lg in loggers:
        for h in lg.handlers:
            if not any(isinstance(f, Redacting) for f in h.filters):
                h.addFilter(Redacting())


def _main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # MLflow draws a progress bar on stderr for every artifact it reads back (study.json, a
    # report's files): noise between mtlo's own lines; a user's own setting wins
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from trainables.imports import collector_paused

    with collector_paused():  # the config's plug-ins import torch: seconds (trainables/imports.py)
        from orchestrator import commands

    try:
        if args.command == "tasks":
            return commands.cmd_tasks(as_json=args.json)
        if args.command == "search":
            if args.num_samples is not None and args.num_samples < 1:
                raise InputError(f"--num-samples: must be at least 1, got {args.num_samples}")
            return commands.cmd_search(args.config, sets=args.set, as_json=args.json, resume=args.resume,
                                       address=args.address, num_samples=args.num_samples)
        if args.command == "report":
            return commands.cmd_report(args.ref, tracking_uri=args.tracking_uri, out=args.out, as_json=args.json,
                                       runs_table=args.runs_table)
        if args.command == "transfer":
            return commands.cmd_transfer(args.config, sets=args.set, as_json=args.json, resume=args.resume,
                                         address=args.address, method=args.method, seeds=args.seeds,
                                         budget=args.budget, confirm_rounds=args.confirm_rounds,
                                         groups=args.groups, runs=args.runs, check_seeds=args.check_seeds)
        if args.command == "predict":
            if args.batch_size < 1:
                raise InputError(f"--batch-size: must be at least 1, got {args.batch_size}")
            return commands.cmd_predict(args.model, args.input, out=args.out, tasks=args.tasks,
                                        tracking_uri=args.tracking_uri, as_json=args.json,
                                        batch_size=args.batch_size, trust_remote_code=args.trust_remote_code)
        from orchestrator.train import cmd_train

        return cmd_train(args.config, sets=args.set, as_json=args.json, log_model=not args.no_model,
                         groups=args.groups, study=args.study)
    except InputError as exc:
        sys.stderr.write(f"mtlo: error: {exc}\n")
        return 2
    except ServiceError as exc:
        sys.stderr.write(f"mtlo: error: {exc}\n")
        return 1
    except Interrupted as exc:
        sys.stderr.write(f"mtlo: {exc}\n")
        return 130
    except KeyboardInterrupt:
        sys.stderr.write("mtlo: interrupted\n")
        return 130
    except Exception as exc:
        from orchestrator.redact import redact

        path = _log_path()
        _write_log(path, redact(traceback.format_exc()))
        sys.stderr.write(f"mtlo: error: {type(exc).__name__}: {exc} (details: {path})\n")
        return 1


def run() -> None:
    rc = main()
    # exit as Python would, less its last second: the teardown of every module (torch, Ray, MLflow)
    # of a process that ends now. Other threads are joined and exit handlers run (Ray's shutdown,
    # MLflow's and logging's flushes); then the process ends with what was written flushed
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    run()
