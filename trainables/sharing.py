"""Sharing modes: how task encoders relate to one another.

- ``hard``: one encoder for every task (Caruana 1997).
- ``soft``: one encoder per task, pulled together by an L2 penalty
  ``soft_l2 * sum_{i<j} ||theta_i - theta_j||^2`` (Duong et al. 2015).
- ``partial``: embeddings and the bottom ``branch_layer`` layers shared, task copies above.
- ``single``: independent encoders, no coupling: each task trained alone (the baseline).
- ``lora``: one encoder (frozen unless ``lora_train_encoder``) and one LoRA adapter per task
  (PEFT; ``trainables/adapters.py``).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from trainables.errors import InputError
from trainables.registry import Registry
from trainables.spec import TrainSpec


def layer_list(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer layers (``encoder.layer`` for BERT-like models)."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    candidates = [m for _, m in encoder.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not candidates:
        raise InputError("train.sharing: cannot find the encoder's layer stack for partial sharing")
    return candidates[0]


class Sharing(ABC):
    name: str
    reads: tuple[str, ...] = ()  # train keys only this mode reads (a search treats them as inert elsewhere)
    one_task_is_hard = True  # with one task, nothing to share: it trains as hard sharing would

    @abstractmethod
    def encoders(self, base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
        """One encoder module per task; shared layers are the same module objects."""

    def penalty(self, encoders: dict[str, nn.Module], train: TrainSpec) -> torch.Tensor | None:
        return None

    def check(self, encoder_config: Any, train: TrainSpec, *, trust_remote_code: bool = False) -> None:
        """Before a search: a one-line :class:`InputError` where this mode cannot use the
        encoder ``encoder_config`` describes (its weights not loaded)."""
        return None


class Hard(Sharing):
    name = "hard"
    one_task_is_hard = False  # it is hard sharing

    def encoders(self, base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
        return {t: base for t in tasks}


class Single(Sharing):
    name = "single"

    def encoders(self, base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
        return {t: base if i == 0 else copy.deepcopy(base) for i, t in enumerate(tasks)}


class Soft(Single):
    name = "soft"
    reads = ("soft_l2",)

    def penalty(self, encoders: dict[str, nn.Module], train: TrainSpec) -> torch.Tensor | None:
        mods = list(encoders.values())
        if len(mods) < 2 or train.soft_l2 == 0:
            return None
        n = len(mods)
        total = torch.zeros((), device=next(mods[0].parameters()).device)
        # sum_{i<j} ||a_i - a_j||^2 == n * sum_i ||a_i - mean||^2 (stable when the a_i are close)
        for params in zip(*(m.parameters() for m in mods)):
            stacked = torch.stack(params)
            total = total + n * (stacked - stacked.mean(0)).pow(2).sum()
        return train.soft_l2 * total


class Partial(Sharing):
    name = "partial"
    reads = ("branch_layer",)

    def encoders(self, base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
        layers = layer_list(base)
        k = train.branch_layer
        if not 0 <= k <= len(layers):
            raise InputError(f"train.branch_layer: {k} is outside 0..{len(layers)} "
                             f"(the encoder has {len(layers)} layers)")
        out = {}
        for i, t in enumerate(tasks):
            if i == 0:
                out[t] = base
                continue
            enc = copy.deepcopy(base)
            own = layer_list(enc)
            for j in range(k):  # tie the bottom k layers (and the embeddings) to the base
                own[j] = layers[j]
            if k > 0 and hasattr(base, "embeddings"):
                enc.embeddings = base.embeddings
            out[t] = enc
        return out


class Lora(Sharing):
    name = "lora"
    reads = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets", "lora_train_encoder")
    one_task_is_hard = False  # one task: the encoder and that task's adapter, as with several

    def encoders(self, base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
        from trainables.adapters import adapter_encoders

        return adapter_encoders(base, tasks, train)

    def check(self, encoder_config: Any, train: TrainSpec, *, trust_remote_code: bool = False) -> None:
        from trainables.adapters import check_targets

        check_targets(encoder_config, train, trust_remote_code=trust_remote_code)


def task_parameters(encoder: nn.Module) -> list[nn.Parameter]:
    """The parameters a task's forward pass through ``encoder`` uses (a LoRA view: the encoder's
    and its own adapter's, not the other tasks' adapters)."""
    own = getattr(encoder, "task_parameters", None)
    return list(own()) if callable(own) else list(encoder.parameters())


SHARING: Registry[Sharing] = Registry("train.sharing")
for _m in (Hard(), Soft(), Partial(), Single(), Lora()):
    SHARING.register(_m)


def sharing_mode(name: str) -> Sharing:
    return SHARING[name]
