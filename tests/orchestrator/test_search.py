"""``mtlo search`` end to end: Ray Tune + Optuna trials recorded as nested MLflow runs.

Ray starts once per test process (``ray_local``: a local 2-CPU instance); each test searches in
its own folder.
"""

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, load_config
from tests.conftest import named_config

# one trial at a time: each trial worker costs seconds of CPU to start (the first test runs two at once)
# no test here reads the best model (tests/orchestrator/test_model.py does): not logged, not rebuilt
CONFIG = named_config("e2e", ("rt", "ner"), resources={"cpus_per_trial": 1}, model={"log": False},
                      search={"space": "default", "num_samples": 4, "objective": "mean_score", "max_concurrent": 1})


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_db):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(workdir: Path, **over) -> Path:
    data = json.loads(json.dumps(CONFIG))
    for section, values in over.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def client(workdir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")


def test_four_trial_search_records_nested_runs(ray_local, workdir):
    from orchestrator.search.runner import run_search

    path = write(workdir, search={"max_concurrent": 2})
    out = run_search(load_config(path), path)
    assert len(out.trials) == 4 and out.best is not None
    c = client(workdir)
    exp = c.get_experiment_by_name("e2e")
    runs = c.search_runs([exp.experiment_id])
    parent = [r for r in runs if r.info.run_id == out.parent_run_id][0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == out.parent_run_id]
    assert len(children) == 4 and parent.info.status == "FINISHED"
    assert {a.path for a in c.list_artifacts(parent.info.run_id)} >= {"config.yaml", "space.yaml", "summary.json"}
    for child in children:
        tags, params = child.data.tags, child.data.params
        assert tags["mtlo.tasks"] == "ner,rt" and tags["mtlo.sharing"] in ("hard", "soft", "partial")
        assert tags["mtlo.status"] in ("FINISHED", "STOPPED") and child.info.status == "FINISHED"
        assert "param.lr" in params and params["train.sharing"] == tags["mtlo.sharing"]
        trial = next(t for t in out.trials if t["run_id"] == child.info.run_id)
        history = c.get_metric_history(child.info.run_id, "val/ner/f1")
        assert [m.step for m in history] == list(range(1, trial["epochs"] + 1))  # one point per epoch
        assert len(c.get_metric_history(child.info.run_id, "val/rt/accuracy")) == trial["epochs"]
        assert {a.path for a in c.list_artifacts(child.info.run_id)} == {"trial_config.yaml", "final_metrics.json"}
    best = max((t for t in out.trials), key=lambda t: t["objective"])
    assert out.best["trial_id"] == best["trial_id"]
    assert parent.data.tags["mtlo.best_run_id"] == best["run_id"]
    # the report, rebuilt from MLflow: trials ranked by objective, the best one first
    from orchestrator.commands import build_report

    res, md, _ = build_report(f"sqlite:///{workdir / 'mlflow.db'}", out.parent_run_id, workdir / "rep")
    assert res["best"]["objective"] == pytest.approx(best["objective"]) and len(res["trials"]) == 4
    ranked = [t["objective"] for t in sorted(out.trials, key=lambda t: md.index(t["trial_id"]))]
    assert ranked == sorted(ranked, reverse=True)  # ranked by objective (ties in either order)
    best_run = c.get_run(res["best"]["run_id"]).data.metrics  # and the best trial's per-task scores
    assert res["best"]["scores"]["rt"]["accuracy"] == best_run["best/rt/accuracy"]
    assert f"| rt | accuracy={best_run['best/rt/accuracy']:.4f}" in md


def test_mean_delta_trains_baselines_once_and_reuses_them(ray_local, workdir):
    from orchestrator.search.runner import run_search

    path = write(workdir, search={"space": "weights", "num_samples": 2, "objective": "mean_delta"})
    first = run_search(load_config(path), path)
    assert set(first.baselines) == {"rt", "ner"}
    c = client(workdir)
    exp = c.get_experiment_by_name("e2e")
    baseline_runs = c.search_runs([exp.experiment_id], filter_string="tags.`mtlo.role` = 'baseline'")
    assert sorted(r.data.tags["mtlo.tasks"] for r in baseline_runs) == ["ner", "rt"]
    # the objective is the mean relative gain over the trial's tasks against those baselines
    for t in first.trials:
        deltas = [(t["metrics"][k][first.objective.main_metric[k]] - first.baselines[k]) / abs(first.baselines[k])
                  for k in ("rt", "ner") if first.baselines[k]]
        if len(deltas) == 2:
            assert t["objective"] == pytest.approx(sum(deltas) / 2, rel=1e-6)
    path = write(workdir, name="e2e-again", search={"space": "weights", "num_samples": 1, "objective": "mean_delta"})
    second = run_search(load_config(path), path)
    assert second.baselines == first.baselines
    again = c.search_runs([exp.experiment_id], filter_string="tags.`mtlo.role` = 'baseline'")
    assert len(again) == 2  # reused from MLflow, not retrained


def test_existing_search_name_needs_resume(ray_local, workdir):
    from orchestrator.search.runner import run_search

    path = write(workdir, search={"num_samples": 1, "objective": "mean_score"})
    (workdir / "ray_results" / "e2e").mkdir(parents=True)
    with pytest.raises(ConfigError, match="already exists .* use --resume"):
        run_search(load_config(path), path)
    path = write(workdir, name="never-ran")
    with pytest.raises(ConfigError, match="--resume: no interrupted search named 'never-ran'"):
        run_search(load_config(path), path, resume=True)


def test_cli_search_json(ray_local, workdir, capsys):
    """``mtlo search --json`` in this process, on the module's Ray (stdout holding only JSON in a
    real process is checked by test_search_resume.py's last ``--resume --json``)."""
    from tests.conftest import mtlo_main

    path = write(workdir, name="cli", search={"space": "weights", "num_samples": 2, "objective": "target",
                                              "target": "rt"}, model={"log": True})
    rc, stdout, stderr = mtlo_main("search", str(path), "--json", cwd=workdir, capsys=capsys)
    assert rc == 0, stderr[-3000:]
    data = json.loads(stdout)  # stdout holds only the JSON
    assert set(data) == {"name", "parent_run_id", "trials", "best", "model", "importance", "dashboard",
                         "phases"} and data["name"] == "cli"
    assert data["model"]["registered_uri"] == "models:/cli/1" and data["importance"] == {}  # 2 trials: too few
    # the driver's own time per phase (no baselines to train for a target objective)
    assert set(data["phases"]) == {"checks", "start", "baselines", "trials", "mlflow catch-up", "model",
                                     "record", "report"}
    assert all(v >= 0 for v in data["phases"].values()) and data["phases"]["baselines"] < 1
    assert len(data["trials"]) == 2
    for t in data["trials"]:
        assert set(t) >= {"trial_id", "run_id", "status", "params", "tasks", "metrics", "objective"}
        assert set(t["params"]) == {"task_weight.rt", "task_weight.ner"}
        assert t["objective"] == pytest.approx(t["metrics"]["rt"]["accuracy"])  # objective: target task


def test_cli_search_refuses_a_bad_space_with_one_line(workdir, capsys):
    from tests.conftest import mtlo_main

    (workdir / "bad.yaml").write_text("lr: {float: [0.1, 0.01]}\n")
    bad = write(workdir, name="bad", search={"space": "bad.yaml"})
    rc, _, err = mtlo_main("search", str(bad), cwd=workdir, capsys=capsys)
    assert rc == 2 and err.strip().endswith("bad.yaml: lr: low must be below high, got [0.1, 0.01]")
    assert len(err.strip().splitlines()) == 1
    assert not (workdir / "ray_results" / "bad").exists()  # nothing started


def test_drop_checkpoints_removes_only_checkpoint_folders(tmp_path):
    from pyarrow import fs

    from orchestrator.runtime.checkpoints import drop_checkpoints

    for name in ("checkpoint_000000", "checkpoint_000003"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "state.pt").write_bytes(b"x" * 10)
    (tmp_path / "result.json").write_text("{}")
    (tmp_path / "checkpoint_notes.txt").write_text("a file, not a checkpoint folder")
    assert drop_checkpoints(fs.LocalFileSystem(), str(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_notes.txt", "result.json"]
    assert drop_checkpoints(fs.LocalFileSystem(), str(tmp_path / "missing")) == 0
    assert drop_checkpoints(fs.LocalFileSystem(), None) == 0


def _state(folder, name, statuses):
    trial_data = [[json.dumps({"trial_id": tid, "status": st}), "{}"] for tid, st in statuses.items()]
    (folder / f"experiment_state-{name}.json").write_text(json.dumps({"trial_data": trial_data}))


def test_a_search_ray_tune_stops_on_ray_errors_is_restored_three_times_then_says_to_resume(
        tmp_path, monkeypatch, capsys):
    """The restore loop of ``fit_tuner`` (the end-to-end case is in test_search_resume.py):
    a Ray system error restores the search (failed trials stay failed), three times at most;
    then one error line that says to resume; any other error is raised at once."""
    from ray import tune
    from ray.exceptions import OutOfMemoryError

    from orchestrator.runtime import tuner as runner
    from orchestrator.runtime.progress import Progress

    calls: list = []

    class Tuner:
        def __init__(self, errors):
            self.errors = errors

        def fit(self):
            calls.append("fit")
            if self.errors:
                raise self.errors.pop(0)
            return "grid"

    def oom():  # as Ray Tune's controller raises it: RuntimeError(...) from OutOfMemoryError
        error = RuntimeError("Caught unexpected exception: 1 worker(s) were killed ...")
        error.__cause__ = OutOfMemoryError("1 worker(s) were killed due to the node running low on memory.\nMemory ...")
        return error

    monkeypatch.setattr(tune.Tuner, "can_restore", staticmethod(lambda path: True))
    crashing = Tuner([oom() for _ in range(10)])
    monkeypatch.setattr(runner, "restore", lambda path, res, errored: calls.append(("restore", errored)) or crashing)
    with pytest.raises(RuntimeError, match=r"^Ray Tune stopped on a Ray error 4 times, the last: OutOfMemoryError: "
                       r"1 worker\(s\) were killed due to the node running low on memory\.; run the same command "
                       r"with --resume to go on$"):
        runner.fit_tuner(crashing, False, Progress(1, "trial", None, live=False), tmp_path, None)
    assert calls == ["fit", ("restore", False)] * 3 + ["fit"]
    said = " ".join(capsys.readouterr().err.split())
    assert [f"({n} of 3)" in said for n in (1, 2, 3)] == [True] * 3

    calls.clear()
    once = Tuner([oom()])
    monkeypatch.setattr(runner, "restore", lambda path, res, errored: calls.append(("restore", errored)) or once)
    assert runner.fit_tuner(once, False, Progress(1, "trial", None, live=False), tmp_path, None) == "grid"
    assert calls == ["fit", ("restore", False), "fit"]

    calls.clear()
    with pytest.raises(KeyError):  # a bug, mtlo's or Ray's, is not restored
        runner.fit_tuner(Tuner([KeyError("x")]), False, Progress(1, "trial", None, live=False), tmp_path, None)
    assert calls == ["fit"]


def test_ctrl_c_during_the_trials_is_an_interruption_not_an_end(tmp_path):
    """The first Ctrl-C asks Ray Tune to stop as its own handler would (SIGUSR1: it saves the
    state and ``fit`` returns the partial grid); ``fit_tuner`` then raises ``Interrupted`` with
    that grid instead of taking the search for finished. A fit without Ctrl-C returns its grid,
    and the handlers are as they were before."""
    import os
    import signal

    from orchestrator.errors import Interrupted
    from orchestrator.runtime import tuner as runner
    from orchestrator.runtime.progress import Progress

    stopped: list[str] = []

    class Tuner:  # what Ray Tune's fit does with the two signals
        def __init__(self, ctrl_c: bool) -> None:
            self.ctrl_c = ctrl_c

        def fit(self):
            assert os.environ.get("TUNE_DISABLE_SIGINT_HANDLER") == "1"  # Ray's own SIGINT handler stays out
            signal.signal(signal.SIGUSR1, lambda sig, frame: stopped.append("saved and stopped"))
            if self.ctrl_c:
                os.kill(os.getpid(), signal.SIGINT)
            return "partial grid" if self.ctrl_c else "grid"

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)
    assert runner.fit_tuner(Tuner(False), False, Progress(1, "trial", None, live=False), tmp_path, None) == "grid"
    assert stopped == [] and (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)) == before
    with pytest.raises(Interrupted) as caught:
        runner.fit_tuner(Tuner(True), False, Progress(1, "trial", None, live=False), tmp_path, None)
    assert caught.value.args == ("partial grid",) and stopped == ["saved and stopped"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGUSR1)) == before
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ


