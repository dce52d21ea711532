"""The training loop: ``build`` an experiment (data, model, weighting), then ``fit`` it.

``train(config, report)`` is the trial function. It imports neither Ray nor MLflow:
``report`` receives one flat dict of metrics per epoch::

    {"epoch": 2, "step": 120, "examples": 3840, "objective": 0.71,
     "val/rt/accuracy": 0.78, "val/rt/macro_f1": 0.77, "train/rt/loss": 0.45, "weight/rt": 1.0, ...}

The run keeps the weights of its best epoch (by validation alone). Its last row also holds
``test/<task>/<metric>``: the best-epoch weights scored once on the held-out test split, which
nothing in training or selection reads; after ``fit`` the model holds those weights.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from trainables.affinity import AffinityMeter, GradientAffinity, GradientHook, LookaheadHook
from trainables.budget import OwnBatches
from trainables.data import TaskData, eval_batches, length_grouped_batches, load_task_data
from trainables.data.encoded import DeviceSplit
from trainables.encoder import load_encoder, tokenizer_id
from trainables.errors import InputError
from trainables.losses import EpochLosses
from trainables.model import MultiTaskModel
from trainables.schedules import schedule
from trainables.sharing import sharing_mode
from trainables.spec import RunSpec
from trainables.state import Moving, StepHook, TrainState
from trainables.state import load as load_state
from trainables.state import save as save_train_state
from trainables.tasks import TaskType, task_type
from trainables.weighting import Weighting, make_weighting

Report = Callable[[dict[str, Any]], None]
COMPILE_OPTIONS: dict[str, Any] = {}  # torch.compile's own defaults (inductor); tests trace with a lighter backend


@dataclass
class Experiment:
    spec: RunSpec
    data: dict[str, TaskData]
    types: dict[str, TaskType]
    main_metric: dict[str, str]
    model: MultiTaskModel
    weighting: Weighting
    pad_id: int
    device: torch.device
    tokenizer: Any = None

    @property
    def tasks(self) -> list[str]:
        return list(self.data)

    @cached_property
    def splits(self) -> dict[str, dict[str, DeviceSplit]]:
        """Every task's train/val/test split on the run's device, moved there once."""
        multiple = self.spec.train.length_bucket or (16 if self.device.type == "cuda" else 1)
        return {t: {s: DeviceSplit(getattr(d, s), self.device, self.pad_id, multiple=multiple)
                    for s in ("train", "val", "test")} for t, d in self.data.items()}


@dataclass
class TrainResult:
    metrics: dict[str, dict[str, float]]  # validation metrics per task at the best epoch
    test: dict[str, dict[str, float]]  # the best epoch's weights on the held-out test split
    main_metric: dict[str, str]
    higher_is_better: dict[str, bool]  # per task, for its main metric
    objective: float
    best_epoch: int
    best_step: int
    epochs: int
    steps: int
    examples: int
    seconds: float
    stopped: str  # "epochs" | "patience" | "max_steps" | "own_batches"
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device: cuda, but torch sees no GPU here (device: auto uses one when there is one)")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare(spec: RunSpec, tokenizer: Any) -> tuple[dict[str, TaskData], dict[str, TaskType], dict[str, str]]:
    tok_id = tokenizer_id(tokenizer)
    data = {
        name: load_task_data(name, t, spec.train, tokenizer, tokenizer_id=tok_id,
                             max_length=spec.encoder.max_length)
        for name, t in spec.tasks.items()
    }
    types = {name: task_type(d.type) for name, d in data.items()}
    main = {name: types[name].main_metric(d) for name, d in data.items()}
    return data, types, main


@dataclass
class TaskInfo:
    """What the driver needs to know about a task before any trial runs."""

    type: str
    main_metric: str
    higher_is_better: bool
    train_examples: int
    val_examples: int
    test_examples: int = 0
    digest: str = ""  # what the runs train and are scored on (TaskData.digest)
    origin: str = ""  # the file or dataset it was read from


def task_info(d: TaskData, main_metric: str, higher_is_better: bool) -> TaskInfo:
    return TaskInfo(d.type, main_metric, higher_is_better, len(d.train), len(d.val), len(d.test), d.digest(),
                    d.origin)


def inspect_tasks(config: dict[str, Any] | RunSpec) -> dict[str, TaskInfo]:
    """Load, check and tokenize every task (filling the cache trials will read), without
    building a model. Raises :class:`InputError` for bad data or encoder names."""
    spec = config if isinstance(config, RunSpec) else RunSpec.from_dict(config)
    _, tokenizer = load_encoder(spec.encoder)
    data, types, main = _prepare(spec, tokenizer)
    return {t: task_info(d, main[t], types[t].higher_is_better[main[t]]) for t, d in data.items()}


def build(config: dict[str, Any] | RunSpec) -> Experiment:
    """Load and check data, load the encoder, assemble model and weighting.

    Raises :class:`trainables.errors.InputError` for bad input, before any training.
    """
    spec = config if isinstance(config, RunSpec) else RunSpec.from_dict(config)
    tr = spec.train
    if tr.num_threads:
        torch.set_num_threads(tr.num_threads)
    base, tokenizer = load_encoder(spec.encoder)
    data, types, main = _prepare(spec, tokenizer)
    seed_everything(tr.seed)
    encoders = sharing_mode(tr.sharing).encoders(base, list(data), tr)
    model = MultiTaskModel(encoders, types, {n: d.num_labels for n, d in data.items()},
                           pooling=spec.encoder.pooling)
    device = pick_device(tr.device)
    weighting = make_weighting(tr.weighting, list(data), tr.task_weights, seed=tr.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = model.to(device)
    if tr.compile:  # in place: parameter names (checkpoints, the logged model) stay as they are
        from torch._dynamo import config as dynamo

        distinct = list({id(e): e for e in model.encoders.values()}.values())
        # each encoder (soft/partial sharing: one a task) compiles its own graphs
        dynamo.recompile_limit = max(dynamo.recompile_limit, 8 * len(distinct))
        for enc in distinct:
            enc.compile(**COMPILE_OPTIONS)
    return Experiment(spec, data, types, main, model, weighting.to(device), pad, device, tokenizer)


def _stream(split: DeviceSplit, batch_size: int, rng: np.random.Generator
            ) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    while True:  # reshuffled each pass; smaller tasks cycle under joint/round-robin schedules
        yield from split.batches(length_grouped_batches(split.lengths, batch_size, rng))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def evaluate(exp: Experiment, *, split: str = "val", batch_size: int | None = None,
             tasks: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Metrics of every task (or of ``tasks``) on ``split`` (``val``, or ``test`` once at the end
    of a run); the predictions stay on the device until each task's metrics read them."""
    size = batch_size or exp.spec.train.eval_batch_size or (256 if exp.device.type == "cuda" else 64)
    exp.model.eval()
    out = {}
    for name, d in exp.data.items():
        if tasks is not None and name not in tasks:
            continue
        part = exp.splits[name][split]
        preds, labels = [], []
        for batch, _ in part.batches(eval_batches(part.lengths, size)):
            with _autocast(exp.device):
                logits = exp.model(name, batch)
            preds.append(exp.types[name].predict(logits))
            labels.append(batch["labels"])
        out[name] = exp.types[name].metrics(preds, labels, d)
    exp.model.train()
    return out


