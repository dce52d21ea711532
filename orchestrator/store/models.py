"""A trained model into MLflow: logged on its run as an MLflow ``pyfunc`` model (the code it
needs shipped with it, so it loads where mtlo is not installed) and registered in the Model
Registry with tags that name where it came from and its validation and test scores."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import trainables

ARTIFACT = "model"  # the model's name on its run: runs:/RUN_ID/model
CODE = Path(trainables.__file__).parent  # shipped with the model: it loads where mtlo is not installed
ENTRY = Path(__file__).with_name("pyfunc_entry.py")  # the MLflow wrapper MLflow runs to build the model


def _requirements() -> list[str]:
    import mlflow
    import numpy
    import pandas
    import peft
    import torch
    import transformers

    return [f"torch=={torch.__version__.split('+')[0]}", f"transformers=={transformers.__version__}",
            f"peft=={peft.__version__}",  # a lora model's adapters
            f"mlflow=={mlflow.__version__}", f"numpy=={numpy.__version__}", f"pandas=={pandas.__version__}"]


EXAMPLE_TEXTS = ["A short example text.", "Another example, to show the input's shape."]


def _example(exp: Any) -> Any:
    """The input example logged with the model: made-up texts (never the task's data: a model
    in a shared registry would show two of its held-out test texts to everyone who reads it),
    with a ``text_pair`` column where a task reads pairs."""
    import pandas as pd

    frame = pd.DataFrame({"text": EXAMPLE_TEXTS})
    if any(exp.spec.tasks[t].text_pair is not None for t in exp.tasks):
        frame["text_pair"] = ["A second text.", "Its pair."]
    return frame


def _signature(exp: Any) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    pairs = any(exp.spec.tasks[t].text_pair is not None for t in exp.tasks)
    cols: list[ColSpec | TensorSpec] = [ColSpec("string", "text")]
    if pairs:
        cols.append(ColSpec("string", "text_pair"))
    return ModelSignature(inputs=Schema(cols))


def log_model(tracking_uri: str, run_id: str, exp: Any, *, register: str | None,
              tags: dict[str, str], info: dict[str, Any]) -> dict[str, Any]:
    """Log ``exp``'s model (its weights as they are now) on the run ``run_id`` and register it
    under ``register`` (None: only logged). Returns the model's URIs and version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from trainables.serving import save_model

    mlflow.set_tracking_uri(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="mtlo-model-") as tmp:
        folder = save_model(exp, Path(tmp) / "mtlo_model", info=info)
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name=ARTIFACT, python_model=str(ENTRY), artifacts={"model": str(folder)},
                code_paths=[str(CODE)], signature=_signature(exp),
                input_example=_example(exp), pip_requirements=_requirements(), registered_model_name=register,
                tags=tags)
    out = {"run_uri": f"runs:/{run_id}/{ARTIFACT}", "model_uri": logged.model_uri, "name": register,
           "version": None, "registered_uri": None}
    if register is not None and logged.registered_model_version is not None:
        version = str(logged.registered_model_version)
        client = MlflowClient(tracking_uri)
        for k, v in tags.items():
            client.set_model_version_tag(register, version, k, v)
        out.update(version=version, registered_uri=f"models:/{register}/{version}")
    return out


def score_tags(val: dict[str, dict[str, float]], test: dict[str, dict[str, float]],
               main_metric: dict[str, str]) -> dict[str, str]:
    """``val/<task>/<metric>`` and ``test/<task>/<metric>`` of each task's main metric."""
    tags = {}
    for t, m in main_metric.items():
        for split, scores in (("val", val), ("test", test)):
            if m in scores.get(t, {}):
                tags[f"{split}/{t}/{m}"] = f"{scores[t][m]:.6g}"
    return tags
