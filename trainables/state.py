"""What a run needs to continue after an epoch: :class:`TrainState` (the loop's own counters
and history) plus the state of every object that changes while training (model, loss
weighting, optimizer, learning-rate schedule, random generators, step hooks). Saved and
loaded here only, as one flat dict of tensors and plain data (``torch.load(...,
weights_only=True)`` reads it back).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from trainables.weighting import Weights


class StepHook(Protocol):
    """Something that watches training without changing it (the affinity meters): called after
    each step's backward pass and after each optimizer step; adds its metrics to the epoch's
    row and keeps its state in the checkpoint."""

    def after_backward(self, losses: dict[str, torch.Tensor], weights: Weights) -> None: ...

    def after_step(self, step: int) -> None: ...

    def row(self) -> dict[str, float]: ...

    def state(self) -> dict[str, Any]: ...

    def load(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    epoch: int = 0  # the last finished epoch
    step: int = 0  # optimizer steps so far
    examples: int = 0
    stale: int = 0  # epochs since the objective last improved by min_delta (patience)
    best: dict[str, Any] | None = None  # the best epoch: objective, epoch, step, metrics
    best_weights: dict[str, Any] | None = None  # the model's weights at the best epoch (on the CPU)
    test: dict[str, dict[str, float]] | None = None  # the best weights' test metrics, once the run ended
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch's row
    stopped: str | None = None  # "max_steps" | "patience" | "own_batches" once the run stopped early
    seen: dict[str, int] = field(default_factory=dict)  # each task's own batches trained so far
    # train.own_batches: each named task at its best evaluation within its batches (score, step,
    # own batches, val and test metrics), and the tasks that had all of theirs
    judged: dict[str, dict[str, Any]] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)


@dataclass
class Moving:
    """The objects whose state changes while training."""

    model: torch.nn.Module
    weighting: Any
    optim: torch.optim.Optimizer
    lr_sched: Any
    rng: np.random.Generator
    hooks: list[StepHook]


def cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights, copied to the CPU once each: a module shared by several tasks (hard
    sharing: one encoder under every task's name) stays one tensor under each of its names, as in
    the model, so the copy and its checkpoint do not grow with the number of tasks."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    out: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        same = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), v.stride(), v.dtype)
        if same not in copies:
            copies[same] = v.detach().to("cpu", copy=True)
        out[k] = copies[same]
    return out


def save(st: TrainState, parts: Moving) -> dict[str, Any]:
    return {  # not dataclasses.asdict: it would deep-copy the best weights
        **{f.name: getattr(st, f.name) for f in dataclasses.fields(st)},
        "model": parts.model.state_dict(), "weighting": parts.weighting.state_dict(),
        "weighting_extra": parts.weighting.extra_state(), "optim": parts.optim.state_dict(),
        "lr_sched": parts.lr_sched.state_dict(), "rng": parts.rng.bit_generator.state,
        "torch_rng": torch.random.get_rng_state(), "hooks": [h.state() for h in parts.hooks],
    }


def load(saved: dict[str, Any], parts: Moving) -> TrainState:
    """Restore ``parts`` from a dict made by :func:`save`; returns the loop's state."""
    parts.model.load_state_dict(saved["model"])
    parts.weighting.load_state_dict(saved["weighting"])
    parts.weighting.load_extra_state(saved["weighting_extra"])
    parts.optim.load_state_dict(saved["optim"])
    parts.lr_sched.load_state_dict(saved["lr_sched"])
    parts.rng.bit_generator.state = saved["rng"]
    torch.random.set_rng_state(saved["torch_rng"])
    for hook, state in zip(parts.hooks, saved["hooks"], strict=True):
        hook.load(state)
    names = {f.name for f in dataclasses.fields(TrainState)}
    st = TrainState(**{k: v for k, v in saved.items() if k in names})
    st.history = list(st.history)
    return st