def objective(exp: Experiment, metrics: dict[str, dict[str, float]]) -> float:
    """Mean over tasks of each main metric, signed so that higher is better."""
    vals = []
    for t, m in exp.main_metric.items():
        sign = 1.0 if exp.types[t].higher_is_better[m] else -1.0
        vals.append(sign * metrics[t][m])
    return float(np.mean(vals))


def _optimizer(exp: Experiment) -> torch.optim.Optimizer:
    tr = exp.spec.train
    head_lr = tr.head_lr or tr.lr
    groups: list[dict[str, Any]] = []
    for prefix, lr in (("encoders.", tr.lr), ("heads.", head_lr)):
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in exp.model.named_parameters():
            if name.startswith(prefix):
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        groups += [{"params": decay, "weight_decay": tr.weight_decay, "lr": lr},
                   {"params": no_decay, "weight_decay": 0.0, "lr": lr}]
    extra = list(exp.weighting.parameters())
    if extra:  # learned loss weights move on their own, faster scale
        groups.append({"params": extra, "weight_decay": 0.0, "lr": max(tr.lr, 1e-2)})
    fused = exp.device.type == "cuda"
    return torch.optim.AdamW(groups, lr=tr.lr, fused=fused)


def _affinity_hooks(exp: Experiment, optim: torch.optim.Optimizer) -> list[StepHook]:
    """The affinity meters ``train.affinity_every`` asks for (none for one task)."""
    tr = exp.spec.train
    if not tr.affinity_every or len(exp.tasks) < 2:
        return []
    model = exp.model
    shared = model.shared_parameters()
    if not shared:
        raise InputError("train.affinity_every: affinity needs parameters the tasks share (sharing: hard or partial)")

    def task_loss(t: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with _autocast(exp.device):
            return exp.types[t].loss(model(t, batch), batch["labels"])

    def draw(rng: np.random.Generator) -> tuple[dict[str, Any], dict[str, Any]]:
        batches, holdout = {}, {}
        for t, d in exp.data.items():
            order = rng.permutation(len(d.train.lengths))
            size = min(tr.batch_size, max(1, len(order) // 2))  # two disjoint batches: the step's, and Z[t -> t]'s
            batches[t] = _to(d.train.batch(order[:size], exp.pad_id), exp.device)
            holdout[t] = _to(d.train.batch(order[size:2 * size], exp.pad_id), exp.device)
        return batches, holdout

    hooks: list[StepHook] = [LookaheadHook(AffinityMeter(exp.tasks), tr.affinity_every, model, optim, shared,
                                           task_loss, draw, np.random.default_rng(tr.seed + 7919))]
    if tr.gradient_affinity:
        hooks.append(GradientHook(GradientAffinity(), optim, shared, exp.device))
    return hooks


def _lr_schedule(optim: torch.optim.Optimizer, total_steps: int, warmup: int) -> Any:
    """Linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / max(warmup, 1) if s < warmup
        else max(0.0, (total_steps - s) / max(total_steps - warmup, 1)))


def _cpu_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(exp: Experiment, report: Report, *, state: dict[str, Any] | None = None,
        save_state: Callable[[dict[str, Any]], None] | None = None,
        score: Callable[[dict[str, Any]], float] | None = None) -> TrainResult:
    """Train ``exp``; ``report`` gets one row per epoch.

    ``score`` ranks epochs (higher is better; default: the row's ``objective``, the mean signed
    main metric): the best epoch's weights are kept, patience counts from it, and the last row
    adds their ``test/`` metrics. ``save_state`` (if given) receives, at the end of every epoch
    and before that epoch's ``report``, everything needed to continue later
    (``trainables.state``); ``state`` continues such a run from the epoch after the one it was
    saved at.
    """
    rank = score or (lambda row: float(row["objective"]))
    tr = exp.spec.train
    seed_everything(tr.seed)
    sched = schedule(tr.schedule)
    per_pass = {t: math.ceil(len(d.train) / tr.batch_size) for t, d in exp.data.items()}
    steps_per_epoch = len(sched.plan(per_pass, np.random.default_rng(0), temperature=tr.temperature))
    total_steps = min(tr.epochs * steps_per_epoch, tr.max_steps or tr.epochs * steps_per_epoch)
    optim = _optimizer(exp)
    model = exp.model
    model.train()
    parts = Moving(model, exp.weighting, optim, _lr_schedule(optim, total_steps, int(tr.warmup_ratio * total_steps)),
                   np.random.default_rng(tr.seed), _affinity_hooks(exp, optim))
    penalty_fn = sharing_mode(tr.sharing).penalty
    encoders = {t: model.encoders[t] for t in exp.tasks}

    st = TrainState() if state is None else load_state(state, parts)
    sign = {t: 1.0 if exp.types[t].higher_is_better[m] else -1.0 for t, m in exp.main_metric.items()}
    own = OwnBatches({t: n for t, n in tr.own_batches.items() if t in exp.data}, st, exp.main_metric, sign,
                     lambda tasks, split: evaluate(exp, split=split, tasks=tasks))
    start = time.perf_counter() - (st.history[-1]["seconds"] if st.history else 0.0)
    first_epoch = st.epoch + 1 if st.stopped is None else tr.epochs + 1  # a stopped run has nothing left
    for epoch in range(first_epoch, tr.epochs + 1):
        epoch_start = time.perf_counter()
        # on the device (no host sync a step); read every nan_check_every steps and at the epoch's end
        epoch_losses = EpochLosses(exp.tasks, exp.device)
        weights: dict[str, float | torch.Tensor] = {}
        # fresh passes every epoch, drawn from the run's rng: a resumed run repeats them exactly
        streams = {t: _stream(exp.splits[t]["train"], tr.batch_size, parts.rng) for t in exp.tasks}
        for planned in sched.plan(per_pass, parts.rng, temperature=tr.temperature):
            if st.step >= total_steps or own.all_done():
                break
            step_tasks = own.active(planned)  # a task that had its own batches trains no more
            if not step_tasks:
                continue
            losses = {}
            with _autocast(exp.device), exp.weighting.forward_context():
                for t in step_tasks:
                    batch, n = next(streams[t])
                    losses[t] = exp.types[t].loss(model(t, batch), batch["labels"])
                    st.examples += n
            epoch_losses.add(losses, st.step + 1)
            if (st.step + 1) % tr.nan_check_every == 0:
                epoch_losses.means(st.step + 1)
            weights.update(exp.weighting.backward(losses, model))
            for hook in parts.hooks:
                hook.after_backward(losses, weights)
            penalty = penalty_fn(encoders, tr)
            if penalty is not None:
                penalty.backward()
            if tr.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tr.grad_clip)
            optim.step()
            parts.lr_sched.step()
            optim.zero_grad(set_to_none=True)
            st.step += 1
            for hook in parts.hooks:
                hook.after_step(st.step)
            own.count(step_tasks)
        mean_losses = epoch_losses.means(st.step)
        train_seconds = time.perf_counter() - epoch_start  # the sums were just read: the device is done
        exp.weighting.end_epoch(mean_losses)
        metrics = {**evaluate(exp, tasks=own.running(exp.tasks)), **own.frozen()}
        for t in own.running(exp.tasks):
            own.judge(t, metrics[t])
        mean_signed = objective(exp, metrics)
        row: dict[str, Any] = {"epoch": epoch, "step": st.step, "examples": st.examples, "objective": mean_signed,
                               "seconds": time.perf_counter() - start, "train_seconds": train_seconds}
        for t, ms in metrics.items():
            row.update({f"val/{t}/{m}": v for m, v in ms.items()})
        row.update({f"train/{t}/loss": v for t, v in mean_losses.items()})
        row.update({f"weight/{t}": float(v) for t, v in weights.items()})
        for hook in parts.hooks:
            row.update(hook.row())
        row.update(own.row(final=False))
        st.history.append(row)
        st.epoch = epoch
        value = rank(row)
        st.stale = 0 if st.best is None or value > st.best["score"] + tr.min_delta else st.stale + 1
        if st.best is None or value > st.best["score"]:
            st.best = {"score": value, "objective": mean_signed, "epoch": epoch, "step": st.step, "metrics": metrics}
            st.best_weights = _cpu_copy(model)
        if own.all_done():
            st.stopped = "own_batches"
        elif st.step >= total_steps and epoch < tr.epochs:
            st.stopped = "max_steps"
        elif tr.patience is not None and not own and st.stale >= tr.patience:
            st.stopped = "patience"
        if st.stopped is not None or epoch == tr.epochs:  # the run's end: its best weights, on test once
            assert st.best_weights is not None
            model.load_state_dict(st.best_weights)
            st.test = own.result({}, evaluate(exp, split="test"))[1]
            row.update({f"test/{t}/{m}": v for t, ms in st.test.items() for m, v in ms.items()})
            row.update(own.row(final=True))
        if save_state is not None:
            save_state(save_train_state(st, parts))
        report(row)
        if st.stopped is not None:
            break
    assert st.best is not None
    best = st.best
    if st.test is None:  # a resumed run that had already ended: its weights are the best epoch's
        assert st.best_weights is not None
        model.load_state_dict(st.best_weights)
        st.test = own.result({}, evaluate(exp, split="test"))[1]
    val, test = own.result(best["metrics"], st.test)  # train.own_batches: each named task at its judgement
    return TrainResult(
        metrics=val, test=test, main_metric=dict(exp.main_metric),
        higher_is_better={t: exp.types[t].higher_is_better[m] for t, m in exp.main_metric.items()},
        objective=best["objective"], best_epoch=best["epoch"], best_step=best["step"],
        epochs=len(st.history), steps=st.step, examples=st.examples,
        seconds=time.perf_counter() - start, stopped=st.stopped or "epochs", history=st.history,
    )


def train(config: dict[str, Any], report: Report) -> TrainResult:
    """The trial function: one configuration, trained and validated every epoch."""
    return fit(build(config), report)
