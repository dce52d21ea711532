"""Readers for user data sources: ``hf:``, ``csv:``, ``json:``, ``parquet:``, ``conll:``.

Every reader returns a :class:`RawTask`; every problem with a file or a column is an
:class:`InputError` that names the task, the file and the field.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from trainables.data.raw import RawSplit, RawTask
from trainables.errors import InputError
from trainables.spec import TaskSpec


def read_conll(path: Path, *, task: str) -> RawSplit:
    """Read ``token<TAB>tag`` lines with a blank line between sentences."""
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    cur_tok: list[str] = []
    cur_tag: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError as exc:
        raise InputError(f"task '{task}': {path}: not a UTF-8 text file (byte {exc.start})") from None
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            if cur_tok:
                tokens.append(cur_tok)
                tags.append(cur_tag)
                cur_tok, cur_tag = [], []
            continue
        parts = line.split("\t") if "\t" in line else line.split()
        if len(parts) < 2:
            raise InputError(
                f"task '{task}': {path}:{lineno}: expected 'token<TAB>tag', got {line!r}"
            )
        cur_tok.append(parts[0])
        cur_tag.append(parts[-1])
    if cur_tok:
        tokens.append(cur_tok)
        tags.append(cur_tag)
    return RawSplit(tokens, tags)


def _read_table(kind: str, path: Path, *, task: str) -> Any:
    import pandas as pd

    try:
        if kind == "csv":
            return pd.read_csv(path, sep="\t" if path.suffix in (".tsv", ".tab") else ",")
        if kind == "json":
            lines = path.suffix in (".jsonl", ".ndjson")
            try:
                return pd.read_json(path, lines=lines)
            except ValueError:
                return pd.read_json(path, lines=not lines)
        return pd.read_parquet(path)
    except Exception as exc:  # pandas raises many types for malformed files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"task '{task}': cannot read {kind} file {path}: {msg}") from None


def _column(columns: list[str], name: str, *, task: str, origin: str, field: str) -> str:
    if name not in columns:
        raise InputError(
            f"task '{task}': tasks.{task}.{field}: column '{name}' not in {origin} "
            f"(columns: {', '.join(map(str, columns))})"
        )
    return name


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def split_from_records(
    records: dict[str, list[Any]], spec: TaskSpec, task_type: str, *, task: str, origin: str
) -> RawSplit:
    """Pick the configured columns out of a column-oriented table."""
    columns = list(records)
    if task_type == "tagging":
        tok = _column(columns, spec.tokens, task=task, origin=origin, field="tokens")
        tag = _column(columns, spec.tags, task=task, origin=origin, field="tags")
        return RawSplit([list(t) for t in records[tok]], [list(t) for t in records[tag]])
    text = _column(columns, spec.text, task=task, origin=origin, field="text")
    label = _column(columns, spec.label, task=task, origin=origin, field="label")
    fields = [(spec.text, "text")]
    pairs = None
    if spec.text_pair:
        pair = _column(columns, spec.text_pair, task=task, origin=origin, field="text_pair")
        pairs = records[pair]
        fields.append((spec.text_pair, "text_pair"))
    for col, field in [*fields, (spec.label, "label")]:
        for row, value in enumerate(records[col]):
            if _is_missing(value) or (field != "label" and not str(value).strip()):
                raise InputError(
                    f"task '{task}': tasks.{task}.{field}: column '{col}' in {origin} "
                    f"is empty at row {row + 1}"
                )
    return RawSplit(
        [str(t) for t in records[text]],
        list(records[label]),
        [str(p) for p in pairs] if pairs is not None else None,
    )


def read_local(kind: str, location: str, spec: TaskSpec, *, task: str) -> RawTask:
    path = Path(location).expanduser()
    if path.is_dir():
        raise InputError(f"task '{task}': tasks.{task}.source: {path} is a folder, not a file")
    if not path.is_file():
        raise InputError(f"task '{task}': tasks.{task}.source: file not found: {path}")
    if kind == "conll":
        if spec.type not in (None, "tagging"):
            raise InputError(
                f"task '{task}': tasks.{task}.type: conll files hold tagging data, not {spec.type}"
            )
        return RawTask("tagging", read_conll(path, task=task), None, str(path),
                       test=_read_test(kind, spec, "tagging", task=task))
    if spec.type is None:
        raise InputError(
            f"task '{task}': tasks.{task}.type: required for {kind} sources "
            "(classification, regression or tagging)"
        )
    return RawTask(spec.type, _read_split(kind, path, spec, spec.type, task=task), None, str(path),
                   test=_read_test(kind, spec, spec.type, task=task))


def _read_split(kind: str, path: Path, spec: TaskSpec, task_type: str, *, task: str) -> RawSplit:
    if kind == "conll":
        return read_conll(path, task=task)
    frame = _read_table(kind, path, task=task)
    records = {str(c): frame[c].tolist() for c in frame.columns}
    return split_from_records(records, spec, task_type, task=task, origin=str(path))


def _read_test(kind: str, spec: TaskSpec, task_type: str, *, task: str) -> RawSplit | None:
    """The held-out test file ``tasks.<task>.test`` (the source's format), if given."""
    if spec.test is None:
        return None
    path = Path(spec.test).expanduser()
    if not path.is_file():
        raise InputError(f"task '{task}': tasks.{task}.test: file not found: {path}")
    split = _read_split(kind, path, spec, task_type, task=task)
    if len(split) == 0:
        raise InputError(f"task '{task}': tasks.{task}.test: no examples in {path}")
    return split


def read_hf(location: str, spec: TaskSpec, *, task: str) -> RawTask:
    """Load with ``datasets.load_dataset``: a hub name, a local dataset folder, or a builder
    such as ``csv`` with ``data_files``."""
    import datasets

    origin = f"hf:{location}" + (f" ({spec.config})" if spec.config else "")
    if spec.type is None:
        raise InputError(f"task '{task}': tasks.{task}.type: required for hf sources")
    task_type: str = spec.type
    # the datasets library draws a progress bar per split it builds: noise on stderr around
    # mtlo's own lines (and before a one-line error)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = datasets.load_dataset(location, spec.config, data_files=spec.data_files)
    except FileNotFoundError as exc:
        raise InputError(f"task '{task}': tasks.{task}.source: {origin}: {exc}") from None
    except (ValueError, ConnectionError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"task '{task}': tasks.{task}.source: cannot load {origin}: {first}") from None
    if not isinstance(ds, datasets.DatasetDict):
        raise InputError(f"task '{task}': {origin}: expected a dataset with named splits")
    if spec.train_split not in ds:
        raise InputError(
            f"task '{task}': tasks.{task}.train_split: '{spec.train_split}' not in {origin} "
            f"(splits: {', '.join(ds)})"
        )
    def pick(asked: str | None, default: str, field: str) -> str | None:
        """The split ``field`` names, else ``default`` when the source has it."""
        if asked is None:
            return default if default in ds else None
        if asked not in ds:
            raise InputError(f"task '{task}': tasks.{task}.{field}: '{asked}' not in {origin} "
                             f"(splits: {', '.join(ds)})")
        return asked

    val_name = pick(spec.validation_split, "validation", "validation_split")
    if spec.test is not None:
        raise InputError(f"task '{task}': tasks.{task}.test: a test file is for local sources; "
                         "an hf source names its split with test_split")
    test_name = pick(spec.test_split, "test", "test_split")
    if test_name is not None and test_name in (spec.train_split, val_name):
        raise InputError(f"task '{task}': tasks.{task}.test_split: '{test_name}' is also the training or "
                         "validation split; the test split must be held out")
    label_col = spec.tags if spec.type == "tagging" else spec.label
    label_names = _class_label_names(ds[spec.train_split].features.get(label_col))

    def take(name: str) -> RawSplit:
        part = ds[name]
        split = split_from_records(part.to_dict(), spec, task_type, task=task, origin=origin)
        if label_names is not None:  # ClassLabel ids -> names, so labels read the same everywhere
            ids = [i for tags in split.labels for i in tags] if task_type == "tagging" else split.labels
            if any(not 0 <= i < len(label_names) for i in ids):  # GLUE-style unlabelled test splits (-1)
                field = "test_split" if name == test_name else "label"
                raise InputError(f"task '{task}': tasks.{task}.{field}: split '{name}' of {origin} has "
                                 f"examples without a label (class id outside 0..{len(label_names) - 1})")
            if task_type == "tagging":
                split.labels = [[label_names[i] for i in tags] for tags in split.labels]
            else:
                split.labels = [label_names[i] for i in split.labels]
        return split

    val = take(val_name) if val_name else None
    test = take(test_name) if test_name else None
    return RawTask(task_type, take(spec.train_split), val, origin, label_names=label_names, test=test)


def _class_label_names(feature: Any) -> list[str] | None:
    import datasets

    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names)
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel)
    if isinstance(inner, datasets.ClassLabel):
        return list(inner.names)
    return None