def test_finished_checkpoints_go_once_the_saved_experiment_state_says_finished(tmp_path):
    """A trial that finished after Ray's last save of the experiment state would be restored
    from its checkpoint: it is kept until a save records the trial as finished."""
    from types import SimpleNamespace

    from pyarrow import fs

    from orchestrator.runtime.checkpoints import DropFinishedCheckpoints, saved_finished

    storage = SimpleNamespace(storage_filesystem=fs.LocalFileSystem(), experiment_fs_path=str(tmp_path))
    trials = []
    for tid, status in (("a", "TERMINATED"), ("b", "TERMINATED"), ("c", "ERROR"), ("d", "RUNNING")):
        (tmp_path / tid / "checkpoint_000001").mkdir(parents=True)
        trials.append(SimpleNamespace(trial_id=tid, status=status, path=str(tmp_path / tid), storage=storage))
    drop = DropFinishedCheckpoints()
    drop.on_experiment_end(trials)  # no state saved yet: nothing goes
    _state(tmp_path, "2026-11-24_10-00-00", {"a": "TERMINATED", "b": "TERMINATED", "c": "ERROR"})
    _state(tmp_path, "2026-11-24_11-00-00", {"a": "TERMINATED", "b": "RUNNING", "c": "ERROR", "d": "RUNNING"})
    (tmp_path / "experiment_state-2026-11-24_12-00-00.json").write_text('{"trial_da')  # being written
    assert saved_finished(storage.storage_filesystem, str(tmp_path)) == set()
    (tmp_path / "experiment_state-2026-11-24_12-00-00.json").unlink()
    assert saved_finished(storage.storage_filesystem, str(tmp_path)) == {"a"}  # the newest session's state
    drop.on_experiment_end(trials)
    kept = {t.trial_id for t in trials if any(Path(t.path).glob("checkpoint_*"))}
    assert kept == {"b", "c", "d"}  # b finished after the last save; c failed (--resume retries it)
    _state(tmp_path, "2026-11-24_11-00-00", {"a": "TERMINATED", "b": "TERMINATED", "c": "ERROR", "d": "RUNNING"})
    drop.on_step_end(0, trials)  # within 2 s of the last look: not yet
    assert (tmp_path / "b" / "checkpoint_000001").is_dir()
    drop.checked = 0.0
    drop.on_step_end(0, trials)
    assert not (tmp_path / "b" / "checkpoint_000001").exists() and (tmp_path / "c" / "checkpoint_000001").is_dir()


