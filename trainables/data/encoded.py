"""Tokenized splits stored as flat tensors, and the batches cut from them.

A split is kept as one flat ``int32`` tensor of token ids plus offsets, so it is cheap to
cache on disk (``torch.save``/``torch.load(weights_only=True)``) and to slice. Batches are
padded only to the longest example in the batch (dynamic padding), and training batches
are grouped by length so little padding is computed at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Encoded:
    ids: torch.Tensor  # (total_tokens,) int32
    offsets: torch.Tensor  # (n + 1,) int64
    type_ids: torch.Tensor | None  # (total_tokens,) int8, for text pairs
    labels: torch.Tensor  # (n,) int64 | float32, or (total_tokens,) int64 with -100 for tagging
    token_labels: bool = False

    def __len__(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def lengths(self) -> np.ndarray:
        return (self.offsets[1:] - self.offsets[:-1]).numpy()

    def to_state(self) -> dict[str, Any]:
        return {"ids": self.ids, "offsets": self.offsets, "type_ids": self.type_ids,
                "labels": self.labels, "token_labels": self.token_labels}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Encoded:
        return cls(**state)

    @classmethod
    def build(
        cls,
        input_ids: list[list[int]],
        labels: list[Any] | torch.Tensor,
        type_ids: list[list[int]] | None = None,
        token_labels: bool = False,
    ) -> Encoded:
        lengths = torch.tensor([len(x) for x in input_ids], dtype=torch.int64)
        offsets = torch.zeros(len(input_ids) + 1, dtype=torch.int64)
        offsets[1:] = torch.cumsum(lengths, 0)
        flat = torch.tensor([t for x in input_ids for t in x], dtype=torch.int32)
        tt = None
        if type_ids is not None:
            tt = torch.tensor([t for x in type_ids for t in x], dtype=torch.int8)
        if token_labels:
            lab = torch.tensor([t for x in labels for t in x], dtype=torch.int64)
        else:
            lab = labels if isinstance(labels, torch.Tensor) else torch.tensor(labels)
        return cls(flat, offsets, tt, lab, token_labels)

    def batch(self, idx: np.ndarray | list[int], pad_id: int) -> dict[str, torch.Tensor]:
        """Pad the examples ``idx`` to the longest of them: input_ids, attention_mask,
        token_type_ids (when the split has them) and labels."""
        starts = self.offsets[idx].tolist()
        ends = self.offsets[np.asarray(idx) + 1].tolist()
        width = max(e - s for s, e in zip(starts, ends))
        n = len(starts)
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        tt = torch.zeros((n, width), dtype=torch.long) if self.type_ids is not None else None
        lab = torch.full((n, width), -100, dtype=torch.long) if self.token_labels else None
        for row, (s, e) in enumerate(zip(starts, ends)):
            ids[row, : e - s] = self.ids[s:e]
            mask[row, : e - s] = 1
            if tt is not None:
                tt[row, : e - s] = self.type_ids[s:e]  # type: ignore[index]
            if lab is not None:
                lab[row, : e - s] = self.labels[s:e]
        out = {"input_ids": ids, "attention_mask": mask}
        if tt is not None:
            out["token_type_ids"] = tt
        out["labels"] = lab if lab is not None else self.labels[idx]
        return out


def length_grouped_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, *, group: int = 50
) -> list[np.ndarray]:
    """Shuffled batches of similar-length examples (as HF's ``group_by_length``): shuffle,
    sort within windows of ``group`` batches, cut, then shuffle the batch order."""
    perm = rng.permutation(len(lengths))
    window = batch_size * group
    batches: list[np.ndarray] = []
    for start in range(0, len(perm), window):
        chunk = perm[start : start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    order = rng.permutation(len(batches))
    return [batches[i] for i in order]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for evaluation: sorted by length, so padding is minimal."""
    order = np.argsort(-lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
