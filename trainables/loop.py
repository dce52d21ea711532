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

from trainables.affinity import AffinityMeter, LookaheadHook
from trainables.budget import OwnBatches
from trainables.data import TaskData, eval_batches, length_grouped_batches
from trainables.data.encoded import DeviceSplit
from trainables.encoder import load_encoder
from trainables.errors import InputError
from trainables.losses import EpochLosses
from trainables.memory import PeakMemory
from trainables.model import MultiTaskModel
from trainables.optim import lr_schedule, optimizer
from trainables.schedules import schedule
from trainables.sharing import sharing_mode
from trainables.spec import RunSpec
from trainables.state import Moving, StepHook, TrainState, cpu_weights
from trainables.state import load as load_state
from trainables.state import save as save_train_state
from trainables.taskinfo import prepare
from trainables.tasks import TaskType
from trainables.weighting import Weighting, make_weighting

Report = Callable[[dict[str, Any]], None]
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


def build(config: dict[str, Any] | RunSpec) -> Experiment:
    """Load and check data, load the encoder, assemble model and weighting.

    Raises :class:`trainables.errors.InputError` for bad input, before any training.
    """
    spec = config if isinstance(config, RunSpec) else RunSpec.from_dict(config)
    tr = spec.train
    if tr.num_threads:
        torch.set_num_threads(tr.num_threads)
    base, tokenizer = load_encoder(spec.encoder)
    data, types, main = prepare(spec, tokenizer)
    seed_everything(tr.seed)
    encoders = sharing_mode(tr.sharing).encoders(base, list(data), tr)
    model = MultiTaskModel(encoders, types, {n: d.num_labels for n, d in data.items()},
                           pooling=spec.encoder.pooling)
    device = pick_device(tr.device)
    weighting = make_weighting(tr.weighting, list(data), tr.task_weights, seed=tr.seed, options=tr.weighting_options)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model = model.to(device)
    if tr.compile:  # in place: parameter names (checkpoints, the logged model) stay as they are
        from torch._dynamo import config as dynamo

        distinct = list({id(e): e for e in model.encoders.values()}.values())
        # each encoder (soft/partial sharing: one a task) compiles its own graphs
        dynamo.recompile_limit = max(dynamo.recompile_limit, 8 * len(distinct))
        for enc in distinct:
            enc.compile(**({"backend": tr.compile} if isinstance(tr.compile, str) else {}))
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
    return hooks


def _train_step(exp: Experiment, parts: Moving, st: TrainState, step_tasks: list[str],
                streams: dict[str, Iterator[tuple[dict[str, torch.Tensor], int]]], epoch_losses: EpochLosses,
                weights: dict[str, float | torch.Tensor], penalty_fn: Callable[..., Any],
                encoders: dict[str, torch.nn.Module]) -> None:
    """One optimizer step on a batch of each of ``step_tasks``: the weighted losses (summed on
    the device, checked every ``nan_check_every`` steps), the sharing penalty, clipping."""
    tr, model = exp.spec.train, exp.model
    losses, batches = {}, {}
    with _autocast(exp.device), exp.weighting.forward_context():
        for t in step_tasks:
            batches[t], n = next(streams[t])
            losses[t] = exp.types[t].loss(model(t, batches[t]), batches[t]["labels"])
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
    parts.optim.step()
    if exp.weighting.wants_losses_after_step:  # the same batches' losses under the new parameters
        with torch.no_grad(), _autocast(exp.device):
            exp.weighting.after_step({t: exp.types[t].loss(model(t, b), b["labels"]) for t, b in batches.items()})
    parts.lr_sched.step()
    parts.optim.zero_grad(set_to_none=True)
    st.step += 1
    for hook in parts.hooks:
        hook.after_step(st.step)


def _epoch_metrics(metrics: dict[str, dict[str, float]], mean_losses: dict[str, float],
                   weights: dict[str, float | torch.Tensor], parts: Moving) -> dict[str, float]:
    """An epoch's row beyond its counters: validation metrics, mean training losses, the loss
    weights used and what the step hooks measured."""
    row = {f"val/{t}/{m}": v for t, ms in metrics.items() for m, v in ms.items()}
    row.update({f"train/{t}/loss": v for t, v in mean_losses.items()})
    row.update({f"weight/{t}": float(v) for t, v in weights.items()})
    for hook in parts.hooks:
        row.update(hook.row())
    return row


