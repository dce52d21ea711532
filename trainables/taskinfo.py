"""What a run's tasks are before any model exists: each one read, checked, split and
tokenized (:func:`prepare`, also what ``loop.build`` starts from), and what the driver needs to
know of it before any trial runs (:class:`TaskInfo`: type, main metric, sizes, a digest of the
data, where it was read from)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainables.data import TaskData, load_task_data
from trainables.encoder import encoder_config, load_tokenizer, tokenizer_id
from trainables.sharing import sharing_mode
from trainables.spec import RunSpec
from trainables.tasks import TaskType, task_type

__all__ = ["TaskInfo", "inspect_tasks", "prepare", "task_info"]


def prepare(spec: RunSpec, tokenizer: Any) -> tuple[dict[str, TaskData], dict[str, TaskType], dict[str, str]]:
    """Every task of ``spec`` read, checked, split and tokenized (or from the cache), its type
    and its main metric."""
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
    data, types, main = prepare(spec, load_tokenizer(spec.encoder))
    # the sharing mode can use this encoder (lora: PEFT can adapt the modules it names)
    sharing_mode(spec.train.sharing).check(encoder_config(spec.encoder), spec.train,
                                           trust_remote_code=spec.encoder.trust_remote_code)
    return {t: task_info(d, main[t], types[t].higher_is_better[main[t]]) for t, d in data.items()}
