"""The multi-task model: task encoders (shared as the sharing mode says) and one head per task."""

from __future__ import annotations

import torch
from torch import nn

from trainables.encoder import hidden_size
from trainables.sharing import layer_list, task_parameters
from trainables.tasks import TaskType


class MultiTaskModel(nn.Module):
    def __init__(self, encoders: dict[str, nn.Module], types: dict[str, TaskType],
                 num_labels: dict[str, int], *, pooling: str = "mean") -> None:
        super().__init__()
        self.tasks = list(encoders)
        # the same module may sit under several keys: parameters() counts it once
        self.encoders = nn.ModuleDict(encoders)
        self.types = types
        self.heads = nn.ModuleDict({
            t: types[t].head(hidden_size(encoders[t]), num_labels[t]) for t in self.tasks
        })
        self.pooling = pooling
        # which parameters the tasks share, found once: the aggregators and GradNorm read them at
        # every step, and neither the parameters nor which of them train change after the build
        self._shared: list[nn.Parameter] | None = None
        self._last_shared: dict[str, list[nn.Parameter]] = {}

    def forward(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.heads[task](self.encode(task, batch))

    def encode(self, task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """What ``task``'s head reads: its encoder's output, pooled for sentence-level tasks
        ((B, H)) or per token ((B, L, H)). Tasks sharing an encoder and a level read the same."""
        encoder = self.encoders[task]
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if getattr(getattr(encoder, "config", None), "_attn_implementation", None) == "sdpa":
            # the padding mask as SDPA reads it, (B, 1, 1, L), True where a token is attended:
            # from the 2-D mask, transformers first asks whether any token is padding at all (to
            # drop the mask), a host-device sync in every forward pass
            inputs["attention_mask"] = batch["attention_mask"][:, None, None, :].bool()
        hidden = encoder(**inputs).last_hidden_state  # (B, L, H)
        if not self.types[task].token_level:
            if self.pooling == "cls":
                hidden = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                hidden = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)
        return hidden

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trained parameters that more than one task's encoder uses (what the gradient
        aggregators operate on)."""
        if self._shared is None:
            self._shared = self._find_shared()
        return list(self._shared)

    def _find_shared(self) -> list[nn.Parameter]:
        owners: dict[int, int] = {}
        by_id: dict[int, nn.Parameter] = {}
        for t in self.tasks:
            for p in {id(p): p for p in task_parameters(self.encoders[t]) if p.requires_grad}.values():
                owners[id(p)] = owners.get(id(p), 0) + 1
                by_id[id(p)] = p
        return [by_id[i] for i, n in owners.items() if n > 1]

    def last_shared_parameters(self, task: str) -> list[nn.Parameter]:
        """The top layer of ``task``'s encoder that other tasks share (GradNorm's W); the top
        layer of its own encoder when nothing is shared (trained parameters only: under lora
        with a frozen encoder, the task's own adapter in that layer)."""
        if task not in self._last_shared:
            self._last_shared[task] = self._find_last_shared(task)
        return list(self._last_shared[task])

    def _find_last_shared(self, task: str) -> list[nn.Parameter]:
        shared = {id(p) for p in self.shared_parameters()}
        own = {id(p) for p in task_parameters(self.encoders[task]) if p.requires_grad}
        layers = layer_list(self.encoders[task])
        from_top = [[p for p in layer.parameters() if id(p) in own] for layer in reversed(layers)]
        from_top = [params for params in from_top if params]  # lora: a layer without adapters has nothing to train
        for params in from_top:
            if shared and all(id(p) in shared for p in params):
                return params
        return from_top[0] if from_top else [p for p in task_parameters(self.encoders[task]) if p.requires_grad]

    def parameter_counts(self) -> dict[str, int]:
        """Trained and all parameters, each counted once (``params/trainable``, ``params/total``)."""
        params = list(self.parameters())  # shared modules once
        return {"params/trainable": sum(p.numel() for p in params if p.requires_grad),
                "params/total": sum(p.numel() for p in params)}
