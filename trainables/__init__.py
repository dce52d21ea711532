"""Trial side of mtl-orchestrator: data, encoder + heads, sharing, weighting, the loop.

Nothing here imports Ray or MLflow: ``train(config, report)`` runs anywhere.
"""

from trainables.errors import InputError
from trainables.loop import Experiment, TaskInfo, TrainResult, build, evaluate, fit, inspect_tasks, train
from trainables.losses import DivergedError
from trainables.spec import EncoderSpec, RunSpec, TaskSpec, TrainSpec

__all__ = ["DivergedError", "EncoderSpec", "Experiment", "InputError", "RunSpec", "TaskSpec",
           "TaskInfo", "TrainResult", "TrainSpec", "build", "evaluate", "fit", "inspect_tasks", "train"]