def test_the_best_trials_keep_their_weights_and_the_others_give_them_back(tmp_path):
    """``model.keep: 1``: as a trial finishes, the weights of every finished trial outside the top
    go; once Ray's saved state records it finished, the top one keeps ``model.pt`` alone, until
    a better trial pushes it out."""
    from types import SimpleNamespace

    from pyarrow import fs

    from orchestrator.runtime.checkpoints import DropFinishedCheckpoints

    storage = SimpleNamespace(storage_filesystem=fs.LocalFileSystem(), experiment_fs_path=str(tmp_path))

    def trial(tid, best, status="TERMINATED"):
        for n in (1, 2):
            folder = tmp_path / tid / f"checkpoint_00000{n}"
            folder.mkdir(parents=True)
            (folder / "model.pt").write_bytes(b"w")
            (folder / "state.pt").write_bytes(b"s")
        return SimpleNamespace(trial_id=tid, status=status, path=str(tmp_path / tid), storage=storage,
                               last_result={"objective": best}, metric_analysis={"objective": {"max": best}})

    def files(tid):
        return sorted(str(p.relative_to(tmp_path / tid)) for p in (tmp_path / tid).rglob("*.pt"))

    a, b = trial("a", 0.5), trial("b", 0.4)
    keep = DropFinishedCheckpoints(keep=1)
    keep.on_trial_complete(0, [a, b], b)
    assert len(files("a")) == 4 and files("b") == ["checkpoint_000001/state.pt", "checkpoint_000002/state.pt"]
    _state(tmp_path, "2026-12-02_10-00-00", {"a": "TERMINATED", "b": "TERMINATED"})
    keep.on_experiment_end([a, b])
    assert files("a") == ["checkpoint_000002/model.pt"] and files("b") == []
    c = trial("c", 0.9)  # better: a's weights go as c finishes
    keep.on_trial_complete(0, [a, b, c], c)
    assert files("a") == [] and len(files("c")) == 4
    _state(tmp_path, "2026-12-02_10-00-00", {"a": "TERMINATED", "b": "TERMINATED", "c": "TERMINATED"})
    keep.on_experiment_end([a, b, c])
    assert files("c") == ["checkpoint_000002/model.pt"] and not list((tmp_path / "a").glob("checkpoint_*"))
    diverged = trial("d", 2.0)
    diverged.last_result = {"diverged": 1}  # its earlier epochs scored high, but it is not ranked
    keep.on_trial_complete(0, [a, b, c, diverged], diverged)
    assert files("d") == ["checkpoint_000001/state.pt", "checkpoint_000002/state.pt"] and len(files("c")) == 1


