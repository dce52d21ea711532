"""The MLflow model's entry point ("models from code": MLflow runs this file to build the model
object, so nothing is unpickled when a model loads). Logged by orchestrator/store/models.py."""

import mlflow.models

from trainables.serving import PyfuncModel

mlflow.models.set_model(PyfuncModel())
