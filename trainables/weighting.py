"""Loss weighting: how per-task losses become one update.

Each method turns ``{task: loss}`` into gradients (it calls backward itself, since some
methods reshape gradients rather than losses) and returns the weight each task got.

- ``static``: fixed weights lambda_t (searched), default 1.0.
- ``uncertainty``: Kendall, Gal & Cipolla 2018, learned log-variances s_t:
  ``sum_t exp(-s_t) L_t / 2 + s_t / 2``.
- ``gradnorm``: Chen et al. 2018, learned weights whose gradient norms on the last shared
  layer are pulled towards ``mean_norm * r_t^alpha`` (r_t: relative inverse training rate).
- ``dwa``: Liu, Johns & Davison 2019, Dynamic Weight Average from the ratio of each task's
  epoch loss over the previous one, softmax with temperature 2.
- ``pcgrad`` (Yu et al. 2020: a task gradient that conflicts with another is projected onto
  its normal plane), ``upgrad``, ``mgda``, ``cagrad``, ``nash_mtl``: TorchJD's aggregators of
  the Jacobian of the (static-weighted) task losses on the shared parameters into one update:
  UPGrad (Quinton & Rey 2024: each gradient projected onto the dual cone of all, averaged),
  MGDA (Desideri 2012: the min-norm point of their hull), CAGrad (Liu et al. 2021, c = 0.5),
  Nash-MTL (Navon et al. 2022). Task-specific parameters take their plain gradients.
- ``famo``: Liu et al. 2023, Fast Adaptive Multitask Optimization: task logits xi whose
  softmax z weighs the log-losses, ``sum_t z_t log L_t / c`` with ``c = sum_t z_t / L_t``
  (weights scaled to sum to the number of tasks); after each step the same batches' losses are
  computed again and xi takes an Adam step (lr 0.025, decay 0.01: the authors') along
  ``J_softmax^T (log L_before - log L_after)``: weight moves to the tasks whose loss fell least.

GradNorm, PCGrad and FAMO act across the tasks of one step, so they matter with
``schedule: joint``; with one task per step they reduce to that task's (weighted) loss.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any, ClassVar, TypeAlias

import torch
from annotated_types import Ge, Gt, Interval
from torch import nn

from trainables.errors import InputError
from trainables.model import MultiTaskModel
from trainables.registry import Registry

# the weight each task got this step: a float, or a 0-d tensor where reading it would stall a GPU
Weights: TypeAlias = Mapping[str, "float | torch.Tensor"]


class Weighting(nn.Module, ABC):
    """Learnable state (if any) lives in this module's parameters; the loop optimizes them."""

    name: str

    def __init__(self, tasks: list[str], task_weights: dict[str, float]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        unknown = set(task_weights) - set(tasks)
        if unknown:
            raise InputError(f"train.task_weights: unknown task(s) {sorted(unknown)} "
                             f"(tasks: {', '.join(tasks)})")
        self.static = {t: float(task_weights.get(t, 1.0)) for t in tasks}

    @abstractmethod
    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        """Backpropagate the combined objective; return the weight used per task."""

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called with each task's mean training loss at the end of an epoch."""

    def forward_context(self) -> AbstractContextManager[Any]:
        """Wraps the training forward pass (a method may need differentiable kernels)."""
        return nullcontext()

    # True: after each optimizer step the loop computes the step's batches' losses again (no
    # gradient) and passes them to :meth:`after_step`
    wants_losses_after_step = False

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """The losses of the step's batches under the parameters the step produced."""

    def extra_state(self) -> dict[str, Any]:
        """State kept outside parameters and buffers (for checkpoints)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    # the method's options (``train.weighting_options.<name>``): option -> (its type, default)
    OPTIONS: ClassVar[dict[str, tuple[Any, float]]] = {}

    @classmethod
    def options(cls, given: Mapping[str, Any] | None) -> dict[str, Any]:
        """``given`` checked against :attr:`OPTIONS`, defaults filled in; one line on a bad one."""
        from pydantic import TypeAdapter, ValidationError

        given = dict(given or {})
        for key in given:
            if key not in cls.OPTIONS:
                raise InputError(f"train.weighting_options.{cls.name}.{key}: {cls.name} has no option {key!r} "
                                 f"(its options: {', '.join(cls.OPTIONS) or 'none'})")
        out = {}
        for key, (kind, default) in cls.OPTIONS.items():
            try:
                out[key] = TypeAdapter(kind).validate_python(given.get(key, default))
            except ValidationError as exc:
                raise InputError(f"train.weighting_options.{cls.name}.{key}: {exc.errors()[0]['msg']} "
                                 f"(got {given[key]!r})") from None
        return out

    @classmethod
    def build(cls, tasks: list[str], task_weights: dict[str, float], *, seed: int = 0,
              options: Mapping[str, Any] | None = None) -> Weighting:
        """A new weighting for ``tasks`` with its ``options`` (``seed``: for a method that draws
        random numbers)."""
        return cls(tasks, task_weights, **cls.options(options))

    def _weighted_backward(self, losses: dict[str, torch.Tensor], weights: Weights) -> None:
        total = sum(weights[t] * loss for t, loss in losses.items())
        total.backward()  # type: ignore[union-attr]


class Static(Weighting):
    name = "static"

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        w = {t: self.static[t] for t in losses}
        self._weighted_backward(losses, w)
        return w


class Uncertainty(Weighting):
    name = "uncertainty"

    def __init__(self, tasks: list[str], task_weights: dict[str, float]) -> None:
        super().__init__(tasks, task_weights)
        self.log_var = nn.Parameter(torch.zeros(len(tasks)))

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        total = torch.zeros((), device=self.log_var.device)
        for t, loss in losses.items():
            s = self.log_var[self.tasks.index(t)]
            total = total + 0.5 * torch.exp(-s) * loss + 0.5 * s
        total.backward()
        # the weights stay tensors (read once, with the epoch's row): no host sync a step
        return {t: 0.5 * torch.exp(-self.log_var[self.tasks.index(t)].detach()) for t in losses}


class GradNorm(Weighting):
    name = "gradnorm"
    OPTIONS = {"alpha": (Annotated[float, Ge(0)], 1.5)}  # the pull towards equal training rates
    initial: torch.Tensor  # each task's first loss, for the relative training rate

    def __init__(self, tasks: list[str], task_weights: dict[str, float], alpha: float = OPTIONS["alpha"][1]) -> None:
        super().__init__(tasks, task_weights)
        self.alpha = alpha
        self.w = nn.Parameter(torch.ones(len(tasks)))
        self.register_buffer("initial", torch.full((len(tasks),), float("nan")))

    def forward_context(self) -> AbstractContextManager[Any]:
        # GradNorm differentiates gradient norms (double backward); the fused cuDNN/flash
        # attention kernels have no second derivative, the plain math kernel does
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        with torch.no_grad():  # renormalize after the last optimizer step: sum w = T, w > 0
            self.w.clamp_(min=1e-3)
            self.w.mul_(len(self.tasks) / self.w.sum())
        if len(losses) < len(self.tasks):  # one task per step: nothing to balance
            w = {t: float(self.w.detach()[self.tasks.index(t)]) for t in losses}
            self._weighted_backward(losses, w)
            return w
        idx = [self.tasks.index(t) for t in losses]
        L = torch.stack(list(losses.values()))
        with torch.no_grad():
            unset = torch.isnan(self.initial[idx])
            if unset.any():
                self.initial[idx] = torch.where(unset, L.detach().float(), self.initial[idx])
        norms = []
        for i, (t, loss) in zip(idx, losses.items()):
            params = model.last_shared_parameters(t)
            grads = torch.autograd.grad(self.w[i] * loss, params, retain_graph=True, create_graph=True)
            norms.append(torch.sqrt(torch.stack([g.pow(2).sum() for g in grads]).sum()))
        G = torch.stack(norms)
        with torch.no_grad():
            ratio = L.detach() / self.initial[idx]
            target = G.mean() * (ratio / ratio.mean()) ** self.alpha
        grad_loss = (G - target).abs().sum()
        self.w.grad = torch.autograd.grad(grad_loss, self.w, retain_graph=True)[0]
        w = {t: float(self.w.detach()[i]) for i, t in zip(idx, losses)}
        self._weighted_backward(losses, w)
        return w


class DWA(Weighting):
    name = "dwa"
    OPTIONS = {"temperature": (Annotated[float, Gt(0)], 2.0)}

    def __init__(self, tasks: list[str], task_weights: dict[str, float],
                 temperature: float = OPTIONS["temperature"][1]) -> None:
        super().__init__(tasks, task_weights)
        self.temperature = temperature
        self.history: list[dict[str, float]] = []
        self.current = {t: 1.0 for t in tasks}

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history.append(dict(mean_losses))
        if len(self.history) < 2:
            return
        prev, last = self.history[-2], self.history[-1]
        ratios = {t: last[t] / prev[t] if prev.get(t) else 1.0 for t in self.tasks if t in last}
        z = sum(math.exp(r / self.temperature) for r in ratios.values())
        self.current = {t: len(ratios) * math.exp(r / self.temperature) / z for t, r in ratios.items()}

    def extra_state(self) -> dict[str, Any]:
        return {"history": self.history, "current": self.current}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.history = [dict(h) for h in state["history"]]
        self.current = dict(state["current"])

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        w = {t: self.current.get(t, 1.0) for t in losses}
        self._weighted_backward(losses, w)
        return w


class FAMO(Weighting):
    name = "famo"
    wants_losses_after_step = True
    OPTIONS = {"lr": (Annotated[float, Gt(0)], 0.025), "decay": (Annotated[float, Ge(0)], 0.01)}  # the logits' Adam
    EPS = 1e-8  # the authors' floor under a loss (the minimum loss is taken as 0)

    def __init__(self, tasks: list[str], task_weights: dict[str, float], lr: float = OPTIONS["lr"][1],
                 decay: float = OPTIONS["decay"][1]) -> None:
        super().__init__(tasks, task_weights)
        self.lr, self.decay = lr, decay
        # the logits xi have an optimizer of their own (not the model's): made on the losses'
        # device at the first step, where a checkpoint's state is loaded too
        self.logits: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.saved: dict[str, Any] | None = None
        self.before: dict[str, torch.Tensor] = {}  # this step's losses, for after_step

    def _logits(self, device: torch.device) -> torch.Tensor:
        if self.logits is None:
            self.logits = torch.zeros(len(self.tasks), device=device, requires_grad=True)
            self.opt = torch.optim.Adam([self.logits], lr=self.lr, weight_decay=self.decay)
            if self.saved is not None:
                with torch.no_grad():
                    self.logits.copy_(self.saved["logits"])
                self.opt.load_state_dict(self.saved["adam"])
                self.saved = None
        return self.logits

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        loss = torch.stack([v.float() for v in losses.values()])
        z = torch.softmax(self._logits(loss.device).detach()[[self.tasks.index(t) for t in losses]], 0)
        d = loss.detach() + self.EPS
        w = len(losses) * z / ((z / d).sum() * d)  # the gradient of sum z log L / c, per loss
        weights = dict(zip(losses, w.unbind()))  # 0-d tensors: no host sync a step
        self.before = {t: v.detach() for t, v in losses.items()}
        self._weighted_backward(losses, weights)
        return weights

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        logits = self._logits(next(iter(losses.values())).device)
        idx = [self.tasks.index(t) for t in losses]
        delta = torch.stack([(self.before[t].float() + self.EPS).log() - (v.detach().float() + self.EPS).log()
                             for t, v in losses.items()])
        z = torch.softmax(logits.detach()[idx], 0)
        grad = torch.zeros_like(logits)
        grad[idx] = z * (delta - (z * delta).sum())  # J_softmax^T delta
        assert self.opt is not None
        self.opt.zero_grad()
        logits.grad = grad
        self.opt.step()

    def extra_state(self) -> dict[str, Any]:
        if self.logits is None:
            return {"saved": self.saved}
        assert self.opt is not None
        # copies: Adam updates its moments in place, and a checkpoint is written later
        return {"saved": {"logits": self.logits.detach().cpu().clone(), "adam": copy.deepcopy(self.opt.state_dict())}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.logits, self.opt, self.saved = None, None, state["saved"]


def set_jacobians(shared: list[nn.Parameter], rest: list[nn.Parameter], losses: list[torch.Tensor]) -> None:
    """Each shared parameter's ``.jac`` (one row per loss, as TorchJD's ``autojac.backward``
    leaves it) and every other parameter's ``.grad`` (of the losses' sum), from one backward pass
    per loss. Each loss must come from a forward pass of its own, as the loop's do (one per
    task's batch): each pass then frees its graph (what a compiled encoder's backward requires),
    and together they cost what one backward pass of the summed loss costs, where
    ``autojac.backward`` would send each row through every task's graph (as many full backward
    passes as tasks)."""
    rows: list[list[torch.Tensor]] = [[] for _ in shared]
    for loss in losses:
        grads = torch.autograd.grad(loss, [*shared, *rest], allow_unused=True)
        for row, p, g in zip(rows, shared, grads):
            row.append(torch.zeros_like(p) if g is None else g)
        for p, g in zip(rest, grads[len(shared):]):
            if g is not None:
                p.grad = g if p.grad is None else p.grad + g
    for p, row in zip(shared, rows):
        p.jac = torch.stack(row)  # type: ignore[attr-defined]


class Aggregated(Weighting):
    """A TorchJD aggregator of the task gradients on the shared parameters (``aggregator``)."""

    AGGREGATOR: ClassVar[str]  # the class in torchjd.aggregation, made with the method's options

    def __init__(self, tasks: list[str], task_weights: dict[str, float], **options: Any) -> None:
        super().__init__(tasks, task_weights)
        self.opts = options
        self.aggregator = self.make_aggregator(len(tasks))

    def aggregator_args(self, n_tasks: int) -> dict[str, Any]:
        return self.opts

    def make_aggregator(self, n_tasks: int) -> Any:
        """The TorchJD aggregator (imported here: TorchJD is needed only by these methods)."""
        import torchjd.aggregation

        return getattr(torchjd.aggregation, self.AGGREGATOR)(**self.aggregator_args(n_tasks))

    def backward(self, losses: dict[str, torch.Tensor], model: MultiTaskModel) -> Weights:
        from torchjd.autojac import jac_to_grad

        w: dict[str, float | torch.Tensor] = {t: self.static[t] for t in losses}
        shared = model.shared_parameters()
        if len(losses) < len(self.tasks) or not shared:  # one task a step, or nothing shared: nothing to aggregate
            self._weighted_backward(losses, w)
            return w
        shared_ids = {id(p) for p in shared}
        rest = [p for p in model.parameters() if id(p) not in shared_ids and p.requires_grad]
        set_jacobians(shared, rest, [w[t] * loss for t, loss in losses.items()])
        used = jac_to_grad(shared, self.aggregator)  # the rows' weights (a weighted aggregator's)
        return {t: w[t] * used[i] for i, t in enumerate(losses)}


class PCGrad(Aggregated):
    """Yu et al.'s projections, in a random order per task drawn from torch's generator (which
    a checkpoint restores: a resumed run goes on number for number)."""

    name, AGGREGATOR = "pcgrad", "PCGrad"


class UPGrad(Aggregated):
    name, AGGREGATOR = "upgrad", "UPGrad"


class MGDA(Aggregated):
    name, AGGREGATOR = "mgda", "MGDA"


class CAGrad(Aggregated):
    name, AGGREGATOR = "cagrad", "CAGrad"
    # c: how far from the mean gradient the update may go (0: the mean); the authors' 0.5
    OPTIONS = {"c": (Annotated[float, Interval(ge=0, lt=1)], 0.5)}


class NashMTL(Aggregated):
    name, AGGREGATOR = "nash_mtl", "NashMTL"
    # the step's norm cap (0: none) and the bargaining solver's iterations: the library's defaults
    OPTIONS = {"max_norm": (Annotated[float, Ge(0)], 1.0), "optim_niter": (Annotated[int, Ge(1)], 20)}

    def make_aggregator(self, n_tasks: int) -> Any:
        import warnings

        # cvxpy's notice that the bargaining problem is not DPP (each solve compiles it anew)
        warnings.filterwarnings("ignore", message=".*not DPP.*")
        return super().make_aggregator(n_tasks)

    def aggregator_args(self, n_tasks: int) -> dict[str, Any]:
        return {"n_tasks": n_tasks, **self.opts}


WEIGHTING: Registry[type[Weighting]] = Registry("train.weighting")
for _cls in (Static, Uncertainty, GradNorm, DWA, PCGrad, FAMO, UPGrad, MGDA, CAGrad, NashMTL):
    WEIGHTING.register(_cls)


def make_weighting(name: str, tasks: list[str], task_weights: dict[str, float], *, seed: int = 0,
                   options: Mapping[str, Mapping[str, Any]] | None = None) -> Weighting:
    """``name``'s weighting for ``tasks``; ``options``: ``train.weighting_options``, per method."""
    return WEIGHTING[name].build(tasks, task_weights, seed=seed, options=(options or {}).get(name))


def check_weighting_options(options: Mapping[str, Mapping[str, Any]]) -> None:
    """Every method named in ``train.weighting_options`` exists and takes what it is given."""
    for name, given in options.items():
        if name not in WEIGHTING:
            raise InputError(f"train.weighting_options.{name}: no such weighting (valid: {', '.join(WEIGHTING)})")
        WEIGHTING[name].options(given)
