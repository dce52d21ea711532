"""From a search to a model in use: one 8-trial search on the tiny encoder (three task types)
registers its best trial's model; then

- a new Python process that never imports mtlo (mtlo's install hidden from it) loads
  ``models:/NAME/1`` with ``mlflow.pyfunc.load_model`` and reproduces the logged test metrics
  from the test split;
- ``mtlo predict`` on a CSV gives the same predictions;
- ``mlflow models serve`` (a real server on 127.0.0.1) answers POST /invocations with them;
- the Optuna study on disk holds every finished trial, and ``optuna-dashboard`` serves it;
- while the search ran, no more than ``model.keep`` + ``max_concurrent`` trials held weights.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_store, free_port, mtlo_main

pytestmark = pytest.mark.slow

NAME = "model-e2e"
CONCURRENT = 2
TRIALS = 8
CONFIG = {
    "name": NAME,
    # 128 tokens: no test sentence is cut, so a tagging model scores every word as a user's text would
    "encoder": {"model": "builtin:tiny-random", "max_length": 128},
    "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"},
              "ner": {"source": "builtin:wnut_ner"}},
    "train": {"epochs": 2, "batch_size": 16, "max_train_examples": 48, "max_eval_examples": 40, "lr": 1e-3},
    "search": {"space": "weights", "num_samples": TRIALS, "objective": "mean_score",
               "max_concurrent": CONCURRENT},
    "model": {"keep": 1},
}

# run in a new interpreter with mtlo's editable install removed from the import machinery:
# what it imports of mtlo can only come from the model's own code folder
OUTSIDE = r'''
import json, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
sys.path[:] = [p for p in sys.path if p not in ("", ".", sys.argv[3])]
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
import trainables
preds = {path: model.predict(pd.read_json(path, lines=True)[["text"]]) for path in sys.argv[4:]}
out = {"trainables": trainables.__file__, "mtlo": [m for m in sys.modules if m.split(".")[0] == "orchestrator"],
       "preds": preds}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory, store_template):
    work = copy_store(store_template, tmp_path_factory.mktemp("model")).parent
    (work / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    storage = work / "ray_results" / NAME / "search"
    peak = {"files": 0, "trials": 0}
    stop = threading.Event()

    def watch() -> None:  # model copies on disk, every 50 ms
        while not stop.is_set():
            files = list(storage.glob("*/checkpoint_*/model.pt"))
            peak["files"] = max(peak["files"], len(files))
            peak["trials"] = max(peak["trials"], len({f.parent.parent for f in files}))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    from orchestrator import cli

    old = os.getcwd()
    os.chdir(work)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = cli.main(["search", "c.yaml", "--json"])
    finally:
        os.chdir(old)
        stop.set()
        watcher.join()
    assert rc == 0
    out = json.loads(buf.getvalue())
    return {"work": work, "out": out, "peak": peak, "uri": f"sqlite:///{work / 'mlflow.db'}"}


def _test_splits(work: Path) -> dict:
    """Each task's held-out test examples, as text, written to one JSON-lines file per task."""
    from orchestrator.config import load_config
    from trainables.data import raw_splits
    from trainables.spec import TrainSpec

    cfg = load_config(work / "c.yaml")
    out = {}
    for t, spec in cfg.tasks.items():
        test = raw_splits(t, spec, TrainSpec(**cfg.run_dict()["train"])).test
        texts = [" ".join(x) if isinstance(x, list) else x for x in test.texts]
        path = work / f"{t}_test.jsonl"
        path.write_text("".join(json.dumps({"text": x}) + "\n" for x in texts))
        out[t] = (path, test)
    return out


def test_the_search_registered_its_best_trial_with_scores(searched):
    from mlflow.tracking import MlflowClient

    out = searched["out"]
    model, best = out["model"], out["best"]
    assert model["registered_uri"] == f"models:/{NAME}/1" and model["run_uri"] == f"runs:/{best['run_id']}/model"
    client = MlflowClient(searched["uri"])
    version = client.get_model_version(NAME, "1")
    assert version.run_id == best["run_id"]
    tags = version.tags
    assert tags["mtlo.trial_id"] == best["trial_id"] and tags["mtlo.search_run_id"] == out["parent_run_id"]
    assert float(tags["val/rt/accuracy"]) == pytest.approx(best["metrics"]["rt"]["accuracy"], abs=1e-5)
    assert set(best["test"]) == {"rt", "vader", "ner"}  # scored on test once; ranked by validation only
    ranked = [t for t in out["trials"] if t["status"] in ("FINISHED", "STOPPED")]
    assert best["objective"] == max(t["objective"] for t in ranked)
    run = client.get_run(best["run_id"]).data.metrics
    assert run["best/objective"] == pytest.approx(best["objective"], abs=1e-9)  # the best epoch's, not the last's