def _total_steps(steps_per_epoch: int, tr: Any) -> int:
    """The steps the learning-rate schedule spans: every epoch's, or the step cap if lower."""
    return min(tr.epochs * steps_per_epoch, tr.max_steps or tr.epochs * steps_per_epoch)


def _keep_best(st: TrainState, value: float, row: dict[str, Any], metrics: dict[str, dict[str, float]],
               model: torch.nn.Module, min_delta: float) -> None:
    """Patience's count and, where ``value`` (the epoch's rank) is the best so far, the epoch
    and a CPU copy of its weights."""
    st.stale = 0 if st.best is None or value > st.best["score"] + min_delta else st.stale + 1
    if st.best is None or value > st.best["score"]:
        st.best = {"score": value, "objective": row["objective"], "epoch": row["epoch"], "step": row["step"],
                   "metrics": metrics}
        st.best_weights = cpu_weights(model)


def _best_on_test(exp: Experiment, st: TrainState, own: OwnBatches) -> dict[str, dict[str, float]]:
    """The run's end: the model takes its best epoch's weights, scored once on the test split
    (a task with own batches: its test score at its judgement)."""
    assert st.best_weights is not None
    exp.model.load_state_dict(st.best_weights)
    st.test = own.result({}, evaluate(exp, split="test"))[1]
    return st.test


def _stop_reason(st: TrainState, own: OwnBatches, patience: int | None, total_steps: int, *,
                 last_epoch: bool) -> str | None:
    """Why the run ends after this epoch before its last one: every named task had its own
    batches, the step cap, or patience (not applied under own batches); None: it goes on."""
    if own.all_done():
        return "own_batches"
    if st.step >= total_steps and not last_epoch:
        return "max_steps"
    if patience is not None and not own and st.stale >= patience:
        return "patience"
    return None


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
    total_steps = _total_steps(len(sched.plan(per_pass, np.random.default_rng(0), temperature=tr.temperature)), tr)
    optim, model = optimizer(exp), exp.model
    model.train()
    parts = Moving(model, exp.weighting, optim, lr_schedule(optim, total_steps, int(tr.warmup_ratio * total_steps)),
                   np.random.default_rng(tr.seed), _affinity_hooks(exp, optim))
    penalty_fn = sharing_mode(tr.sharing).penalty
    encoders = {t: model.encoders[t] for t in exp.tasks}
    st = TrainState() if state is None else load_state(state, parts)
    sign = {t: 1.0 if exp.types[t].higher_is_better[m] else -1.0 for t, m in exp.main_metric.items()}
    own = OwnBatches({t: n for t, n in tr.own_batches.items() if t in exp.data}, st, exp.main_metric, sign,
                     lambda tasks, split: evaluate(exp, split=split, tasks=tasks))
    memory, counts = PeakMemory(exp.device), model.parameter_counts()
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
            _train_step(exp, parts, st, step_tasks, streams, epoch_losses, weights, penalty_fn, encoders)
            own.count(step_tasks)
        mean_losses = epoch_losses.means(st.step)
        train_seconds = time.perf_counter() - epoch_start  # the sums were just read: the device is done
        exp.weighting.end_epoch(mean_losses)
        metrics = own.at_epoch_end(exp.tasks)
        row: dict[str, Any] = {"epoch": epoch, "step": st.step, "examples": st.examples,
                               "objective": objective(exp, metrics),
                               "seconds": time.perf_counter() - start, "train_seconds": train_seconds,
                               **_epoch_metrics(metrics, mean_losses, weights, parts), **own.row(final=False),
                               **counts, **memory.row()}
        st.history.append(row)
        st.epoch = epoch
        _keep_best(st, rank(row), row, metrics, model, tr.min_delta)
        st.stopped = _stop_reason(st, own, tr.patience, total_steps, last_epoch=epoch == tr.epochs)
        if st.stopped is not None or epoch == tr.epochs:  # the run's end: its best weights, on test once
            row.update({f"test/{t}/{m}": v for t, ms in _best_on_test(exp, st, own).items() for m, v in ms.items()})
            row.update(own.row(final=True))
        if save_state is not None:
            save_state(save_train_state(st, parts))
        report(row)
        if st.stopped is not None:
            break
    assert st.best is not None
    best = st.best
    if st.test is None:  # a resumed run that had already ended: its weights are the best epoch's
        _best_on_test(exp, st, own)
    assert st.test is not None
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
