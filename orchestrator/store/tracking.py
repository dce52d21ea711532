"""What to record: MLflow runs, their params, tags, per-epoch metrics and artifacts."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from orchestrator.config import Config

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

    client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])


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


def configure(cfg: Config) -> Any:
    """Point MLflow at the config's tracking URI and experiment; return the client module."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # a tracking server that stops answering costs seconds per write, not minutes of retries
    # (MLflow's defaults: 7 retries, backoff factor 2); the search goes on without it
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    import mlflow

    mlflow.set_tracking_uri(cfg.mlflow.tracking_uri)
    mlflow.set_experiment(cfg.experiment)
    return mlflow


def store_problem(uri: str, timeout: float = 5.0) -> str | None:
    """Why the tracking store cannot be used (None: it can): a server that does not answer,
    or a sqlite file whose folder does not exist."""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            answer = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as exc:
            return f"no MLflow server answers at {uri} ({type(exc).__name__})"
        return None if answer.ok else f"{uri}/health answered HTTP {answer.status_code}: not an MLflow server?"
    if uri.startswith("sqlite:///"):
        return sqlite_problem(Path(uri[len("sqlite:///"):]))
    return None


def sqlite_problem(path: Path) -> str | None:
    """Why a sqlite database file cannot be used (None: it can): its folder is missing, or
    a file cannot be created there (tried with a temporary file, removed at once)."""
    folder = path.parent
    if not folder.is_dir():
        return f"the folder of the sqlite file, {folder}, does not exist"
    if path.is_dir():
        return f"{path} is a folder, not a sqlite file"
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".mtlo-probe-"):
            pass
    except OSError as exc:
        why = (exc.strerror or str(exc)).lower()
        return f"no file can be written in the folder of the sqlite file, {folder} ({why})"
    return None


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
        path.write_text(json.dumps(obj, indent=2, sort_keys=True))
        mlflow.log_artifact(str(path))


def log_yaml(mlflow: Any, obj: Any, name: str) -> None:
    with artifact_dir() as tmp:
        path = tmp / name
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
        mlflow.log_artifact(str(path))


def log_files(client: Any, run_id: str, files: dict[str, str]) -> None:
    """Log text files (name -> content) as artifacts of a run, through a client."""
    with artifact_dir() as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
        client.log_artifacts(run_id, str(tmp))


def as_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def as_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False)
