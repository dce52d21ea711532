"""Task types: each owns its head, its loss and its metrics (and its main metric's direction)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from trainables.data.prepare import TaskData
from trainables.errors import InputError


# Classification and regression metrics in numpy: sklearn's f1_score and scipy.stats (their
# imports pull pandas and scipy.stats: about 1.1 s of CPU) would be imported by every trial
# worker. tests/trainables/test_tasks.py holds them equal to sklearn's and scipy's.
def macro_f1(y: np.ndarray, p: np.ndarray, num_labels: int) -> float:
    """The mean over labels 0..num_labels-1 of 2 tp / (2 tp + fp + fn), 0 for a label that is
    neither true nor predicted: sklearn's ``f1_score(average="macro", labels=..., zero_division=0)``."""
    n = num_labels
    confusion = np.bincount(y.astype(np.int64) * n + p.astype(np.int64), minlength=n * n).reshape(n, n)
    tp = np.diag(confusion).astype(np.float64)
    denominator = confusion.sum(0) + confusion.sum(1)  # (tp + fp) + (tp + fn)
    return float(np.mean(np.divide(2 * tp, denominator, out=np.zeros(n), where=denominator > 0)))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r of two non-constant series (scipy.stats.pearsonr's statistic)."""
    a, b = a - a.mean(), b - b.mean()
    return float(np.clip(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0))


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their mean rank (scipy.stats.rankdata): Spearman's rho is Pearson's r of these."""
    order = np.argsort(a, kind="mergesort")
    ordered = a[order]
    group = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1  # tie group of each sorted position
    counts = np.bincount(group)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = np.empty(len(a))
    ranks[order] = mean_rank[group]
    return ranks


class TaskType(ABC):
    name: ClassVar[str]
    token_level: ClassVar[bool] = False  # heads over every token (tagging) or a pooled vector
    higher_is_better: ClassVar[dict[str, bool]]
    default_metric: ClassVar[str]

    def head(self, hidden: int, num_labels: int, dropout: float = 0.1) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, num_labels))

    @abstractmethod
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        """What the metrics compare with the labels (classes, scores or tag ids)."""

    @abstractmethod
    def metrics(self, preds: list[torch.Tensor], labels: list[torch.Tensor], data: TaskData) -> dict[str, float]:
        """Metrics over a whole split, from per-batch predictions and labels."""

    def main_metric(self, data: TaskData) -> str:
        metric = data.metric or self.default_metric
        if metric not in self.higher_is_better:
            raise InputError(
                f"task '{data.name}': tasks.{data.name}.metric: '{metric}' is not a {self.name} "
                f"metric (valid: {', '.join(self.higher_is_better)})"
            )
        return metric


class Classification(TaskType):
    name = "classification"
    higher_is_better = {"accuracy": True, "macro_f1": True}
    default_metric = "accuracy"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def metrics(self, preds: list[torch.Tensor], labels: list[torch.Tensor], data: TaskData) -> dict[str, float]:
        p = torch.cat(preds).cpu().numpy()
        y = torch.cat(labels).cpu().numpy()
        return {"accuracy": float((p == y).mean()), "macro_f1": macro_f1(y, p, data.num_labels)}


class Regression(TaskType):
    name = "regression"
    higher_is_better = {"pearson": True, "spearman": True, "mse": False}
    default_metric = "pearson"

    def head(self, hidden: int, num_labels: int, dropout: float = 0.1) -> nn.Module:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.float().squeeze(-1), labels)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(-1)

    def metrics(self, preds: list[torch.Tensor], labels: list[torch.Tensor], data: TaskData) -> dict[str, float]:
        # back to the label's own scale: training used standardized targets
        p = torch.cat(preds).cpu().double().numpy() * data.target_std + data.target_mean
        y = torch.cat(labels).cpu().double().numpy() * data.target_std + data.target_mean
        constant = np.allclose(p, p[0]) or np.allclose(y, y[0])
        return {
            "pearson": 0.0 if constant else pearson(p, y),
            "spearman": 0.0 if constant else pearson(average_ranks(p), average_ranks(y)),
            "mse": float(np.mean((p - y) ** 2)),
        }


class Tagging(TaskType):
    name = "tagging"
    token_level = True
    higher_is_better = {"f1": True, "precision": True, "recall": True, "token_accuracy": True}
    default_metric = "f1"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def metrics(self, preds: list[torch.Tensor], labels: list[torch.Tensor], data: TaskData) -> dict[str, float]:
        """Span-level precision/recall/F1 (seqeval, BIO), scored on each word's first sub-token."""
        from seqeval.metrics import f1_score, precision_score, recall_score

        names = data.label_names
        y_true: list[list[str]] = []
        y_pred: list[list[str]] = []
        correct = total = 0
        for p_batch, y_batch in zip(preds, labels):
            for p_row, y_row in zip(p_batch.cpu(), y_batch.cpu()):
                keep = y_row != -100
                yt, yp = y_row[keep].tolist(), p_row[keep].tolist()
                y_true.append([names[i] for i in yt])
                y_pred.append([names[i] for i in yp])
                correct += sum(a == b for a, b in zip(yt, yp))
                total += len(yt)
        return {
            "f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "token_accuracy": correct / max(total, 1),
        }


TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (Classification(), Regression(), Tagging())}


def task_type(name: str) -> TaskType:
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise InputError(f"unknown task type '{name}' (valid: {', '.join(TASK_TYPES)})") from None
