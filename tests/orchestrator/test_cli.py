"""``mtlo`` as a user runs it: a real process for a run (refusals and listings in this process),
a real MLflow store queried afterwards."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import mtlo_main, named_config, run_mtlo

CONFIG = named_config("cli-test", ("rt", "ner"), train={"num_threads": 1})


def mtlo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_mtlo(cwd, *args, timeout=300)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


def test_tasks_json_lists_every_builtin_with_size_and_install_state(tmp_path, capsys):
    rc, out, err = mtlo_main("tasks", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, err
    rows = {r["name"]: r for r in json.loads(out)}  # stdout holds the JSON alone
    assert len(rows) == 10
    assert rows["rt_polarity"]["examples"] == 8530 and rows["rt_polarity"]["installed"]
    assert rows["wnut_ner"]["type"] == "tagging"


@pytest.mark.slow
def test_train_logs_one_complete_mlflow_run(config_file, tmp_path):
    out = mtlo("train", str(config_file), "--json", "--set", "train.seed=3", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # only JSON on stdout
    assert set(result) == {"run_id", "tasks", "test", "main_metric", "model"}
    assert result["main_metric"] == {"rt": "accuracy", "ner": "f1"}
    assert set(result["tasks"]["ner"]) >= {"f1", "precision", "recall"}
    assert set(result["test"]) == {"rt", "ner"} and set(result["test"]["rt"]) == {"accuracy", "macro_f1"}
    cfg_name = yaml.safe_load(config_file.read_text())["name"]
    assert result["model"]["registered_uri"] == f"models:/{cfg_name}/1"
    assert result["model"]["run_uri"] == f"runs:/{result['run_id']}/model"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.seed"] == "3" and run.data.params["train.sharing"] == "hard"
    assert run.data.params["task.rt.source"] == "builtin:rt_polarity"
    assert run.data.tags["mtlo.tasks"] == "ner,rt" and run.data.tags["mtlo.command"] == "train"
    history = client.get_metric_history(run.info.run_id, "val/rt/accuracy")
    assert [m.step for m in history] == [1, 2]
    assert len(client.get_metric_history(run.info.run_id, "val/ner/f1")) == 2
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "config.yaml"} <= artifacts
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path))).read_text())
    assert summary["tasks"] == result["tasks"] and summary["train_steps"] == 6


@pytest.mark.slow
def test_train_prints_a_per_task_table(config_file, tmp_path, capsys):
    rc, out, err = mtlo_main("train", str(config_file), cwd=tmp_path, capsys=capsys)
    assert rc == 0, err
    assert "main metric" in out and "rt" in out and "accuracy" in out
    assert "epoch 2" in err


# --set overrides (files: the corpus in tests/bad_inputs, test_bad_inputs.py)
BAD = [
    (["--set", "train.lr=-1"], "--set train.lr: Input should be greater than 0"),
    (["--set", "train.nope=1"], "train.nope: unknown key"),
    (["--set", "oops"], "expected KEY=VALUE"),
    (["--set", "encoder.model=/no/such/model"], "encoder.model: cannot load"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_override_exits_2_with_one_line_and_writes_nothing(config_file, tmp_path, extra, message, capsys):
    rc, out, err = mtlo_main("train", str(config_file), *extra, cwd=tmp_path, capsys=capsys)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run half-made


def test_missing_config_and_bad_command(tmp_path, capsys):
    rc, _, err = mtlo_main("train", "nope.yaml", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and "nope.yaml: config file not found" in err
    rc, _, err = mtlo_main("fly", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and "invalid choice" in err
