"""Config validation at the edge: every error names the file or --set and the dotted field."""

from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, apply_sets, load_config

BASE = {
    "name": "t",
    "encoder": {"model": "builtin:tiny-random", "max_length": 32},
    "tasks": {"rt": {"source": "builtin:rt_polarity"}},
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_defaults_fill_every_section(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.train.epochs == 3 and cfg.train.sharing == "hard"
    assert cfg.mlflow.tracking_uri == f"sqlite:///{Path.cwd() / 'mlflow.db'}" and cfg.experiment == "t"
    assert set(cfg.run_dict()) == {"encoder", "tasks", "train"}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"train": {"lrr": 1}}, "c.yaml: train.lrr: unknown key"),
        ({"train": {"lr": "fast"}}, "c.yaml: train.lr: Input should be a valid number"),
        ({"train": {"lr": -1}}, "c.yaml: train.lr: Input should be greater than 0 (got -1)"),
        ({"train": {"sharing": "medium"}},
         "train.sharing: unknown 'medium' (valid: hard, soft, partial, single, lora)"),
        ({"train": {"val_fraction": 1.5}}, "train.val_fraction: Input should be less than 1"),
        ({"train": {"task_weights": {"zz": 1.0}}}, "train.task_weights names unknown task(s) ['zz']"),
        ({"tasks": {}}, "tasks: Dictionary should have at least 1 item"),
        ({"tasks": {"a b": {"source": "builtin:rt_polarity"}}}, "task name 'a b' may use only"),
        ({"tasks": {"rt": {"sorce": "x"}}}, "tasks.rt.sorce: unknown key"),
        ({"bogus": 1}, "c.yaml: bogus: unknown key"),
    ],
)
def test_bad_fields_are_named(tmp_path, patch, message):
    data = {**BASE, **{k: ({**BASE.get(k, {}), **v} if isinstance(v, dict) and k != "tasks" else v)
                       for k, v in patch.items()}}
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match=r"not valid YAML \(line \d\)"):
        load_config(write(tmp_path, "name: x\ntasks: [unclosed\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_set_overrides_are_typed_and_validated(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, ["encoder.max_length=16", "train.lr=1e-4", "train.task_weights.rt=2"])
    assert cfg.encoder.max_length == 16 and cfg.train.lr == 1e-4 and cfg.train.task_weights == {"rt": 2.0}
    with pytest.raises(ConfigError, match=r"^--set train\.epochs: Input should be a valid integer"):
        load_config(path, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["train.epochs"])
    with pytest.raises(ConfigError, match="'name' is not a section"):
        apply_sets({"name": "x"}, ["name.sub=1"])


def test_relative_data_paths_resolve_beside_the_config(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.csv").write_text("text,label\na,0\n")
    cfg = load_config(write(tmp_path, {**BASE, "tasks": {"d": {"source": "csv:data/d.csv", "type": "classification"}}}))
    assert cfg.tasks["d"].source == f"csv:{tmp_path / 'data' / 'd.csv'}"
