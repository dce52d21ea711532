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

import numpy as np

from trainables.errors import InputError


class Schedule(ABC):
    name: str

    @abstractmethod
    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        """For one epoch: the tasks of each step, given each task's batches per pass."""


class Joint(Schedule):
    name = "joint"

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

    def plan(self, batches: dict[str, int], rng: np.random.Generator, *, temperature: float) -> list[list[str]]:
        tasks = list(batches)
        sizes = np.array([batches[t] for t in tasks], dtype=float) ** self.exponent(temperature)
        draws = rng.choice(len(tasks), size=sum(batches.values()), p=sizes / sizes.sum())
        return [[tasks[i]] for i in draws]


class Temperature(Sampled):
    name = "temperature"

    def exponent(self, temperature: float) -> float:
        if temperature <= 0:
            raise InputError(f"train.temperature: must be > 0, got {temperature}")
        return 1.0 / temperature


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (Joint(), RoundRobin(), Sampled(), Temperature())}


def schedule(name: str) -> Schedule:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise InputError(f"train.schedule: unknown '{name}' (valid: {', '.join(SCHEDULES)})") from None
