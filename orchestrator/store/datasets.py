"""Each task's data as an MLflow dataset input of a run (what the MLflow UI's Dataset column
and a registered model's lineage show): its name, source, a digest of exactly what was trained
and scored on (``TaskData.digest``: token ids and labels of every split, after splitting and
capping) and the split sizes (the dataset's profile)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from trainables import TaskInfo

CONTEXT = "training"


def task_datasets(infos: Mapping[str, TaskInfo], sources: Mapping[str, str]) -> dict[str, Any]:
    """task -> its ``mlflow.entities.DatasetInput`` (``sources``: the config's ``source`` of each task)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    out = {}
    for t, info in infos.items():
        source = sources.get(t, "")
        hub = source.startswith("hf:")
        where = {"path": source[3:]} if hub else {"uri": info.origin or source}
        profile = {"train": info.train_examples, "validation": info.val_examples, "test": info.test_examples,
                   "type": info.type, "main_metric": info.main_metric}
        ds = Dataset(name=t, digest=info.digest, source_type="hugging_face" if hub else "local",
                     source=json.dumps({**where, "mtlo_source": source}), profile=json.dumps(profile))
        out[t] = DatasetInput(ds, tags=[InputTag(MLFLOW_DATASET_CONTEXT, CONTEXT)])
    return out


def log_datasets(client: Any, run_id: str, datasets: Mapping[str, Any], tasks: Iterable[str]) -> None:
    """Log the dataset inputs of ``tasks`` (those ``datasets`` has) on the run ``run_id``."""
    chosen = [datasets[t] for t in sorted(tasks) if t in datasets]
    if chosen:
        client.log_inputs(run_id, datasets=chosen)
