"""An epoch's training losses, kept on the device: summed without a host-device sync a step,
read back (and checked for NaN/inf) only when asked."""

from __future__ import annotations

import math

import torch


class DivergedError(FloatingPointError):
    """A task's loss became NaN or infinite."""


class EpochLosses:
    """Per task: the sum of its losses, how many, and the step of its first non-finite one.
    Losses are >= 0, so a sum is finite exactly when every term is."""

    def __init__(self, tasks: list[str], device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.float64, device=device)  # float64: the sums a host float made
        self.sum = {t: zero for t in tasks}
        self.first_bad = {t: zero + math.inf for t in tasks}
        self.n = {t: 0 for t in tasks}

    def add(self, losses: dict[str, torch.Tensor], step: int) -> None:
        for t, loss in losses.items():
            v = loss.detach().double()
            self.sum[t] = self.sum[t] + v
            self.first_bad[t] = torch.where(torch.isfinite(v), self.first_bad[t], self.first_bad[t].clamp(max=step))
            self.n[t] += 1

    def means(self, step: int) -> dict[str, float]:
        """Each task's mean loss, read back (one host-device sync). A NaN or infinite one is a
        :class:`DivergedError` naming the task whose loss went first, and the step it did."""
        tasks = [t for t in self.sum if self.n[t]]
        if not tasks:
            return {}
        sums, bad = torch.stack([torch.stack([self.sum[t], self.first_bad[t]]) for t in tasks]).T.tolist()
        diverged = [(b, t, s) for t, s, b in zip(tasks, sums, bad) if math.isfinite(b)]
        if diverged:
            at, t, s = min(diverged)
            seen = "" if int(at) == step else f", seen at step {step}"
            raise DivergedError(f"task '{t}': training loss is {s} at step {int(at)}{seen} (diverged)")
        return {t: s / self.n[t] for t, s in zip(tasks, sums)}
