"""Lookahead inter-task affinity (Fifty et al. 2021, "Efficiently Identifying Task Groupings
for Multi-Task Learning", TAG), measured inside one joint training run.

Every ``affinity_every`` optimizer steps, with one batch per task:

    Z[i -> j] = 1 - L_j(θ_s - Δ_i) / L_j(θ_s)

where Δ_i = η · g_i is an SGD step on the shared parameters θ_s along task i's gradient
alone, at the current learning rate η of those parameters (as in the paper; an
Adam-preconditioned step of the same rate overshoots once losses are small and turns every
affinity negative). Z[i -> j] > 0: a step on i lowers j's loss (i helps j). The losses are
taken in eval mode (no dropout) so that the only change is the lookahead step. The run
reports the running mean of every Z[i -> j].

The diagonal Z[i -> i] (how much a step on i lowers i's loss on *another* batch of i, so that
it is not the step's own batch) is measured too: it is the yardstick for the others, "a step
on j is worth Z[j -> i] / Z[i -> i] of a step on i itself", which the transfer analysis uses
to estimate gains under the equal-budget rule (orchestrator/transfer/predict.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from trainables.weighting import Weights


class AffinityMeter:
    def __init__(self, tasks: list[str]) -> None:
        self.tasks = list(tasks)
        self.sums = {(i, j): 0.0 for i in self.tasks for j in self.tasks if i != j}  # the diagonal once measured
        self.count = 0

    def state(self) -> dict[str, Any]:
        return {"sums": {f"{i}\t{j}": v for (i, j), v in self.sums.items()}, "count": self.count}

    def load(self, state: dict[str, Any]) -> None:
        self.sums.update({tuple(k.split("\t")): v for k, v in state["sums"].items()})  # type: ignore[misc]
        self.count = state["count"]

    def mean(self) -> dict[tuple[str, str], float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def row(self) -> dict[str, float]:
        """The running means as report keys ``affinity/<i>/<j>`` (i's step on j's loss)."""
        return {f"affinity/{i}/{j}": v for (i, j), v in self.mean().items()}

    def measure(self, model: torch.nn.Module, optim: torch.optim.Optimizer, shared: list[torch.nn.Parameter],
                loss_fn: Callable[[str, dict[str, torch.Tensor]], torch.Tensor],
                batches: dict[str, dict[str, torch.Tensor]],
                holdout: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[tuple[str, str], float]:
        """One measurement; adds it to the running sums and returns it. ``holdout``: a second
        batch per task, where Z[i -> i] is measured (without it the diagonal is not measured)."""
        if not shared:
            raise ValueError("affinity needs parameters that the tasks share (sharing: hard or partial)")
        was_training = model.training
        model.eval()
        saved = [p.detach().clone() for p in shared]
        scale = _step_scale(optim, shared)
        try:
            with torch.no_grad():
                base = {j: float(loss_fn(j, batches[j])) for j in self.tasks}
                base_self = {j: float(loss_fn(j, b)) for j, b in (holdout or {}).items()}
            z: dict[tuple[str, str], float] = {}
            for i in self.tasks:
                loss = loss_fn(i, batches[i])
                grads = torch.autograd.grad(loss, shared, allow_unused=True)
                with torch.no_grad():
                    for p, g, s in zip(shared, grads, scale, strict=True):
                        if g is not None:
                            p.sub_(g * s)
                    for j in self.tasks:
                        if j != i:
                            after = float(loss_fn(j, batches[j]))
                            z[(i, j)] = 1.0 - after / base[j] if base[j] > 0 else 0.0
                    if i in base_self:
                        after = float(loss_fn(i, holdout[i]))  # type: ignore[index]
                        z[(i, i)] = 1.0 - after / base_self[i] if base_self[i] > 0 else 0.0
                    for p, keep in zip(shared, saved, strict=True):
                        p.copy_(keep)
        finally:
            model.train(was_training)
        for k, v in z.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1
        return z


def _step_scale(optim: torch.optim.Optimizer, shared: list[torch.nn.Parameter]) -> list[float]:
    """Per shared parameter, the learning rate of its optimizer group (the lookahead is an
    SGD step at that rate; 0 for a parameter no group trains)."""
    where = {id(p): g for g in optim.param_groups for p in g["params"]}
    return [float(where[id(p)]["lr"]) if id(p) in where else 0.0 for p in shared]


def param_group(optim: torch.optim.Optimizer, p: torch.nn.Parameter) -> dict[str, Any] | None:
    """The optimizer group that trains ``p`` (its ``lr`` is read live: schedulers change it in
    place), or None. Look it up again after ``optim.load_state_dict``, which replaces the groups."""
    return next((g for g in optim.param_groups if any(q is p for q in g["params"])), None)


Batches = dict[str, dict[str, torch.Tensor]]


class LookaheadHook:
    """:class:`AffinityMeter` every ``every`` optimizer steps, on batches drawn by ``draw``
    from a generator of its own (the training batches are unchanged by measuring)."""

    def __init__(self, meter: AffinityMeter, every: int, model: torch.nn.Module, optim: torch.optim.Optimizer,
                 shared: list[torch.nn.Parameter], loss_fn: Callable[[str, dict[str, torch.Tensor]], torch.Tensor],
                 draw: Callable[[Any], tuple[Batches, Batches]], rng: Any) -> None:
        self.meter, self.every, self.model, self.optim = meter, every, model, optim
        self.shared, self.loss_fn, self.draw, self.rng = shared, loss_fn, draw, rng

    def after_backward(self, losses: dict[str, torch.Tensor], weights: Weights) -> None:
        pass

    def after_step(self, step: int) -> None:
        if step % self.every == 0:
            batches, holdout = self.draw(self.rng)
            self.meter.measure(self.model, self.optim, self.shared, self.loss_fn, batches, holdout)

    def row(self) -> dict[str, float]:
        return self.meter.row()

    def state(self) -> dict[str, Any]:
        return {"meter": self.meter.state(), "rng": self.rng.bit_generator.state}

    def load(self, state: dict[str, Any]) -> None:
        self.meter.load(state["meter"])
        self.rng.bit_generator.state = state["rng"]
