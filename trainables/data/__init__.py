"""Task data: sources, built-in tasks, checks, deterministic splits, tokenization cache."""

from trainables.data.builtin import BUILTIN_TASKS, BuiltinTask, package_dir
from trainables.data.encoded import Encoded, eval_batches, length_grouped_batches
from trainables.data.prepare import Splits, TaskData, load_task_data, raw_splits, read_source

__all__ = ["BUILTIN_TASKS", "BuiltinTask", "Encoded", "TaskData", "eval_batches",
           "length_grouped_batches", "load_task_data", "package_dir", "raw_splits", "read_source", "Splits"]
