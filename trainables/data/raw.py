"""Raw task data as read from its source, before checks, splitting and tokenization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class RawSplit:
    """One split of one task.

    For sequence tasks ``texts`` holds strings (and ``text_pairs`` the second text of a
    pair); for tagging ``texts`` holds token lists and ``labels`` tag lists.
    """

    texts: list[Any]
    labels: list[Any]
    text_pairs: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int]) -> RawSplit:
        pairs = [self.text_pairs[i] for i in idx] if self.text_pairs is not None else None
        return RawSplit([self.texts[i] for i in idx], [self.labels[i] for i in idx], pairs)


@dataclass
class RawTask:
    """What a source yields: the task type, its splits and where they came from."""

    type: str
    train: RawSplit
    validation: RawSplit | None
    origin: str  # a file path or dataset name, for error messages
    label_names: list[str] | None = None  # known class/tag names (e.g. from an HF ClassLabel)
    default_metric: str | None = None
    test: RawSplit | None = None  # the source's own held-out test split, if it has one

    def splits(self) -> list[RawSplit]:
        return [s for s in (self.train, self.validation, self.test) if s is not None]
