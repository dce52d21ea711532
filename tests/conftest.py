import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (none is reachable here)


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    # a fresh tokenization cache per test session: tests see the real build path first
    os.environ["MTLO_CACHE_DIR"] = str(tmp_path_factory.mktemp("mtlo-cache"))


def tiny_config(**train: object) -> dict:
    """Three built-in tasks of the three types, small slices, the tiny random encoder."""
    return {
        "encoder": {"model": "builtin:tiny-random", "max_length": 32},
        "tasks": {
            "rt": {"source": "builtin:rt_polarity"},
            "vader": {"source": "builtin:vader_movies"},
            "ner": {"source": "builtin:wnut_ner"},
        },
        "train": {"epochs": 2, "batch_size": 16, "max_train_examples": 64, "max_eval_examples": 48,
                  "lr": 1e-3, "num_threads": 1, **train},
    }


@pytest.fixture
def tiny() -> dict:
    return tiny_config()


REPO = Path(__file__).resolve().parent.parent
