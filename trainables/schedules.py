"""Batch-mixing schedules: which tasks contribute to each optimizer step of an epoch.

- ``joint``: every step takes one batch of every task and sums their losses; an epoch
  lasts until the largest task has been seen once (smaller tasks cycle).
- ``round_robin``: one task per step, in turn; an epoch is as many steps as all tasks
  have batches.
- ``proportional``: one task per step, drawn with probability proportional to its size.
- ``temperature``: one task per step, p_t proportional to n_t^(1/T) (T=1: proportional,
  T->inf: uniform), as in multilingual training (Arivazhagan et al. 2019).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from trainables.errors import InputError
from trainables.registry import Registry


class Schedule(ABC):
    name: str
    reads: tuple[str, ...] = ()  # train keys only this schedule reads (a search treats them as inert elsewhere)

    @abstractmethod
    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        """For one epoch: the tasks of each step, given each task's batches per pass."""

    def shares(self, batches: Mapping[str, int], group: Sequence[str], *, temperature: float) -> dict[str, float]:
        """The expected share of a step that trains each task of ``group`` (what a transfer
        study's estimator needs): one task a step, each as often as the others, unless the
        schedule says otherwise."""
        return {t: 1.0 / len(group) for t in group}


class Joint(Schedule):
    name = "joint"

    def shares(self, batches: Mapping[str, int], group: Sequence[str], *, temperature: float) -> dict[str, float]:
        return {t: 1.0 for t in group}  # every task at every step

    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        return [list(batches) for _ in range(max(batches.values()))]


class RoundRobin(Schedule):
    name = "round_robin"

    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        tasks = list(batches)
        return [[tasks[i % len(tasks)]] for i in range(sum(batches.values()))]


class Sampled(Schedule):
    name = "proportional"

    def exponent(self, temperature: float) -> float:
        return 1.0

    def shares(self, batches: Mapping[str, int], group: Sequence[str], *, temperature: float) -> dict[str, float]:
        if not all(batches.get(t) for t in group):  # sizes unknown: as round robin
            return super().shares(batches, group, temperature=temperature)
        power = self.exponent(temperature)
        weights = {t: float(batches[t]) ** power for t in group}
        return {t: w / sum(weights.values()) for t, w in weights.items()}

    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        tasks = list(batches)
        sizes = np.array([batches[t] for t in tasks], dtype=float) ** self.exponent(temperature)
        draws = rng.choice(len(tasks), size=sum(batches.values()), p=sizes / sizes.sum())
        return [[tasks[i]] for i in draws]


class Temperature(Sampled):
    name = "temperature"
    reads = ("temperature",)

    def exponent(self, temperature: float) -> float:
        if temperature <= 0:
            raise InputError(f"train.temperature: must be > 0, got {temperature}")
        return 1.0 / temperature


SCHEDULES: Registry[Schedule] = Registry("train.schedule")
for _s in (Joint(), RoundRobin(), Sampled(), Temperature()):
    SCHEDULES.register(_s)


def schedule(name: str) -> Schedule:
    return SCHEDULES[name]
