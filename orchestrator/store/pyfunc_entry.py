"""The MLflow model's entry point ("models from code": MLflow runs this file to build the model
object, so nothing is unpickled when a model loads). Logged by ``store/models.py``, with the
``trainables`` package as its code (``code_paths``): it loads where mtlo is not installed."""

import os
from typing import Any

import mlflow.models
from mlflow.pyfunc import PythonModel

from trainables.serving import TRUST_REMOTE_CODE_ENV, PredictError, Predictor


class PyfuncModel(PythonModel):
    """``mlflow.pyfunc.load_model(...)``: ``predict`` takes a DataFrame with a ``text`` column
    (and ``text_pair`` for pair tasks) and returns one dict of every task's prediction per row."""

    def load_context(self, context: Any) -> None:
        # remote code in the encoder's files only where whoever serves it says so
        trust = os.environ.get(TRUST_REMOTE_CODE_ENV, "").lower() in ("1", "true", "yes")
        self.predictor = Predictor(context.artifacts["model"], trust_remote_code=trust)

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        # (no type hints: MLflow reads them as the input schema, which the signature gives)
        frame = model_input
        if "text" not in getattr(frame, "columns", []):
            raise PredictError("text: the input needs a 'text' column")
        pairs = frame["text_pair"].tolist() if "text_pair" in frame.columns else None
        tasks = (params or {}).get("tasks")
        return self.predictor.predict(frame["text"].tolist(), pairs, tasks=tasks or None)


mlflow.models.set_model(PyfuncModel())
