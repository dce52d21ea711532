"""What to record: MLflow runs, their params, tags, per-epoch metrics and artifacts."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import Config
from orchestrator.errors import ServiceError
from orchestrator.redact import redact, redact_data
from trainables.errors import first_line
from trainables.imports import collector_paused

# metric rows carry these as plain numbers; they are the step, not metrics of their own
_NOT_METRICS = {"epoch"}


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": 1e-4}``; lists and empty dicts as text."""
    out: dict[str, Any] = {}
    if isinstance(data, dict) and data:
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, (list, dict)) else data
    return out


def run_params(cfg: Config) -> dict[str, Any]:
    run = cfg.run_dict()
    params = flatten({"encoder": run["encoder"], "train": run["train"]})
    for name, t in run["tasks"].items():
        params[f"task.{name}.source"] = t["source"]
        if t.get("type"):
            params[f"task.{name}.type"] = t["type"]
    return {k: ("None" if v is None else v) for k, v in params.items()}


def run_tags(cfg: Config, *, command: str) -> dict[str, str]:
    tr = cfg.train
    return {
        "mtlo.command": command,
        "mtlo.config_name": cfg.name,
        "mtlo.tasks": ",".join(sorted(cfg.tasks)),
        "mtlo.num_tasks": str(len(cfg.tasks)),
        "mtlo.sharing": tr.sharing,
        "mtlo.weighting": tr.weighting,
        "mtlo.schedule": tr.schedule,
        "mtlo.encoder": cfg.encoder.model,
        "mtlo.seed": str(tr.seed),
    }


def log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    """Log many params in one call (MLflow caps a value at 6000 characters)."""
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, redact(str(v))[:6000]) for k, v in params.items()])


def log_metrics(client: Any, run_id: str, values: Mapping[str, float | None], *, step: int = 0) -> None:
    """Log many metrics at one step in one call; a value that does not exist (None: e.g. the
    score of a grouping that could not be formed, with more tasks than the exact grouping
    handles) is left out."""
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in values.items() if v is not None])


def metric_row(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items() if k not in _NOT_METRICS and isinstance(v, (int, float))}


def environment() -> None:
    """MLflow's settings for mtlo, made before MLflow is imported; a user's own win."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # MLflow writes "View run ... at URL" to stdout for each run ended on a tracking server:
    # with --json, stdout holds only mtlo's JSON (the run's URL is in the report and the UI)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # a tracking server that stops answering costs seconds per write, not minutes of retries
    # (MLflow's defaults: 7 retries, backoff factor 2); the search goes on without it
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def configure(cfg: Config) -> Any:
    """Point MLflow at the config's tracking URI and experiment; return the client module."""
    environment()
    import logging

    import mlflow

    # MLflow's sqlite store logs each failed statement with its traceback; mtlo reports a
    # store that fails in one line of its own (the recorder, ``as_outage``)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    return mlflow


def store_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking store cannot be used (None: it can): a server that does not answer, or
    answers /health but not a read of its store (its database down, credentials refused); a
    sqlite file whose folder is missing or takes no file, whose database another process
    holds locked, or whose disk is full."""
    if uri.startswith(("http://", "https://")):
        return _server_problem(uri, timeout)
    if uri.startswith("sqlite:///"):
        return sqlite_problem(Path(uri[len("sqlite:///"):]), timeout=timeout)
    if "://" in uri and uri.split("://", 1)[0].split("+")[0] in DATABASES:
        return database_problem(uri, timeout=timeout)
    return None


DATABASES = ("postgresql", "mysql", "mssql")  # the SQL stores MLflow takes as a tracking URI


def database_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why a SQL database store cannot be used (None: it can): one connection, tried for at
    most ``timeout`` seconds (MLflow's own first connection retries for about 100 s before it
    gives up)."""
    import threading

    import sqlalchemy

    found: list[str | None] = []

    def connect() -> None:
        try:
            engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
            with engine.connect():
                pass
            engine.dispose()
            found.append(None)
        except Exception as exc:  # noqa: BLE001 - any driver's error: the database cannot be used
            found.append(first_line(exc))

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    if not found:
        return f"the database at {redact(uri)} does not answer (no connection within {timeout:g} s)"
    return None if found[0] is None else f"the database at {redact(uri)} cannot be used: {redact(found[0])}"


