"""Trial side of mtl-orchestrator: data, encoder + heads, sharing, weighting, the loop.

Nothing here imports Ray or MLflow: ``train(config, report)`` runs anywhere. The names below
are imported on first use, so that the driver's checks (an error class, a spec) do not pay
for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trainables.errors import InputError

if TYPE_CHECKING:
    from trainables.loop import Experiment, TrainResult, build, evaluate, fit, train
    from trainables.losses import DivergedError
    from trainables.spec import EncoderSpec, RunSpec, TaskSpec, TrainSpec
    from trainables.taskinfo import TaskInfo, inspect_tasks

_WHERE = {"Experiment": "loop", "TrainResult": "loop", "build": "loop", "evaluate": "loop", "fit": "loop",
          "train": "loop", "DivergedError": "losses", "EncoderSpec": "spec", "RunSpec": "spec",
          "TaskSpec": "spec", "TrainSpec": "spec", "TaskInfo": "taskinfo", "inspect_tasks": "taskinfo"}

# spelt out (not built from _WHERE): ruff and mypy read the re-exported names from a literal list
__all__ = ["DivergedError", "EncoderSpec", "Experiment", "InputError", "RunSpec", "TaskSpec",
           "TaskInfo", "TrainResult", "TrainSpec", "build", "evaluate", "fit", "inspect_tasks", "train"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'trainables' has no attribute {name!r}")
    value = globals()[name] = getattr(importlib.import_module(f"trainables.{_WHERE[name]}"), name)
    return value  # kept: a later use is a plain attribute
