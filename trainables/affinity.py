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


class GradientAffinity:
    """First-order lookahead affinity from the training steps' own gradients, at every step.

    For an SGD step of rate η along task i's gradient g_i, to first order
    Z[i -> j] ≈ η ⟨g_i, g_j⟩ / L_j. A schedule that trains one task per step (round_robin,
    proportional, temperature) computes some g_t at every step anyway: each step's gradient
    of the shared parameters is paired with the latest gradient of every other task (a few
    steps old) and with t's own previous one (another batch of t: the diagonal). So the
    affinity is measured at every step, for a copy of the shared gradient and a dot product
    per task (0.27 training steps a step on the tiny encoder, most of it the copy of the word
    embeddings' gradient; benchmarks/affinity_cost.py), where one lookahead measurement
    (:class:`AffinityMeter`) costs 11.8 steps at six tasks and is taken every k steps.
    ``gcos`` is the cosine of the same pair of gradients.
    """

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], float] = {}
        self.cos: dict[tuple[str, str], float] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self.last: dict[str, tuple[torch.Tensor, float]] = {}
        self._norms: dict[str, float] = {}

    def observe(self, task: str, shared: list[torch.nn.Parameter], loss: float, lr: float, scale: float = 1.0) -> None:
        """After the backward pass of a step that trained ``task`` alone (its loss ``loss``,
        its weight in the objective ``scale``), before the optimizer step."""
        if not shared or not loss > 0 or not scale:
            return
        g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).float()
                       for p in shared])  # the one copy a step
        if scale != 1.0:
            g.div_(scale)
        norm = float(g.norm())
        for j, (gj, loss_j) in self.last.items():
            dot = float(g @ gj)
            cos = dot / max(norm * self._norms[j], 1e-30)
            pairs = [(task, task, loss)] if j == task else [(task, j, loss_j), (j, task, loss)]
            for a, b, lb in pairs:
                self.sums[(a, b)] = self.sums.get((a, b), 0.0) + lr * dot / lb
                self.cos[(a, b)] = self.cos.get((a, b), 0.0) + cos
                self.counts[(a, b)] = self.counts.get((a, b), 0) + 1
        self.last[task] = (g, loss)
        self._norms[task] = norm

    def state(self) -> dict[str, Any]:
        return {"sums": {f"{i}\t{j}": v for (i, j), v in self.sums.items()},
                "cos": {f"{i}\t{j}": v for (i, j), v in self.cos.items()},
                "counts": {f"{i}\t{j}": v for (i, j), v in self.counts.items()},
                "last": {t: [g.cpu(), loss] for t, (g, loss) in self.last.items()}}

    def load(self, state: dict[str, Any], device: torch.device | None = None) -> None:
        for name in ("sums", "cos", "counts"):
            getattr(self, name).update({tuple(k.split("\t")): v for k, v in state[name].items()})
        self.last = {t: (g.to(device) if device is not None else g, float(loss))
                     for t, (g, loss) in state["last"].items()}
        self._norms = {t: float(g.norm()) for t, (g, _) in self.last.items()}

    def row(self) -> dict[str, float]:
        out = {f"gaffinity/{i}/{j}": v / self.counts[(i, j)] for (i, j), v in self.sums.items()}
        out.update({f"gcos/{i}/{j}": v / self.counts[(i, j)] for (i, j), v in self.cos.items()})
        return out


# -- as step hooks of the training loop (trainables/state.py's StepHook) ---------------------------
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


class GradientHook:
    """:class:`GradientAffinity` after every step that trained one task alone; η is the live
    learning rate of the shared parameters' optimizer group."""

    def __init__(self, meter: GradientAffinity, optim: torch.optim.Optimizer, shared: list[torch.nn.Parameter],
                 device: torch.device) -> None:
        self.meter, self.optim, self.shared, self.device = meter, optim, shared, device
        self._group: dict[str, Any] | None = None

    def after_backward(self, losses: dict[str, torch.Tensor], weights: Weights) -> None:
        if len(losses) != 1:
            return
        if self._group is None:  # found at first use: after any optim.load_state_dict, which replaces groups
            self._group = param_group(self.optim, self.shared[0])
        (task, loss), = losses.items()
        lr = float(self._group["lr"]) if self._group is not None else 0.0
        self.meter.observe(task, self.shared, float(loss.detach()), lr, float(weights.get(task, 1.0)))

    def after_step(self, step: int) -> None:
        pass

    def row(self) -> dict[str, float]:
        return self.meter.row()

    def state(self) -> dict[str, Any]:
        return self.meter.state()

    def load(self, state: dict[str, Any]) -> None:
        self.meter.load(state, self.device)
        self._group = None
