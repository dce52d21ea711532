"""From a task spec to tokenized, checked, split data, cached per (task, tokenizer, max_length).

Checks happen here, once, with errors that name the task and the field: labels that do
not fit the task type, empty data sets, tagging sentences whose tags and tokens differ
in count. The train/validation split and the subsampling are deterministic and do not
depend on the training seed, so every run (baseline or group, any seed) sees the same
examples. A held-out test split is set aside first (the source's own, or a fixed fraction of
its examples) and is read only to score a run's best-epoch weights at its end: no choice
(epoch, trial, grouping, early stop) ever sees it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.data.encoded import Encoded
from trainables.data.kinds import source_kind
from trainables.data.raw import RawSplit, RawTask
from trainables.errors import InputError
from trainables.spec import TaskSpec, TrainSpec

CACHE_FORMAT = 2
SPLIT_SEED = 20240611  # fixed: the split never depends on the training seed
_BIO = re.compile(r"^(O|[BI]-.+)$")
SPLITS = ("train", "val", "test")
_MEMORY: dict[str, TaskData] = {}


@dataclass
class TaskData:
    name: str
    type: str
    label_names: list[str]  # classes, or tags for tagging; empty for regression
    train: Encoded
    val: Encoded
    test: Encoded
    metric: str | None  # main-metric override (spec or built-in default)
    target_mean: float = 0.0  # regression targets are standardized for training
    target_std: float = 1.0
    origin: str = ""

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.type != "regression" else 1

    def digest(self) -> str:
        """A digest of exactly what a run trains and is scored on: every split's token ids and
        labels (after reading, splitting, capping and tokenizing), and the label names."""
        h = hashlib.sha256(json.dumps([self.name, self.type, self.label_names]).encode())
        for split in (self.train, self.val, self.test):
            for t in (split.ids, split.offsets, split.labels):
                h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("MTLO_CACHE_DIR", Path.home() / ".cache" / "mtlo"))


def read_source(name: str, spec: TaskSpec) -> RawTask:
    kind, location = source_kind(spec.source, task=name)
    return kind.read(location, spec, task=name)


def _fingerprint(spec: TaskSpec, task: str) -> dict[str, Any]:
    """What identifies the source's content cheaply: its files by size and mtime."""
    kind, location = source_kind(spec.source, task=task)
    stats = []
    for f in kind.files(location, spec):
        try:
            st = os.stat(os.path.expanduser(f))
            stats.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            stats.append([f, None, None])
    return {"spec": asdict(spec), "files": stats}


def _permutation(n: int, salt: str) -> np.ndarray:
    seed = int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16) ^ SPLIT_SEED
    return np.random.default_rng(seed).permutation(n)


def _check_labels(name: str, raw: RawTask) -> tuple[list[str], dict[str, Any]]:
    """Validate labels against the task type; return label names and any extras."""
    splits = raw.splits()
    where = f"task '{name}': tasks.{name}.label"
    if raw.type == "regression":
        values = []  # the standardization's statistics: training and validation labels, never test
        for split in splits:
            for row, v in enumerate(split.labels):
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    raise InputError(
                        f"{where}: regression needs numbers, got {v!r} at row {row + 1} in {raw.origin}"
                    ) from None
                if not math.isfinite(f):
                    raise InputError(f"{where}: value {v!r} at row {row + 1} in {raw.origin} is not finite")
                if split is not raw.test:
                    values.append(f)
            split.labels = [float(v) for v in split.labels]
        arr = np.asarray(values, dtype=np.float64)
        return [], {"target_mean": float(arr.mean()), "target_std": float(arr.std() or 1.0)}
    if raw.type == "tagging":
        where = f"task '{name}': tasks.{name}.tags"
        names: set[str] = set()
        for split in splits:
            for row, (toks, tags) in enumerate(zip(split.texts, split.labels)):
                if len(toks) != len(tags):
                    raise InputError(
                        f"{where}: sentence {row + 1} in {raw.origin} has {len(toks)} tokens "
                        f"but {len(tags)} tags"
                    )
                for tag in tags:
                    if not isinstance(tag, str) or not _BIO.match(tag):
                        raise InputError(
                            f"{where}: tag {tag!r} in sentence {row + 1} of {raw.origin} is not "
                            "BIO (O, B-TYPE or I-TYPE)"
                        )
                    names.add(tag)
        ordered = raw.label_names or sorted(names, key=lambda t: (t != "O", t[2:], t[:1]))
        return list(ordered), {}
    # classification
    values = [v for split in splits for v in split.labels]
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                  for v in values)
    if numeric:
        for row, v in enumerate(values):
            if float(v) != int(float(v)):
                raise InputError(
                    f"{where}: classification needs class labels, got {v!r} at row {row + 1} "
                    f"in {raw.origin} (use type: regression for scores)"
                )
        for split in splits:
            split.labels = [str(int(float(v))) for v in split.labels]
        classes = [str(c) for c in sorted({int(float(v)) for v in values})]
    else:
        for split in splits:
            split.labels = [str(v) for v in split.labels]
        classes = raw.label_names or sorted({str(v) for v in values})
    if len(classes) < 2:
        raise InputError(f"{where}: classification needs at least 2 classes, {raw.origin} has {classes}")
    seen = set(raw.train.labels)
    for part, own in (("validation", raw.validation), ("test", raw.test)):  # the source's own splits
        unseen = sorted(set(own.labels) - seen) if own is not None else []
        if unseen:
            raise InputError(f"{where}: class(es) {', '.join(map(repr, unseen[:5]))} of the {part} split of "
                             f"{raw.origin} never appear in its training split")
    return list(classes), {}


