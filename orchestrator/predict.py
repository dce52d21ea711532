"""``mtlo predict MODEL INPUT``: a logged or registered mtlo model's predictions for a file
of texts, as JSON lines (stdout, or ``--out x.jsonl``) or CSV (``--out x.csv``).

MODEL: ``models:/NAME/VERSION``, ``models:/NAME@alias``, ``runs:/RUN_ID/model``, an MLflow
model folder, or a folder written by :func:`trainables.serving.save_model`. INPUT: ``.csv``
or ``.jsonl`` with a ``text`` column (and ``text_pair`` for pair tasks), or ``.txt`` with one
text a line. Every problem with the input is one line naming the file or field (exit 2).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.files import write_whole
from trainables.errors import InputError, first_line

PROGRESS_FROM = 512  # inputs from which a progress bar is drawn (on stderr)
INPUT_KINDS = (".csv", ".jsonl", ".txt")
OUTPUT_KINDS = (".jsonl", ".csv")


def read_input(path: Path) -> tuple[list[str], list[str] | None]:
    """The texts (and second texts) of INPUT."""
    if not path.is_file():
        raise InputError(f"{path}: input file not found")
    if path.suffix not in INPUT_KINDS:
        raise InputError(f"{path}: input must be {', '.join(INPUT_KINDS)} (got '{path.suffix or 'no suffix'}')")
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        blank = next((i for i, line in enumerate(lines, 1) if not line.strip()), None)
        if blank is not None and any(line.strip() for line in lines[blank:]):
            raise InputError(f"{path}:{blank}: empty line (one text a line)")
        texts = [line for line in lines if line.strip()]
        if not texts:
            raise InputError(f"{path}: no texts in the file")
        return texts, None
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_json(path, lines=True)
    except (ValueError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read it as {path.suffix[1:]}: {first_line(exc, 300)}") from None
    if len(frame) == 0:
        raise InputError(f"{path}: no rows in the file")
    if not isinstance(frame.index, pd.RangeIndex):  # pandas took a first column as the index
        raise InputError(f"{path}: some rows have more fields than the header (quote texts that hold commas)")
    if "text" not in frame.columns:
        raise InputError(f"{path}: text: no 'text' column (columns: {', '.join(map(str, frame.columns))})")
    for col in ("text", "text_pair"):
        if col in frame.columns:
            bad = frame[col].isna() | (frame[col].astype(str).str.strip() == "")
            if bad.any():
                raise InputError(f"{path}: {col}: empty at row {int(bad.to_numpy().argmax()) + 1}")
    pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame.columns else None
    return frame["text"].astype(str).tolist(), pairs


MLMODEL = "MLmodel"


def load_predictor(ref: str, tracking_uri: str, *, trust_remote_code: bool = False) -> Any:
    """The :class:`trainables.serving.Predictor` of MODEL, read as data.

    An MLflow model (``models:/``, ``runs:/``, a downloaded folder) is never loaded as a pyfunc:
    that would import the code it ships and run its loader, so a version someone else pushed to
    a shared registry (or an alias they moved) would run code for everyone who predicts. Only
    its ``MLmodel`` file is read (safe YAML) to find the mtlo folder among its artifacts; a
    model without one is refused before anything else of it is downloaded; then only that
    folder is downloaded and read: weights with ``torch.load(weights_only=True)``, JSON, the
    encoder's config and tokenizer files, with remote code only if the user asks
    (``trust_remote_code``, ``--trust-remote-code``), never because the model says so."""
    import os
    import tempfile

    from trainables.serving import META_FILE, Predictor

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"  # nothing of a model is unpickled here
    if not ref.startswith(("models:/", "runs:/")):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise InputError(f"{ref}: no such model folder (MODEL is models:/NAME/VERSION, models:/NAME@alias, "
                             "runs:/RUN_ID/model or a folder)")
        if (folder / META_FILE).is_file():
            return Predictor(folder, trust_remote_code=trust_remote_code)
        if not (folder / MLMODEL).is_file():
            raise InputError(f"{ref}: not a model folder (no {MLMODEL} or {META_FILE} in it)")
        inner = folder / mtlo_artifact(ref, (folder / MLMODEL).read_text())
        if not (inner / META_FILE).is_file():
            raise InputError(f"{ref}: not an mtlo model (no {META_FILE} in its artifacts)")
        return Predictor(inner, trust_remote_code=trust_remote_code)
    import mlflow
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri)
    base = ref.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="mtlo-predict-") as tmp:
        try:
            mlmodel = Path(download_artifacts(artifact_uri=f"{base}/{MLMODEL}", dst_path=tmp))
            where = mtlo_artifact(ref, mlmodel.read_text())
            got = Path(download_artifacts(artifact_uri=f"{base}/{where}", dst_path=tmp))
        except MlflowException as exc:
            raise InputError(f"{ref}: cannot load the model: {first_line(exc, 300)}") from None
        if not (got / META_FILE).is_file():
            raise InputError(f"{ref}: not an mtlo model (no {META_FILE} in its artifacts)")
        return Predictor(got, trust_remote_code=trust_remote_code)  # everything read into memory here


def mtlo_artifact(ref: str, mlmodel_text: str) -> str:
    """The path of the mtlo folder inside an MLflow model, from its ``MLmodel`` file (an mtlo
    model is logged with ``artifacts={"model": <the mtlo folder>}``); a path that leaves the
    model's folder, or a model without it, is refused."""
    import posixpath

    import yaml

    try:
        meta = yaml.safe_load(mlmodel_text)
    except yaml.YAMLError:
        meta = None
    art = (((meta or {}).get("flavors") or {}).get("python_function") or {}).get("artifacts") or {} \
        if isinstance(meta, dict) else {}
    path = (art.get("model") or {}).get("path") if isinstance(art, dict) and isinstance(art.get("model"), dict) \
        else None
    if not isinstance(path, str) or not path:
        raise InputError(f"{ref}: not an mtlo model (its {MLMODEL} names no mtlo folder among its artifacts)")
    norm = posixpath.normpath(path)
    if norm.startswith(("/", "..")) or "\\" in norm:
        raise InputError(f"{ref}: not an mtlo model (its mtlo folder {path!r} lies outside the model)")
    return norm


