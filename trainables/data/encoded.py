"""Tokenized splits stored as flat tensors, and the batches cut from them.

A split is kept as one flat ``int32`` tensor of token ids plus offsets, so it is cheap to
cache on disk (``torch.save``/``torch.load(weights_only=True)``) and to slice. Batches are
padded only to the longest example in the batch (dynamic padding; on a GPU rounded up to a
few widths), and training batches are grouped by length so little padding is computed at all.
For training a split is moved to its device once (:class:`DeviceSplit`) and batches are cut there.
"""

from __future__ import annotations

from collections.abc import Iterator
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
        idx = np.asarray(idx, dtype=np.int64)
        return self.gather(torch.from_numpy(idx), int(self.lengths[idx].max()), pad_id)

    def to(self, device: torch.device) -> Encoded:
        return Encoded(self.ids.to(device), self.offsets.to(device),
                       None if self.type_ids is None else self.type_ids.to(device), self.labels.to(device),
                       self.token_labels)

    def gather(self, idx: torch.Tensor, width: int, pad_id: int) -> dict[str, torch.Tensor]:
        """The examples ``idx`` (a tensor on this split's device) padded to ``width`` tokens, cut
        where the split lives, in a few tensor operations: no per-example loop, nothing read back."""
        starts = self.offsets[idx]
        cols = torch.arange(width, device=starts.device)
        valid = cols[None, :] < (self.offsets[idx + 1] - starts)[:, None]
        pos = (starts[:, None] + cols[None, :]).clamp_(max=self.ids.numel() - 1)
        out = {"input_ids": torch.where(valid, self.ids[pos].long(), pad_id), "attention_mask": valid.long()}
        if self.type_ids is not None:
            out["token_type_ids"] = torch.where(valid, self.type_ids[pos].long(), 0)
        out["labels"] = torch.where(valid, self.labels[pos], -100) if self.token_labels else self.labels[idx]
        return out


def bucket(width: int, multiple: int, cap: int) -> int:
    """``width`` rounded up to a multiple of ``multiple``, but never past ``cap`` (the split's
    longest example): a split's batches then take at most ``cap / multiple + 1`` shapes."""
    if multiple <= 1:
        return width
    return max(width, min(-(-width // multiple) * multiple, cap))


class DeviceSplit:
    """A split moved to ``device`` once, its lengths kept on the host: batch widths are known
    without a round trip, every batch of a list is indexed after one host-to-device copy of its
    indices, and widths are rounded up to ``multiple`` tokens (few shapes: less warm-up, and what
    ``torch.compile`` and CUDA graphs need)."""

    def __init__(self, split: Encoded, device: torch.device, pad_id: int, *, multiple: int = 1) -> None:
        self.lengths = split.lengths
        self.data = split.to(device)
        self.device = device
        self.pad_id = pad_id
        self.multiple = multiple
        self.cap = int(self.lengths.max()) if len(self.lengths) else 0

    def __len__(self) -> int:
        return len(self.lengths)

    def width(self, idx: np.ndarray) -> int:
        return bucket(int(self.lengths[idx].max()), self.multiple, self.cap)

    def batches(self, batches: list[np.ndarray]) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
        """``(batch, number of examples)`` for each index array, in order, cut lazily."""
        if not batches:
            return
        flat = torch.from_numpy(np.concatenate(batches).astype(np.int64))
        if self.device.type == "cuda":
            flat = flat.pin_memory()
        flat = flat.to(self.device, non_blocking=True)
        start = 0
        for idx in batches:
            yield self.data.gather(flat[start:start + len(idx)], self.width(idx), self.pad_id), len(idx)
            start += len(idx)


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