AUTH_HINT = "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"


def _server_problem(uri: str, timeout: float) -> str | None:
    import requests
    from mlflow.tracking._tracking_service.utils import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as exc:
        return f"no MLflow server answers at {uri} ({type(exc).__name__})"
    if not answer.ok:
        return f"{uri}/health answered HTTP {answer.status_code}: not an MLflow server?"
    try:  # a read of the store, with the user's credentials, as every write would need
        read = http_request(get_default_host_creds(uri), "/api/2.0/mlflow/experiments/search", "GET",
                            max_retries=0, timeout=timeout, raise_on_status=False, params={"max_results": 1})
    except Exception as exc:  # noqa: BLE001 - any failure of the read is the answer
        return f"the MLflow server at {uri} does not answer a read of its store ({type(exc).__name__})"
    if read.status_code in (401, 403):
        return f"the MLflow server at {uri} refused mtlo's request (HTTP {read.status_code}): {AUTH_HINT}"
    if not read.ok:
        try:
            code = read.json().get("error_code") or ""
        except ValueError:
            code = ""
        return (f"the MLflow server at {uri} answers, but its store does not (HTTP {read.status_code}"
                f"{' ' + code if code else ''}: its database down?)")
    return None


def sqlite_problem(path: Path, timeout: float = 5.0) -> str | None:
    """Why a sqlite database file cannot be used (None: it can): its folder is missing, or
    a file cannot be created there (tried with a temporary file, removed at once), its disk is
    full, or another process holds the database locked for longer than ``timeout``."""
    folder = path.parent
    if not folder.is_dir():
        blocker = next((p for p in reversed(folder.parents) if p.exists() and not p.is_dir()), None)
        if folder.exists() or blocker is not None:
            return f"{blocker or folder} is a file, so it cannot hold the folder of the sqlite file {path}"
        return f"the folder of the sqlite file, {folder}, does not exist"
    if path.is_dir():
        return f"{path} is a folder, not a sqlite file"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mtlo-probe-"):
            pass
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the disk of the sqlite file {path} is full ({why})"
        return f"no file can be written in the folder of the sqlite file, {folder} ({why})"
    stat = os.statvfs(folder)
    if stat.f_bavail * stat.f_frsize < MIN_FREE_BYTES:
        return f"the disk of the sqlite file {path} is full ({stat.f_bavail * stat.f_frsize // 1024} KiB free)"
    if path.is_file():
        import sqlite3

        try:  # a write lock, taken and given back at once: nothing is written
            with contextlib.closing(sqlite3.connect(path, timeout=timeout, isolation_level=None)) as db:
                db.execute("BEGIN IMMEDIATE")
                db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            return f"the sqlite file {path} cannot be written ({first_line(exc)})"
    return None


MIN_FREE_BYTES = 1 << 20  # a sqlite store with less free disk than this is as good as full


def outage(exc: BaseException) -> str | None:
    """The tracking store's failure behind ``exc``, in one line (None: ``exc`` is not one):
    a connection or HTTP error, a server error or refusal (401/403, 5xx), a locked or full
    sqlite database. What else goes wrong is a bug, to be raised with its traceback."""
    import requests
    from mlflow.exceptions import MlflowException

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        name = type(e).__name__
        if isinstance(e, requests.RequestException):
            return f"{name}: {first_line(e)}"
        if isinstance(e, MlflowException):
            status = e.get_http_status_code()
            if e.error_code in _OUTAGE_CODES or status in (401, 403) or status >= 500 or \
                    any(s in str(e) for s in _OUTAGE_TEXT):
                return f"{name}: {first_line(e)}"
        if name == "OperationalError" or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
            return f"{name}: {first_line(e)}"  # sqlite3's and SQLAlchemy's: locked, full, unreachable
        e = e.__cause__ or e.__context__
    return None


def as_outage(uri: str, exc: BaseException) -> ServiceError | None:
    """``exc`` as the one-line outage error the CLI ends with (exit 1: Ray kept every result,
    ``--resume`` records them), when the tracking store is what failed; None for anything
    else (a bug, raised with its traceback)."""
    problem = store_problem(uri, timeout=2.0) or outage(exc)
    if problem is None:
        return None
    return outage_error(problem, f"{type(exc).__name__} while recording")