def _split(name: str, spec: TaskSpec, raw: RawTask, train: TrainSpec) -> tuple[RawSplit, RawSplit, RawSplit]:
    """(train, validation, test). The test split is the source's own, or a fixed fraction of its
    examples (``tasks.<name>.test_fraction``), held out before validation is carved from the
    rest; a built-in task's is the same under any task name."""
    def hold_out(pool: RawSplit, fraction: float, salt: str, field: str, what: str) -> tuple[RawSplit, RawSplit]:
        """(held out, rest): a fixed ``fraction`` of ``pool``, by a permutation seeded by ``salt``."""
        perm = _permutation(len(pool), salt)
        n = int(round(len(perm) * fraction))
        if n < 1 or n >= len(perm):
            raise InputError(f"task '{name}': {field}={fraction} leaves no {what if n < 1 else 'training'} "
                             f"examples of {len(perm)} in {raw.origin}")
        return pool.subset(sorted(perm[:n])), pool.subset(sorted(perm[n:]))

    pool = raw.train
    if raw.test is not None:
        te = raw.test
    else:
        salt = spec.source if spec.source.startswith("builtin:") else name
        te, pool = hold_out(pool, spec.test_fraction, f"{salt}:test", f"tasks.{name}.test_fraction", "test")
    if raw.validation is not None:
        tr, va = pool, raw.validation
    else:
        va, tr = hold_out(pool, train.val_fraction, f"{name}:split", "train.val_fraction", "validation")
    if len(va) == 0:
        raise InputError(f"task '{name}': validation split of {raw.origin} is empty")
    if train.max_train_examples is not None and len(tr) > train.max_train_examples:
        tr = tr.subset(sorted(_permutation(len(tr), f"{name}:sub")[: train.max_train_examples]))
    if train.max_eval_examples is not None and len(va) > train.max_eval_examples:
        va = va.subset(sorted(_permutation(len(va), f"{name}:val")[: train.max_eval_examples]))
    if train.max_eval_examples is not None and len(te) > train.max_eval_examples:
        te = te.subset(sorted(_permutation(len(te), f"{name}:test-sub")[: train.max_eval_examples]))
    return tr, va, te


@dataclass
class Splits:
    """One task read, checked and split, as text: what :func:`load_task_data` tokenizes, and
    what a model outside mtlo is scored on (``mtlo predict``, an MLflow model)."""

    raw: RawTask
    label_names: list[str]
    extra: dict[str, Any]  # regression: the targets' mean and std
    train: RawSplit
    val: RawSplit
    test: RawSplit


def raw_splits(name: str, spec: TaskSpec, train: TrainSpec) -> Splits:
    raw = read_source(name, spec)
    if len(raw.train) == 0:
        raise InputError(f"task '{name}': tasks.{name}.source: no examples in {raw.origin}")
    labels, extra = _check_labels(name, raw)
    return Splits(raw, labels, extra, *_split(name, spec, raw, train))


def _encode(split: RawSplit, task_type: str, labels: list[str], extra: dict[str, Any],
            tokenizer: Any, max_length: int) -> Encoded:
    if task_type == "tagging":
        enc = tokenizer(split.texts, is_split_into_words=True, truncation=True, max_length=max_length)
        index = {t: i for i, t in enumerate(labels)}
        aligned = []
        for i, tags in enumerate(split.labels):
            prev = None
            row = []
            for wid in enc.word_ids(i):
                row.append(index[tags[wid]] if wid is not None and wid != prev else -100)
                prev = wid
            aligned.append(row)
        return Encoded.build(enc["input_ids"], aligned, token_labels=True)
    enc = tokenizer(split.texts, split.text_pairs, truncation=True, max_length=max_length)
    type_ids = enc.get("token_type_ids") if split.text_pairs is not None else None
    if task_type == "regression":
        y = torch.tensor(split.labels, dtype=torch.float32)
        y = (y - extra["target_mean"]) / extra["target_std"]
    else:
        index = {c: i for i, c in enumerate(labels)}
        y = torch.tensor([index[v] for v in split.labels], dtype=torch.int64)
    return Encoded.build(enc["input_ids"], y, type_ids)


def load_task_data(name: str, spec: TaskSpec, train: TrainSpec, tokenizer: Any, *,
                   tokenizer_id: str, max_length: int) -> TaskData:
    """Read, check, split and tokenize one task, or take it from the cache."""
    key_src = {"v": CACHE_FORMAT, "name": name, "src": _fingerprint(spec, name), "tok": tokenizer_id,
               "max_length": max_length, "val_fraction": train.val_fraction,
               "max_train": train.max_train_examples, "max_eval": train.max_eval_examples}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True, default=str).encode()).hexdigest()[:24]
    if key in _MEMORY:
        return _MEMORY[key]
    path = cache_dir() / "tokenized" / f"{key}.pt"
    if path.is_file():
        try:
            state = torch.load(path, weights_only=True)
            data = TaskData(**{**state, **{k: Encoded.from_state(state[k]) for k in SPLITS}})
            _MEMORY[key] = data
            return data
        except Exception:  # a corrupt or stale cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    sp = raw_splits(name, spec, train)
    raw = sp.raw
    def encode(split: RawSplit) -> Encoded:
        return _encode(split, raw.type, sp.label_names, sp.extra, tokenizer, max_length)

    data = TaskData(
        name=name, type=raw.type, label_names=sp.label_names,
        train=encode(sp.train), val=encode(sp.val), test=encode(sp.test),
        metric=spec.metric or raw.default_metric, origin=raw.origin, **sp.extra,
    )
    _save(path, data)
    _MEMORY[key] = data
    return data


def _save(path: Path, data: TaskData) -> None:
    """Write atomically: concurrent trials may build the same entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f.name: getattr(data, f.name) for f in fields(data)}
    state.update({k: getattr(data, k).to_state() for k in SPLITS})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