def test_a_checkpoint_that_cannot_be_deleted_does_not_stop_the_study(capsys):
    from types import SimpleNamespace

    from orchestrator.runtime.checkpoints import DropFinishedCheckpoints

    class Broken:
        def get_file_info(self, selector):
            raise OSError("read-only file system")

    storage = SimpleNamespace(storage_filesystem=Broken(), experiment_fs_path="/x")
    trial = SimpleNamespace(trial_id="t1", status="TERMINATED", path="/x/t1", storage=storage)
    DropFinishedCheckpoints().on_experiment_end([trial])
    assert "could not delete the checkpoints of finished trials: read-only file system" in capsys.readouterr().err


def test_pareto_search_reports_its_front(ray_local, workdir, capsys):
    """``objective: pareto``: one objective per task, no early stopping, and the report's front
    is exactly the non-dominated trials (checked against the trials' objectives, by hand)."""
    from orchestrator.commands import cmd_search

    path = write(workdir, name="front", search={"space": "weights", "num_samples": 4, "objective": "pareto"})
    data = yaml.safe_load(path.read_text())
    data["tasks"] = {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}}
    path.write_text(yaml.safe_dump(data))
    assert cmd_search(str(path), sets=[], as_json=False, resume=False, address=None, num_samples=None) == 0
    text = " ".join(capsys.readouterr().out.split())
    from orchestrator.commands import build_report

    res, md, folder = build_report(f"sqlite:///{workdir / 'mlflow.db'}", "front", workdir / "rep")
    trials = res["trials"]
    assert len(trials) == 4 and all(t["status"] == "FINISHED" and set(t["objective"]) == {"rt", "vader"}
                                    for t in trials)

    def dominated(t):
        return any(all(o["objective"][k] >= t["objective"][k] for k in ("rt", "vader"))
                   and o["objective"] != t["objective"] for o in trials)

    front = sorted(t["trial_id"] for t in trials if not dominated(t))
    assert front and sorted(t["trial_id"] for t in res["pareto_front"]) == front
    assert f"Pareto front: {len(front)} trial(s)." in md and all(f"| {i} |" in md for i in front)
    assert (folder / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert f"Pareto front: {len(front)} trial(s): " in text and all(i in text for i in front)
    t0 = trials[0]
    assert f"rt {t0['objective']['rt']:.4f} vader {t0['objective']['vader']:.4f}" in text  # not raw JSON
    run = client(workdir).get_run(t0["run_id"]).data.metrics
    # each trial at its best epoch (the weights it kept), as Optuna was told
    assert run["best_obj/rt"] == t0["objective"]["rt"] and run["best_obj/vader"] == t0["objective"]["vader"]


def test_a_trial_no_node_can_hold_is_refused_before_any_trial(ray_local, workdir, capsys):
    """The module's Ray has 2 CPUs and no GPU: asking more would wait forever."""
    from tests.conftest import mtlo_main

    for resources, expect in (({"cpus_per_trial": 4}, "resources.cpus_per_trial: 4 CPUs a trial, but this "
                                                      "machine's Ray has 2: no trial could start"),
                              ({"gpus_per_trial": 0.5}, "resources.gpus_per_trial: 0.5 GPU a trial, but this "
                                                        "machine's Ray has 0: no trial could start")):
        path = write(workdir, name="toobig", resources=resources)
        rc, _, err = mtlo_main("search", str(path), cwd=workdir, capsys=capsys)
        assert rc == 2 and err.strip() == f"mtlo: error: {expect}", err
        assert not (workdir / "ray_results" / "toobig").exists()  # no parent run, no trial


def test_a_time_budget_ends_the_search_cleanly(ray_local, workdir):
    """``search.time_budget``: far fewer trials than asked, every started one recorded and
    closed, the parent run FINISHED."""
    from orchestrator.search.runner import run_search

    path = write(workdir, name="budget", search={"space": "weights", "num_samples": 40, "scheduler": "fifo",
                                                 "max_concurrent": 1, "time_budget": 8})
    out = run_search(load_config(path), path)
    assert 1 <= len(out.trials) < 40
    # a trial stopped by the budget before its first epoch ended has nothing to rank (a busy machine)
    assert (out.best is not None) == any(t["objective"] is not None for t in out.trials)
    parent = client(workdir).get_run(out.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client(workdir).search_runs([parent.info.experiment_id],
                                           f"tags.`mlflow.parentRunId` = '{out.parent_run_id}'")
    assert len(children) == len(out.trials) and all(c.info.status != "RUNNING" for c in children)


def test_a_diverged_trial_under_asha_is_pruned_in_optuna_and_never_ranked_by_asha(ray_local, workdir, monkeypatch):
    """``nan@1 trial=1`` under ASHA (max_t 3, reduction factor 2: rungs at epochs 1 and 2): the
    diverged trial's last result has no objective, so ASHA's rungs hold only finite values and
    the trial stays out of the epoch-2 rung; Optuna records it PRUNED (with its last finite
    report, epoch 1's objective), and every other trial COMPLETE with its best epoch's objective."""
    import math

    import optuna
    import ray.tune.schedulers as schedulers

    from orchestrator.search.runner import run_search

    made: list = []

    class Recorded(schedulers.ASHAScheduler):  # the very scheduler the search runs with
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(schedulers, "ASHAScheduler", Recorded)
    monkeypatch.setenv("MTLO_FAULT", "nan@1 trial=1")
    path = write(workdir, name="asha-nan", train={"epochs": 3},
                 search={"space": "weights", "scheduler": "asha", "num_samples": 4, "max_concurrent": 1})
    out = run_search(load_config(path), path)
    diverged = [t for t in out.trials if t["status"] == "DIVERGED"]
    assert len(diverged) == 1, [t["status"] for t in out.trials]
    bad = diverged[0]["trial_id"]
    (asha,) = made
    rungs = {milestone: dict(recorded) for bracket in asha._brackets for milestone, recorded in bracket._rungs}
    assert set(rungs) >= {1, 2}
    assert all(math.isfinite(v) for recorded in rungs.values() for v in recorded.values()), rungs
    assert bad in rungs[1] and bad not in rungs[2], rungs  # ranked at epoch 1 (finite), never after
    study = optuna.load_study(study_name="asha-nan", storage=f"sqlite:///{workdir / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"], states
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    assert pruned.params == diverged[0]["params"], (pruned.params, diverged[0]["params"])
    # Optuna's rule for a pruned trial: the value of its last report, epoch 1's (finite), never NaN
    assert pruned.value == pytest.approx(diverged[0]["objective"], abs=1e-9) and diverged[0]["best_epoch"] == 1
    for t in study.trials:
        if t.state.name == "COMPLETE":
            match = [x for x in out.trials if x["params"] == t.params]
            assert match and t.value == pytest.approx(match[0]["objective"], abs=1e-9)