def flat(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: ``task.label``, ``task.probability``, ``task.value``, ``task.entities`` (JSON)."""
    row: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            for field, value in v.items():
                row[f"{k}.{field}"] = json.dumps(value) if isinstance(value, list) else value
        else:
            row[k] = v
    return row


def run_predict(model: str, input_path: str, *, out: str | None, tasks: str | None, tracking_uri: str,
                as_json: bool, batch_size: int = 64, trust_remote_code: bool = False) -> dict[str, Any]:
    from trainables.serving import PredictError

    path = Path(input_path)
    out_path = Path(out) if out else None
    if out_path is not None and out_path.suffix not in OUTPUT_KINDS:
        raise InputError(f"--out {out}: must end in {' or '.join(OUTPUT_KINDS)}")
    texts, pairs = read_input(path)
    predictor = load_predictor(model, tracking_uri, trust_remote_code=trust_remote_code)
    chosen = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    try:
        predictor.check(chosen, pairs is not None)
    except PredictError as exc:
        raise InputError(f"{path}: {exc}" if str(exc).startswith("text_pair") else str(exc)) from None
    start = time.perf_counter()
    predictions = _predict(predictor, texts, pairs, chosen, batch_size)
    seconds = time.perf_counter() - start
    records = [{"text": texts[i], **({"text_pair": pairs[i]} if pairs is not None else {}), **p}
               for i, p in enumerate(predictions)]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if out_path.suffix == ".csv":
            import pandas as pd

            lines = pd.DataFrame([flat(r) for r in records]).to_csv(index=False)
        write_whole(out_path, lines)
    elif not as_json:
        sys.stdout.write(lines)
    return {"model": model, "input": str(path), "count": len(records), "out": str(out_path) if out_path else None,
            "tasks": chosen or list(predictor.tasks), "device": str(predictor.device), "seconds": seconds,
            "examples_per_s": len(records) / seconds if seconds > 0 else None,
            **({"predictions": records} if as_json and out_path is None else {})}


def _predict(predictor: Any, texts: list[str], pairs: list[str] | None, tasks: list[str] | None,
             batch_size: int) -> list[dict[str, Any]]:
    if len(texts) < PROGRESS_FROM:
        return predictor.predict(texts, pairs, tasks=tasks, batch_size=batch_size)
    from rich.progress import Progress

    from orchestrator.display import err_console

    with Progress(console=err_console, transient=True) as bar:
        job = bar.add_task("predicting", total=len(texts))
        return predictor.predict(texts, pairs, tasks=tasks, batch_size=batch_size,
                                 on_batch=lambda n: bar.advance(job, n))
