"""The MLflow recorder (``store/recorder.py``) on its own, driven as Ray Tune drives it (the
callback's events with stand-in trials, a stand-in result grid) against a real sqlite MLflow
store, with no Ray: one child run per trial with its tags, each epoch's metrics once, the best
epoch's metrics and final status at the end; a write that fails goes offline without stopping
anything and ``sync`` writes what MLflow missed; after Ctrl-C, trials that had not ended stay
open and the parent run is KILLED."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from orchestrator.runtime.trial import TrialContext
from orchestrator.store import recorder as rec
from tests.conftest import tiny_config
from trainables.spec import RunSpec


@pytest.fixture
def store(mlflow_db):
    uri = f"sqlite:///{mlflow_db}"
    client = MlflowClient(uri)
    exp = client.create_experiment("rec")
    parent = client.create_run(exp, run_name="search").info.run_id
    run = RunSpec.from_dict(tiny_config()).to_dict()  # every key with its default, as a config gives it
    ctx = TrialContext(run=run, objective=None, cpus_per_trial=1)  # 2 epochs
    make = lambda: rec.MlflowTrials(uri, experiment_id=exp, parent_run_id=parent, ctx=ctx, role="trial",  # noqa: E731
                                    base_tags={"mtlo.config_name": "rec"})
    return SimpleNamespace(client=client, exp=exp, parent=parent, make=make)


def trial(tid: str, **extra) -> SimpleNamespace:
    return SimpleNamespace(**{"trial_id": tid, "config": {"__mtlo_fixed": {"seed": 1}}, "local_path": None,
                              "last_result": {}, "error_file": None, "error_msg": None, **extra})


def row(epoch: int, objective: float) -> dict:
    return {"epoch": epoch, "step": 4 * epoch, "objective": objective, "val/rt/accuracy": objective,
            "trial_id": "", "time_this_iter_s": 1.0}


def children(store) -> dict[str, object]:
    runs = store.client.search_runs([store.exp], f"tags.`mlflow.parentRunId` = '{store.parent}'")
    return {r.data.tags["mtlo.trial_id"]: r for r in runs}


def history(store, run, key="objective") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in store.client.get_metric_history(run.info.run_id, key))


def test_a_trial_becomes_one_child_run_with_each_epoch_once_and_its_best_epoch(store):
    r = store.make()
    t = trial("a1")
    r.on_trial_start(0, [], t)
    for epoch, value in ((1, 0.4), (2, 0.3)):
        r.on_trial_result(0, [], t, row(epoch, value))
    r.on_trial_result(0, [], t, row(2, 0.3))  # a resumed trial repeating its last epoch: logged once
    r.on_trial_complete(0, [], t)
    r.drain()
    run = children(store)["a1"]
    tags = run.data.tags
    assert tags["mlflow.parentRunId"] == store.parent and tags["mtlo.role"] == "trial"
    assert tags["mtlo.status"] == "FINISHED" and run.info.status == "FINISHED"
    assert tags["mtlo.tasks"] == "ner,rt,vader" and tags["mtlo.seed"] == "1" and tags["mtlo.config_name"] == "rec"
    assert history(store, run) == [(1, 0.4), (2, 0.3)]
    assert run.data.metrics["best/objective"] == 0.4 and run.data.metrics["best_epoch"] == 1  # the best epoch
    assert run.data.params["train.seed"] == "1"  # the fixed parameter, applied to the run's config
    files = {a.path for a in store.client.list_artifacts(run.info.run_id)}
    assert files == {"trial_config.yaml", "final_metrics.json"}


def test_an_early_stop_a_failure_and_a_divergence_are_told_apart(store):
    r = store.make()
    stopped, failed, diverged = trial("s1"), trial("f1", error_msg="RuntimeError: boom"), trial("d1")
    for t in (stopped, failed, diverged):
        r.on_trial_start(0, [], t)
        r.on_trial_result(0, [], t, row(1, 0.2))
    r.on_trial_complete(0, [], stopped)  # 1 of 2 epochs: the scheduler stopped it
    r.on_trial_error(0, [], failed)
    r.on_trial_result(0, [], diverged, {"epoch": 2, "diverged": True, "error": "loss is nan at step 6"})
    r.on_trial_complete(0, [], diverged)
    r.drain()
    runs = children(store)
    assert (runs["s1"].data.tags["mtlo.status"], runs["s1"].info.status) == ("STOPPED", "FINISHED")
    assert (runs["f1"].data.tags["mtlo.status"], runs["f1"].info.status) == ("FAILED", "FAILED")
    assert runs["f1"].data.tags["mtlo.error"] == "RuntimeError: boom"
    assert runs["d1"].data.tags["mtlo.status"] == "DIVERGED" and runs["d1"].data.tags["mtlo.error"] == \
        "loss is nan at step 6"


def test_a_failed_write_goes_offline_and_sync_writes_what_mlflow_missed(store, monkeypatch):
    r = store.make()
    t = trial("o1")
    r.on_trial_start(0, [], t)
    r.on_trial_result(0, [], t, row(1, 0.1))
    r.drain()
    real = r.client.log_batch

    def down(*args, **kwargs):
        raise ConnectionError("the tracking server does not answer")

    monkeypatch.setattr(r.client, "log_batch", down)
    monkeypatch.setattr(rec, "store_problem", lambda uri, timeout=5.0: "down")  # the probe: still down
    r.on_trial_result(0, [], t, row(2, 0.5))  # lost: MLflow is down; nothing raises
    r.on_trial_complete(0, [], t)
    r.drain()
    assert r.offline_since is not None
    assert history(store, children(store)["o1"]) == [(1, 0.1)]
    monkeypatch.setattr(r.client, "log_batch", real)
    grid = [SimpleNamespace(metrics={"trial_id": "o1"}, config=t.config, error=None,
                            metrics_dataframe=pd.DataFrame([{**row(e, v), "trial_id": "o1"} for e, v in
                                                            ((1, 0.1), (2, 0.5))]))]
    r.sync(grid)
    run = children(store)["o1"]
    assert history(store, run) == [(1, 0.1), (2, 0.5)]  # the missed epoch, once
    assert r.synced_points > 0 and run.data.tags["mtlo.status"] == "FINISHED"
    assert run.data.metrics["best/objective"] == 0.5


def test_while_offline_the_store_is_probed_every_retry_every_s_and_not_in_between(store, monkeypatch):
    """``mlflow.retry_every_s``: no probe sooner than that after a failed write or probe; the
    first probe that finds the store answering brings the recorder back online."""
    r = store.make()
    r.retry_every_s = 30.0
    now = [1000.0]
    monkeypatch.setattr(rec.time, "time", lambda: now[0])
    probes: list[float] = []
    answer = ["down"]
    monkeypatch.setattr(rec, "store_problem", lambda uri, timeout=5.0: probes.append(now[0]) or answer[0])
    r.went_offline(ConnectionError("down"))
    now[0] += 29.0
    assert not r.online() and probes == []  # too soon: not even asked
    now[0] += 1.0
    assert not r.online() and probes == [1030.0]  # asked, still down
    now[0] += 29.0
    assert not r.online() and probes == [1030.0]
    answer[0] = None  # the store answers again
    now[0] += 1.0
    assert r.online() and probes == [1030.0, 1060.0] and r.offline_since is None


def test_after_ctrl_c_a_running_trial_stays_open_and_the_parent_is_killed(store):
    r = store.make()
    done, running, never = trial("c1"), trial("c2"), trial("c3")
    for t in (done, running):
        r.on_trial_start(0, [], t)
        r.on_trial_result(0, [], t, row(1, 0.2))
    r.on_trial_result(0, [], done, row(2, 0.3))
    r.on_trial_complete(0, [], done)

    def result(t, epochs):
        frame = pd.DataFrame([{**row(e, 0.1 * e), "trial_id": t.trial_id} for e in epochs]) if epochs else None
        return SimpleNamespace(metrics={"trial_id": t.trial_id} if epochs else {}, config=t.config if epochs else None,
                               error=None, metrics_dataframe=frame)

    r.sync([result(done, (1, 2)), result(running, (1,)), result(never, ())], interrupted=True)
    runs = children(store)
    assert runs["c1"].data.tags["mtlo.status"] == "FINISHED"
    assert runs["c2"].data.tags["mtlo.status"] == "RUNNING" and runs["c2"].info.status == "RUNNING"
    assert "c3" not in runs  # it never started: nothing to record
    assert store.client.get_run(store.parent).info.status == "KILLED"


def test_existing_child_runs_are_read_once_and_again_after_a_failed_write(store, monkeypatch):
    """Each read of the existing child runs loads all of them (a study's thousands): a new trial
    does not read them again, unless a write has failed since (it may have made the run: a
    restored copy of the callback, or a create that failed after the store made it)."""
    r = store.make()
    reads: list[int] = []
    real = r._children  # the read of every child run
    monkeypatch.setattr(r, "_children", lambda: reads.append(1) or real())
    for tid in ("n1", "n2", "n3"):
        r.on_trial_start(0, [], trial(tid))
    r.drain()
    assert reads == [] and set(children(store)) == {"n1", "n2", "n3"}
    # a child run that another copy (or a create whose answer was lost) made, then a failed write
    made = store.client.create_run(store.exp, tags={"mlflow.parentRunId": store.parent, "mtlo.trial_id": "n4"})
    monkeypatch.setattr(rec, "store_problem", lambda uri, timeout=5.0: None)  # the probe: answering
    r.went_offline(ConnectionError("a lost answer"))
    r.last_probe = 0.0
    for tid in ("n4", "n5"):  # one after the other (the writer threads would both read in a race)
        r.on_trial_start(0, [], trial(tid))
        r.drain()
    assert reads == [1]  # once, at the first new trial after the failure
    assert r.runs["n4"] == made.info.run_id and sorted(children(store)) == ["n1", "n2", "n3", "n4", "n5"]
    restored = rec.MlflowTrials.__new__(rec.MlflowTrials)
    restored.__setstate__(r.__getstate__())  # Ray Tune's saved copy: reads at its first new trial
    assert restored._stale
