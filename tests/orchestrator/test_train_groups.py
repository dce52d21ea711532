"""``mtlo train CONFIG --groups a+b,c``: the accepted grouping becomes one model a group, each
trained on all of its data (unless capped), scored on test, registered with its tasks and the
study it came from; every run logs its tasks' data as MLflow dataset inputs."""

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import mtlo_main

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, **train: object) -> Path:
    rows = ["text,label"] + [f"{'good' if i % 2 else 'bad'} thing number {i},{i % 2}" for i in range(90)]
    (tmp_path / "small.csv").write_text("\n".join(rows) + "\n")
    cfg = {"name": "tg", "encoder": {"model": "builtin:tiny-random", "max_length": 24},
           "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"},
                     "small": {"source": "csv:small.csv", "type": "classification"}},
           "train": {"epochs": 1, "batch_size": 16, "max_eval_examples": 32, "lr": 1e-3, **train},
           "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "tg"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_train_groups_registers_one_model_a_group_that_predict_uses(tmp_path, mlflow_db, capsys):
    from mlflow.tracking import MlflowClient

    path = _config(tmp_path, max_train_examples=48)  # capped in the file: the cap holds
    rc, out, err = mtlo_main("train", str(path), "--groups", "rt+vader,small", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, err[-2000:]
    models = json.loads(out)["models"]
    assert [m["group"] for m in models] == [["rt", "vader"], ["small"]]
    assert [m["model"]["registered_uri"] for m in models] == ["models:/tg-rt-vader/1", "models:/tg-small/1"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for m in models:
        name = m["model"]["name"]
        version = client.get_model_version(name, "1")
        assert version.tags["mtlo.tasks"] == ",".join(m["group"]) and version.tags["mtlo.group"] == "+".join(m["group"])
        assert set(m["test"]) == set(m["group"])  # each model scored on its tasks' test splits
        run = client.get_run(version.run_id)
        assert run.data.params["train.max_train_examples"] == "48"
        inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}  # the Dataset column, the lineage
        assert set(inputs) == set(m["group"])
        profile = json.loads(inputs[m["group"][0]].dataset.profile)
        assert profile["train"] <= 48 and profile["test"] > 0 and len(inputs[m["group"][0]].dataset.digest) == 16
    (tmp_path / "in.csv").write_text("text\ngood thing\nwin a prize now\n")
    for m, tasks in zip(models, (["rt", "vader"], ["small"])):
        rc, out, err = mtlo_main("predict", m["model"]["registered_uri"], "in.csv", cwd=tmp_path, capsys=capsys)
        assert rc == 0, err[-2000:]
        rows = [json.loads(line) for line in out.splitlines()]
        assert len(rows) == 2 and all(set(r) == {"text", *tasks} for r in rows)


def test_train_groups_uses_all_data_unless_capped_and_refuses_bad_groups(tmp_path, mlflow_db, capsys):
    from mlflow.tracking import MlflowClient

    path = _config(tmp_path)  # no max_train_examples: the default 2000 would cap; --groups takes all data
    rc, out, err = mtlo_main("train", str(path), "--groups", "small", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, err[-2000:]
    model = json.loads(out)["models"][0]
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(model["run_id"])
    assert run.data.params["train.max_train_examples"] == "None"
    profile = json.loads(run.inputs.dataset_inputs[0].dataset.profile)
    assert profile["train"] + profile["validation"] + profile["test"] == 90  # every example of the file
    rc, out, err = mtlo_main("train", str(path), "--groups", "small", cwd=tmp_path, capsys=capsys)  # for people
    assert rc == 0, err[-2000:]
    assert "registered as models:/tg-small/2" in out and "mtlo predict models:/tg-small/2" in out
    for args, message in ((["--groups", "rt+nope"], "--groups: rt+nope: no task 'nope' in the config"),
                          (["--groups", "rt,rt"], "--groups: rt: the same group twice"),
                          (["--groups", "rt", "--study", "nosuch"], "no search or transfer study named 'nosuch'"),
                          (["--study", "x"], "--study: only with --groups")):
        rc, out, err = mtlo_main("train", str(path), *args, cwd=tmp_path, capsys=capsys)
        assert rc == 2 and message in err and err.count("\n") == 1, (args, err)
