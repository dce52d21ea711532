"""Per-task LoRA adapters on one shared encoder (``train.sharing: lora``; PEFT, Hu et al. 2021).

The encoder is wrapped once by PEFT with one named adapter per task (the adapter is named
after its task). Each task's encoder is an :class:`AdapterView`: the same PEFT model, with that
task's adapter switched on for its forward pass. Every adapter trains in every step (PEFT's
``set_adapter`` would mark the others frozen, so the view sets the active adapter on the LoRA
layers directly); the encoder's own weights are frozen unless ``train.lora_train_encoder``.

A saved model keeps every weight in ``weights.pt`` as any other sharing mode does, and also
writes each task's adapter the PEFT way (``adapters/<task>/adapter_config.json`` and
``adapter_model.safetensors``): ``PeftModel.from_pretrained(encoder, folder)`` on the same
encoder gives that task's encoder outside mtlo.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from torch import nn

from trainables.errors import InputError
from trainables.spec import TrainSpec


def lora_config(train: TrainSpec) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=train.lora_rank, lora_alpha=train.lora_alpha, lora_dropout=train.lora_dropout,
                      target_modules=list(train.lora_targets) if train.lora_targets else None, bias="none")


def _wrap(base: nn.Module, tasks: list[str], train: TrainSpec) -> Any:
    names = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    missing = [t for t in train.lora_targets or () if not any(n == t or n.endswith(f".{t}") for n in names)]
    if missing:
        have = sorted({n.rsplit(".", 1)[-1] for n in names})
        raise InputError(f"train.lora_targets: the encoder has no linear layer named {', '.join(missing)} "
                         f"(its linear layers: {', '.join(have)})")
    from peft import get_peft_model

    config = lora_config(train)
    # PEFT asks transformers' deprecated is_gradient_checkpointing (a FutureWarning each time), and
    # warns of an adapter name inside its prefix "lora_" (a task named "a"): neither is the user's to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            model = get_peft_model(base, config, adapter_name=tasks[0])
        except ValueError as exc:
            raise InputError(f"train.lora_targets: PEFT cannot put LoRA adapters on this encoder: "
                             f"{str(exc).splitlines()[0]}") from None
        for t in tasks[1:]:
            model.add_adapter(t, config)
    return model


class AdapterView(nn.Module):
    """One task's encoder: the shared PEFT model with that task's adapter active."""

    peft: Any  # a peft.PeftModel

    def __init__(self, peft: Any, adapter: str, layers: list[Any]) -> None:
        super().__init__()
        self.peft = peft  # the same module under every task: its parameters count once
        self.adapter = adapter
        self._layers = tuple(layers)  # the LoRA layers (a tuple: not registered a second time)

    @property
    def config(self) -> Any:
        return self.peft.get_base_model().config

    def forward(self, **inputs: Any) -> Any:
        for layer in self._layers:
            layer._active_adapter = self.adapter
        return self.peft(**inputs)

    def task_parameters(self) -> list[nn.Parameter]:
        """What this task's forward pass uses: the encoder's weights and its own adapter."""
        return [p for name, p in self.peft.named_parameters() if _adapter_of(name) in (None, self.adapter)]

    def save_adapter(self, folder: Path) -> None:
        """This task's adapter, the PEFT way, in ``folder/<task>``."""
        self.peft.save_pretrained(str(folder), selected_adapters=[self.adapter])


def _adapter_of(name: str) -> str | None:
    """The adapter a parameter belongs to (``...lora_A.<adapter>.weight``), None for the encoder's own."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"):
            return parts[i + 1]
    return None


def adapter_encoders(base: nn.Module, tasks: list[str], train: TrainSpec) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    model = _wrap(base, tasks, train)
    for name, p in model.named_parameters():  # every adapter trains; the encoder as the key says
        p.requires_grad_(_adapter_of(name) is not None or train.lora_train_encoder)
    layers: list[Any] = [m for m in model.modules() if isinstance(m, LoraLayer)]
    return {t: AdapterView(model, t, layers) for t in tasks}


def check_targets(encoder_config: Any, train: TrainSpec, *, trust_remote_code: bool = False) -> None:
    """A one-line :class:`InputError` where PEFT could not adapt the encoder that ``encoder_config``
    describes (no default target modules for its type, or no module named as
    ``train.lora_targets`` says), found on an empty (meta) copy: no weights loaded."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModel.from_config(encoder_config, trust_remote_code=trust_remote_code)
    _wrap(model, ["check"], train)
