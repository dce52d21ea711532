"""Trial side of mtl-orchestrator: data, encoder + heads, sharing, weighting, the loop.

Nothing here imports Ray or MLflow: ``train(config, report)`` runs anywhere.
"""

from trainables.errors import InputError
from trainables.loop import Experiment, TrainResult, build, evaluate, fit, train
from trainables.losses import DivergedError
from trainables.spec import EncoderSpec, RunSpec, TaskSpec, TrainSpec
from trainables.taskinfo import TaskInfo, inspect_tasks

__all__ = ["DivergedError", "EncoderSpec", "Experiment", "InputError", "RunSpec", "TaskSpec",
           "TaskInfo", "TrainResult", "TrainSpec", "build", "evaluate", "fit", "inspect_tasks", "train"]
