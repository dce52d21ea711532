"""Typed specs of one run: encoder, tasks, training options.

These plain dataclasses are the single source of every option and its default. The
driver validates user YAML against them with pydantic (``__pydantic_config__`` forbids
unknown keys); the trial side builds them from a plain dict and trusts them.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval
from pydantic import AfterValidator

_STRICT = {"extra": "forbid"}
# constraints as annotated-types metadata: pydantic enforces them at the edge
PosInt = Annotated[int, Ge(1)]
NonNeg = Annotated[float, Ge(0)]

TaskTypeName = Literal["classification", "regression", "tagging"]


def _registered(module: str, registry: str) -> AfterValidator:
    """A name checked against a plug-in registry (``trainables/registry.py``) when the config
    is validated: a plug-in registered after this module was imported is valid too."""
    def check(value: Any) -> Any:
        return getattr(importlib.import_module(module), registry).check(value)
    return AfterValidator(check)


SharingName = Annotated[str, _registered("trainables.sharing", "SHARING")]
WeightingName = Annotated[str, _registered("trainables.weighting", "WEIGHTING")]
ScheduleName = Annotated[str, _registered("trainables.schedules", "SCHEDULES")]


@dataclass(frozen=True)
class EncoderSpec:
    """Which pretrained encoder every task shares (or copies, under soft/partial sharing)."""

    __pydantic_config__ = _STRICT

    model: str = "builtin:minilm-l6"
    max_length: Annotated[int, Ge(2)] = 64
    num_layers: PosInt | None = None
    pooling: Literal["mean", "cls"] = "mean"
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TaskSpec:
    """Where one task's data comes from and how to read it.

    ``source`` is ``builtin:NAME``, ``hf:PATH`` (``datasets.load_dataset``), or a local
    ``csv:``, ``json:`` (JSON or JSON lines), ``parquet:`` or ``conll:`` file.
    """

    __pydantic_config__ = _STRICT

    source: str
    type: TaskTypeName | None = None
    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    tokens: str = "tokens"  # tagging data in table form: a list-of-tokens column
    tags: str = "tags"  # ... and a list-of-tags column (strings or class ids)
    config: str | None = None  # hf: dataset configuration name
    data_files: str | list[str] | dict[str, str | list[str]] | None = None  # hf: data_files
    train_split: str = "train"
    validation_split: str | None = None  # default: "validation" when the source has it
    test_split: str | None = None  # hf: the held-out test split; default: "test" when the source has it
    test: str | None = None  # a local source's held-out test file (same format as the source)
    # without a test split or file: this fraction of the source's examples is held out for test
    # (a fixed permutation: never the training seed, never the task group)
    test_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.1
    metric: str | None = None  # main metric; default depends on the task type


@dataclass(frozen=True)
class TrainSpec:
    """Options of one training run; a search space overrides any of them."""

    __pydantic_config__ = _STRICT

    epochs: PosInt = 3
    batch_size: PosInt = 32
    lr: Annotated[float, Gt(0)] = 5.0e-5
    head_lr: Annotated[float, Gt(0)] | None = None  # task heads' learning rate; default: lr
    weight_decay: NonNeg = 0.01
    warmup_ratio: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    grad_clip: Annotated[float, Gt(0)] | None = 1.0
    sharing: SharingName = "hard"
    soft_l2: NonNeg = 1.0e-3
    branch_layer: Annotated[int, Ge(0)] = 3
    # lora: one LoRA adapter per task (PEFT) on one shared encoder
    lora_rank: PosInt = 8
    lora_alpha: PosInt = 16  # the adapter's scale is lora_alpha / lora_rank
    lora_dropout: Annotated[float, Interval(ge=0, lt=1)] = 0.1
    lora_targets: list[str] | None = None  # module names to adapt; default: PEFT's for the encoder's type
    lora_train_encoder: bool = False  # also train the shared encoder (the adapters always train)
    weighting: WeightingName = "static"
    # per method, its options (docs/config.md), e.g. {cagrad: {c: 0.4}, famo: {lr: 0.05}}
    weighting_options: dict[str, dict[str, float]] = field(default_factory=dict)
    task_weights: dict[str, NonNeg] = field(default_factory=dict)
    schedule: ScheduleName = "joint"
    temperature: Annotated[float, Gt(0)] = 2.0  # for schedule=temperature: p_t ~ n_t^(1/T)
    patience: PosInt | None = None
    # own batches per task: a task named here trains on exactly that many batches of its own data,
    # then leaves the schedule, and is judged at its best evaluation within them (its own
    # validation score; evaluated when it leaves, too). Transfer studies set it so that a task in a
    # group sees what it saw alone at the same seed (orchestrator/transfer/study.py); with it, the
    # run ends when every named task has had its batches, and patience is not applied
    own_batches: dict[str, PosInt] = field(default_factory=dict)
    min_delta: NonNeg = 1.0e-4  # an objective gain below this is "not improving" for patience
    max_steps: PosInt | None = None
    affinity_every: PosInt | None = None  # measure lookahead inter-task affinity (TAG) every k steps
    max_train_examples: PosInt | None = 2000
    max_eval_examples: PosInt | None = None
    val_fraction: Annotated[float, Interval(gt=0, lt=1)] = 0.2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: PosInt | None = None
    # read the training losses back (and stop a NaN/infinite one) every k steps and at each
    # epoch's end, not every step: a host-device sync a step is what keeps a GPU waiting
    nan_check_every: PosInt = 16
    # batch widths rounded up to a multiple of this many tokens (few shapes: less warm-up, and
    # what compile needs); default: 16 on a GPU, 1 (the longest example) on CPU
    length_bucket: PosInt | None = None
    eval_batch_size: PosInt | None = None  # default: 256 on a GPU, 64 on CPU
    # torch.compile the encoder(s): slower start, faster steps on a GPU; true: torch's default backend
    # (inductor), or a backend's name ("aot_eager": a light trace, no C++ build)
    compile: bool | str = False


@dataclass(frozen=True)
class RunSpec:
    """Everything one training run needs: the trial function's ``config`` dict, typed."""

    encoder: EncoderSpec
    tasks: dict[str, TaskSpec]
    train: TrainSpec

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> RunSpec:
        return cls(
            encoder=EncoderSpec(**(config.get("encoder") or {})),
            tasks={name: TaskSpec(**spec) for name, spec in config["tasks"].items()},
            train=TrainSpec(**(config.get("train") or {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