def outage_error(problem: str, when: str) -> ServiceError:
    return ServiceError(f"mlflow.tracking_uri: {problem} ({when}); every trial's results are kept by Ray: run the "
                        "same command with --resume when it answers, to record them")


def still_down(uri: str, when: str) -> ServiceError | None:
    """The outage error when the tracking store still does not answer a short probe."""
    problem = store_problem(uri, timeout=2.0)
    return None if problem is None else outage_error(problem, f"still down {when}")


_OUTAGE_CODES = {"TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED",
                 "REQUEST_LIMIT_EXCEEDED", "ENDPOINT_NOT_FOUND"}
_OUTAGE_TEXT = ("database is locked", "disk is full", "Max retries exceeded")


def check_store(uri: str) -> None:
    """Refuse, before Ray starts or any trial runs, a tracking store that cannot be used."""
    problem = store_problem(uri)
    if problem:
        from orchestrator.errors import ConfigError

        raise ConfigError(f"mlflow.tracking_uri: {problem}")


@contextmanager
def artifact_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="mtlo-") as tmp:
        yield Path(tmp)


def log_json(mlflow: Any, obj: Any, name: str) -> None:
    with artifact_dir() as tmp:
        path = tmp / name
        path.write_text(redact(json.dumps(obj, indent=2, sort_keys=True)))
        mlflow.log_artifact(str(path))


def log_yaml(mlflow: Any, obj: Any, name: str) -> None:
    with artifact_dir() as tmp:
        path = tmp / name
        path.write_text(yaml.safe_dump(redact_data(obj), sort_keys=False))
        mlflow.log_artifact(str(path))


def log_files(client: Any, run_id: str, files: dict[str, str]) -> None:
    """Log text files (name -> content) as artifacts of a run, through a client (redacted)."""
    with artifact_dir() as tmp:
        for name, text in files.items():
            (tmp / name).write_text(redact(text))
        client.log_artifacts(run_id, str(tmp))


def as_json(obj: Any) -> str:
    return redact(json.dumps(obj, indent=2, default=str))


def as_yaml(obj: Any) -> str:
    return yaml.safe_dump(redact_data(obj), sort_keys=False)


def set_tag(client: Any, run_id: str, key: str, value: str) -> None:
    """A tag of free text (an error's: it may hold a store's URL), redacted and cut at 5000
    characters."""
    client.set_tag(run_id, key, redact(str(value))[:5000])


def git_commit(where: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


class MlflowParents:
    """The parent run of a search or study in MLflow (``runtime.session.ParentStore``): a new
    one is named after the config and tagged with ``tags`` and the git commit of the config's
    folder; a resumed one is set RUNNING again."""

    def __init__(self, cfg: Any, config_path: Path, tags: dict[str, str]) -> None:
        self.cfg, self.config_path, self.tags = cfg, config_path, tags

    def check(self) -> None:
        check_store(self.cfg.mlflow.tracking_uri)

    def warm(self) -> None:
        """MLflow's code imported, and a store that exists opened (MLflow keeps it, per URI); a
        new sqlite file is left to :meth:`open`: nothing is written before the cluster is checked."""
        import logging

        environment()
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # as configure() does
        uri = self.cfg.mlflow.tracking_uri
        with collector_paused():  # MLflow's and its store's imports: seconds of them (trainables/imports.py)
            from mlflow.tracking import MlflowClient

            if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file():
                MlflowClient(uri)  # a server's client, or a database's store with its schema checked
            else:  # the new file's store: its code only
                from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: F401

    def open(self, parent_id: str | None) -> tuple[Any, str, str]:
        mlflow = configure(self.cfg)
        client = mlflow.tracking.MlflowClient(self.cfg.mlflow.tracking_uri)
        experiment_id = client.get_experiment_by_name(self.cfg.experiment).experiment_id
        if parent_id is not None:
            client.update_run(parent_id, status="RUNNING")
            return client, experiment_id, parent_id
        parent_id = client.create_run(experiment_id, run_name=self.cfg.name, tags=self.tags).info.run_id
        commit = git_commit(self.config_path.resolve().parent)
        if commit:
            client.set_tag(parent_id, "mlflow.source.git.commit", commit)
        return client, experiment_id, parent_id
