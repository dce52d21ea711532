"""A model from a shared registry runs no code (docs/security.md): ``mtlo predict`` reads an
mtlo model's weights and metadata as data, refuses a model that is not one before anything of
it runs, and lets the encoder's files import code only where the user asks. Each plant is
shown to be live: loading it the way predict used to (``mlflow.pyfunc.load_model``, or the
folder's own ``trust_remote_code``) does run its code."""

import contextlib
import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import mtlo_main, tiny_config
from trainables import build
from trainables.serving import Predictor, save_model

pytestmark = pytest.mark.slow

EVIL = '''
import os, pathlib
pathlib.Path(os.environ["MTLO_TEST_MARKER"]).write_text("the model's code ran")
import mlflow.models
from mlflow.pyfunc import PythonModel


class Model(PythonModel):
    def predict(self, context, model_input, params=None):
        return [{"hijacked": True}] * len(model_input)


mlflow.models.set_model(Model())
'''


@pytest.fixture(scope="module")
def mtlo_folder(tmp_path_factory):
    cfg = tiny_config(max_eval_examples=16)
    cfg["tasks"] = {"rt": cfg["tasks"]["rt"]}
    folder = tmp_path_factory.mktemp("m") / "mtlo_model"
    save_model(build(cfg), folder)
    return folder


def test_a_registered_model_whose_code_plants_a_marker_is_read_as_data(mtlo_folder, tmp_path, mlflow_db, monkeypatch,
                                                                        capsys):
    import mlflow

    marker = tmp_path / "marker"
    monkeypatch.setenv("MTLO_TEST_MARKER", str(marker))
    (tmp_path / "evil.py").write_text(EVIL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("shared-registry")  # not the active experiment an earlier test in this process left
    with mlflow.start_run():  # someone pushes a version whose entry code is theirs, its mtlo folder real
        mlflow.pyfunc.log_model(name="model", python_model=str(tmp_path / "evil.py"),
                                artifacts={"model": str(mtlo_folder)}, registered_model_name="shared")
        mlflow.pyfunc.log_model(name="plain", python_model=str(tmp_path / "evil.py"),
                                registered_model_name="not-mtlo")
    marker.unlink(missing_ok=True)  # logging may have run it; what matters is what predict does
    (tmp_path / "in.csv").write_text("text\ngood film\n")
    rc, out, err = mtlo_main("predict", "models:/shared/1", "in.csv", "--tracking-uri", uri, cwd=tmp_path,
                             capsys=capsys)
    assert rc == 0, err
    assert not marker.exists()  # nothing of the version's code ran
    assert set(json.loads(out.splitlines()[0])) == {"text", "rt"}  # the mtlo weights answered, not its code
    rc, out, err = mtlo_main("predict", "models:/not-mtlo/1", "in.csv", "--tracking-uri", uri, cwd=tmp_path,
                             capsys=capsys)
    assert rc == 2 and "models:/not-mtlo/1: not an mtlo model" in err and not marker.exists()
    mlflow.pyfunc.load_model("models:/shared/1")  # the plant is live: a pyfunc load runs its code
    assert marker.read_text() == "the model's code ran"


def test_an_encoder_config_that_points_to_code_runs_it_only_when_the_user_asks(mtlo_folder, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("MTLO_TEST_MARKER", str(marker))
    folder = tmp_path / "planted"
    shutil.copytree(mtlo_folder, folder)
    config = json.loads((folder / "encoder" / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel"}
    (folder / "encoder" / "config.json").write_text(json.dumps(config))
    (folder / "encoder" / "evil.py").write_text(
        "import os, pathlib\npathlib.Path(os.environ['MTLO_TEST_MARKER']).write_text('ran')\n"
        "from transformers import BertConfig, BertModel\nclass EvilConfig(BertConfig):\n    pass\n"
        "class EvilModel(BertModel):\n    config_class = EvilConfig\n")
    meta = json.loads((folder / "mtlo_model.json").read_text())
    meta["run"]["encoder"]["trust_remote_code"] = True  # the folder asks for it: not its call to make
    (folder / "mtlo_model.json").write_text(json.dumps(meta))
    predictor = Predictor(folder, device="cpu")
    assert not marker.exists() and predictor.predict(["a fine film"])[0]["rt"]["label"]
    # the plant is live: when the user does ask, transformers imports the folder's code (the planted
    # classes need not build a working model)
    with contextlib.suppress(Exception):
        Predictor(folder, device="cpu", trust_remote_code=True)
    assert Path(marker).read_text() == "ran"