def test_a_process_without_mtlo_reproduces_the_logged_test_metrics(searched):
    import numpy as np
    from mlflow.tracking import MlflowClient
    from scipy import stats
    from seqeval.metrics import f1_score

    work, best = searched["work"], searched["out"]["best"]
    logged = MlflowClient(searched["uri"]).get_run(best["run_id"]).data.metrics
    repo = str(Path(__file__).resolve().parents[2])
    splits = _test_splits(work)  # each task's test split, predicted by one process that loads the model once
    proc = subprocess.run([sys.executable, "-c", OUTSIDE, searched["uri"], f"models:/{NAME}/1", repo,
                           *(str(path) for path, _ in splits.values())],
                          capture_output=True, text=True, cwd=work, timeout=300, env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["mtlo"] == [] and "/artifacts/code/trainables/" in res["trainables"], res["trainables"]
    assert len(splits) == 3 and len(res["preds"]) == 3
    for task, (path, test) in splits.items():
        preds = [p[task] for p in res["preds"][str(path)]]
        if task == "rt":
            got = float(np.mean([p["label"] == y for p, y in zip(preds, test.labels)]))
            key = "test/rt/accuracy"
        elif task == "vader":
            got = float(stats.pearsonr([p["value"] for p in preds], test.labels)[0])
            key = "test/vader/pearson"
        else:
            assert all(len(p["tags"]) == len(words) for p, words in zip(preds, test.texts))
            got = float(f1_score(test.labels, [p["tags"] for p in preds], zero_division=0))
            key = "test/ner/f1"
        assert got == pytest.approx(logged[key], abs=1e-4), (task, got, logged[key])


def test_mtlo_predict_and_mlflow_models_serve_give_the_same_predictions(searched, capsys):
    work = searched["work"]
    path, _ = _test_splits(work)["rt"]
    rows = [json.loads(line) for line in path.read_text().splitlines()][:20]
    import pandas as pd

    pd.DataFrame(rows).to_csv(work / "in.csv", index=False)
    rc, _, err = mtlo_main("predict", f"models:/{NAME}/1", "in.csv", "--out", "p.jsonl", "--tracking-uri",
                           searched["uri"], cwd=work, capsys=capsys)
    assert rc == 0, err
    mine = [json.loads(line) for line in (work / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in mine] == [r["text"] for r in rows] and set(mine[0]) == {"text", "rt", "vader", "ner"}

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}/1",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                              cwd=work, env={**os.environ, "MLFLOW_TRACKING_URI": searched["uri"],  # as activated
                                             "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode()[-3000:] if server.stderr else ""
            assert time.monotonic() < deadline, "mlflow models serve did not answer within 180 s"
            time.sleep(0.5)
        body = json.dumps({"dataframe_split": {"columns": ["text"], "data": [[r["text"]] for r in rows]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as r:
            served = json.loads(r.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    assert len(served) == len(mine)
    for a, b in zip(served, mine):
        assert a["rt"]["label"] == b["rt"]["label"] and a["ner"]["tags"] == b["ner"]["tags"]
        assert a["rt"]["probability"] == pytest.approx(b["rt"]["probability"], abs=1e-5)
        assert a["vader"]["value"] == pytest.approx(b["vader"]["value"], abs=1e-5)


def test_the_optuna_study_is_on_disk_and_the_dashboard_serves_it(searched):
    import optuna

    work, out = searched["work"], searched["out"]
    url = f"sqlite:///{work / 'optuna.db'}"
    study = optuna.load_study(study_name=NAME, storage=url)
    told = {json.dumps(t.params, sort_keys=True): t.value for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE}
    ranked = [t for t in out["trials"] if t["status"] in ("FINISHED", "STOPPED")]
    repeats = sum(1 for t in study.trials if "mtlo.repeat_of" in t.user_attrs)
    assert len(ranked) == TRIALS and len(told) >= TRIALS - repeats
    for t in ranked:  # every finished trial, with its params and its best epoch's value
        params = {k: float(v) for k, v in t["params"].items()}
        assert told[json.dumps(params, sort_keys=True)] == pytest.approx(t["objective"], abs=1e-9)
    assert out["dashboard"] == f"optuna-dashboard {url} --host 127.0.0.1"

    port = free_port()
    dash = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), url, "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
                    break
            except OSError:
                assert dash.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not answer"
                time.sleep(0.5)
    finally:
        os.killpg(dash.pid, signal.SIGTERM)
        dash.wait(timeout=30)
    assert [s["study_name"] for s in studies] == [NAME]


def test_disk_holds_at_most_keep_plus_running_models(searched):
    """Watched every 50 ms during the search: trials holding weights <= keep + max_concurrent
    (a running trial's newest checkpoint is written before Ray deletes its previous one, so
    the file count may briefly show one more per running trial); at the end only the kept one."""
    peak = searched["peak"]
    print(f"peak during the search: {peak['trials']} trials holding weights, {peak['files']} model.pt files")
    assert 1 <= peak["trials"] <= 1 + CONCURRENT, peak
    assert peak["files"] <= 1 + 2 * CONCURRENT, peak
    left = list((searched["work"] / "ray_results" / NAME).rglob("model.pt"))
    assert len(left) == 1 and not list((searched["work"] / "ray_results" / NAME).rglob("state.pt"))


def test_a_warm_start_seeds_a_new_search_with_the_earlier_study(searched):
    """``search.warm_start``: the new study holds the earlier one's finished trials (marked with
    where they came from) before its own; a search that names no such study is refused."""
    import optuna

    work = searched["work"]
    from orchestrator import cli

    old = os.getcwd()
    os.chdir(work)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            rc = cli.main(["search", "c.yaml", "--json", "--set", "name=warm", "--set", f"search.warm_start={NAME}",
                           "--set", "search.num_samples=2", "--set", "search.max_concurrent=1",
                           "--set", "model.log=false"])
    finally:
        os.chdir(old)
    assert rc == 0
    out = json.loads(buf.getvalue())
    assert len(out["trials"]) == 2 and out["model"] is None
    url = f"sqlite:///{work / 'optuna.db'}"
    earlier = optuna.load_study(study_name=NAME, storage=url)
    study = optuna.load_study(study_name="warm", storage=url)
    done = [t for t in earlier.trials if t.state == optuna.trial.TrialState.COMPLETE and "mtlo.repeat_of" not in
            t.user_attrs]
    seeded = [t for t in study.trials if "mtlo.warm_start_from" in t.user_attrs]
    assert [(t.params, t.value) for t in seeded] == [(t.params, t.value) for t in done]
    assert study.trials[: len(seeded)] == seeded and len(study.trials) >= len(seeded) + 2
