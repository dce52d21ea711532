"""Faults injected into a real search (MTLO_FAULT, orchestrator/runtime/faults.py), under load.

One ``mtlo search`` of 5 trials that all run at once (0.25 CPU each) for 3 epochs, where
trial 1 raises after epoch 2 in every attempt (retried once, then FAILED), trial 2's worker
is SIGKILLed once after epoch 2 (retried from its checkpoint, then FINISHED), trial 3's
loss turns NaN after epoch 2 (DIVERGED, not retried) and trial 4 runs out of GPU memory in
epoch 1 (injected: FAILED with what to change, not retried). The search finishes the others, and
every per-task metric of every epoch that Ray saw reported (each trial's result.json) is in
MLflow exactly once, with its value. (The command is the installed ``mtlo`` script, on the
tests' shared Ray; a local Ray of mtlo's own and its sockets: test_transfer_cli.py.)
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import search_config

pytestmark = pytest.mark.slow

CONFIG = {**search_config("faults", examples=64, log_model=True, num_samples=5, max_concurrent=5, max_failures=1),
          "resources": {"cpus_per_trial": 0.25}}
FAULTS = "raise@2 trial=1; kill@2 trial=2 times=1; nan@2 trial=3; oom@1 trial=4"  # trials are numbered from 1
PER_TASK = ("val/", "train/", "weight/")


def numbered(tmp_path: Path, name: str, result: dict) -> tuple[dict, dict, dict]:
    """A search's trials by their number in Ray's folder names: folders, statuses, child runs."""
    from mlflow.tracking import MlflowClient

    folders = {int(f.name.split("_")[2]): f for f in (tmp_path / "ray_results" / name / "search").glob("trainable_*")}
    number = {f.name.split("_")[1]: n for n, f in folders.items()}
    status = {number[t["trial_id"]]: t["status"] for t in result["trials"]}
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = {number[r.data.tags["mtlo.trial_id"]]: r for r in client.search_runs(
        [client.get_experiment_by_name(name).experiment_id], "tags.`mtlo.role` = 'trial'")}
    return folders, status, runs


def test_faults_are_survived_and_recorded_and_no_metric_is_lost(ray_local, tmp_path, mlflow_db):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "faults").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # the CLI sets its own
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "MTLO_FAULT": FAULTS, "MTLO_FAULT_DIR": str(tmp_path / "faults")})
    with open(tmp_path / "out.json", "w") as stdout, open(tmp_path / "err.txt", "w") as stderr:
        proc = subprocess.run([str(Path(sys.executable).parent / "mtlo"), "search", "c.yaml", "--json", "--address",
                               ray_local], cwd=tmp_path, env=env, stdout=stdout, stderr=stderr, timeout=900)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, (tmp_path / "out.json").read_text(),
                                      (tmp_path / "err.txt").read_text())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    folders, status, runs = numbered(tmp_path, "faults", result)
    assert status == {1: "FAILED", 2: "FINISHED", 3: "DIVERGED", 4: "FAILED",
                      5: "FINISHED"}, status
    assert result["best"]["status"] == "FINISHED" and math.isfinite(result["best"]["objective"])
    assert "DIVERGED" in out.stderr and "retrying" in out.stderr  # the progress lines said so
    # a finished (or diverged) trial gave its checkpoints back; the failed one keeps its last,
    # which --resume retries it from; the best one (model.keep: 1) its weights alone; every trial
    # keeps its results
    kept = {n for n, f in folders.items() if any(f.glob("checkpoint_*"))}  # trial 4: none (it ended in epoch 1)
    best = next(n for n, r in runs.items() if r.data.tags["mtlo.trial_id"] == result["best"]["trial_id"])
    assert kept == {1, best}, (kept, best)
    assert [p.name for p in folders[best].glob("checkpoint_*/*")] == ["model.pt"]
    assert all((f / "result.json").is_file() for f in folders.values())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(runs) == 5  # one child run per trial: a retry continues the same run
    failed, killed, diverged, oom = runs[1], runs[2], runs[3], runs[4]
    assert failed.info.status == "FAILED" and failed.data.tags["mtlo.retries"] == "1"
    assert "injected fault" in failed.data.tags["mtlo.error"]
    assert "injected fault" in failed.data.tags["mtlo.retry.1.error"]
    assert killed.info.status == "FINISHED" and killed.data.tags["mtlo.retries"] == "1"
    assert diverged.info.status == "FAILED" and "mtlo.retries" not in diverged.data.tags
    assert "diverged" in diverged.data.tags["mtlo.error"] and "loss is nan" in diverged.data.tags["mtlo.error"]
    # out of GPU memory: recorded once with what to change, not retried unchanged (max_failures is 1)
    assert oom.info.status == "FAILED" and "mtlo.retries" not in oom.data.tags
    assert oom.data.tags["mtlo.error"].startswith("GPU out of memory at batch size 16; lower train.batch_size or "
                                                  "give the trial a larger GPU share (resources.gpus_per_trial)")
    assert result["best"]["trial_id"] != oom.data.tags["mtlo.trial_id"]

    # every per-task metric of every reported epoch, against Ray's own record of the results
    compared, series = 0, set()
    for tid, folder in folders.items():
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        rid = runs[tid].info.run_id
        reported: dict[str, list[tuple[int, float]]] = {}
        for row in rows:
            for k, v in row.items():
                if k.startswith(PER_TASK) or k == "objective":
                    assert v is not None and math.isfinite(v), (tid, k, v)  # never NaN, never None
                    reported.setdefault(k, []).append((row["epoch"], v))
        assert sorted(e for e, _ in reported["val/rt/accuracy"]) == {3: [1, 2], 4: [1]}.get(
            tid, [1, 2, 3]), tid  # the retried trials went on from their epoch-2 checkpoint
        series.update(reported)
        for k, points in reported.items():
            logged = sorted((m.step, m.value) for m in client.get_metric_history(rid, k))
            assert logged == sorted(points), (tid, k)  # each point once, with its value
            compared += len(points)
        if tid == 3:
            assert rows[-1]["diverged"] == 1 and "objective" not in rows[-1]  # the searcher saw no NaN
        if tid == 4:  # epoch 1's report, then the out-of-memory report, without an objective
            assert [r.get("epoch") for r in rows] == [1, 1] and rows[-1]["oom"] == 1 and "objective" not in rows[-1]
    # every series (per task: validation metrics, loss, weight; the objective) in every trial,
    # 3 epochs for 3 trials, 2 for the diverged one, 1 for the one out of memory
    assert {"val/rt/accuracy", "val/vader/pearson", "train/rt/loss", "weight/vader", "objective"} <= series
    assert compared == len(series) * (3 * 3 + 2 + 1)

    # 5 trials at once: every child run started before the first one ended
    starts = sorted(r.info.start_time for r in runs.values())
    ends = sorted(r.info.end_time for r in runs.values())
    assert starts[-1] < ends[0]

    report = (tmp_path / "reports" / "faults" / "report.md").read_text()
    assert "| DIVERGED |" in report and "| FAILED | 1 |" in report and "injected fault" in report


def test_a_hung_trial_is_stopped_at_its_timeout_and_a_slowly_ending_one_does_not_fail_the_next(ray_local, tmp_path,
                                                                                               mlflow_db, monkeypatch,
                                                                                               capsys):
    """Two faults in one search of 5 trials, one at a time (each takes both CPUs of the shared
    Ray, ray_local), under ASHA.

    ``hang@1 trial=1``: the first trial sleeps for ever after its first epoch. With
    ``search.trial_timeout`` it is failed once its time is up (not retried, although
    max_failures is 1), recorded FAILED "timed out after 20 s" in MLflow and Optuna, and the
    trials after it run; the next can start only once the hung worker is killed (Ray alone
    would wait 600 s for it to stop); without the timeout the search never ends.

    ``slow-exit@0``: every trial takes 2.5 s more to end. ASHA stops trials after their first
    epoch, and Ray then gives the stopped trial's worker to the next trial only if the trial
    function has ended within TUNE_FUNCTION_THREAD_TIMEOUT_S (Ray's default 2 s), failing that
    next trial otherwise ("Could not re-use actor"). A busy machine freeing a model hit this
    in a search. Every other trial must end FINISHED or STOPPED, none FAILED or retried.

    The search runs in this process (both faults are the trials'; a driver process would add
    seconds of imports and nothing this test reads)."""
    import optuna
    from mlflow.tracking import MlflowClient

    from tests.conftest import mtlo_main

    config = {**search_config("hang", examples=64, num_samples=5, scheduler="asha", max_failures=1,
                              trial_timeout=20), "resources": {"cpus_per_trial": 2}}
    config["train"]["epochs"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("MTLO_FAULT", "hang@1 trial=1; slow-exit@0")
    rc, stdout, stderr = mtlo_main("search", "c.yaml", "--json", cwd=tmp_path, capsys=capsys)  # on ray_local
    assert rc == 0, stderr[-3000:]
    result = json.loads(stdout)
    folders, status, runs = numbered(tmp_path, "hang", result)
    errors = {n: r.data.tags.get("mtlo.error") for n, r in runs.items()}
    assert sorted(status) == [1, 2, 3, 4, 5] and status[1] == "FAILED", (status, errors, stderr[-3000:])
    hung = runs[1]
    assert hung.info.status == "FAILED" and "mtlo.retries" not in hung.data.tags, hung.data.tags
    assert hung.data.tags["mtlo.error"] == "timed out after 20 s (search.trial_timeout)", hung.data.tags
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert [m.step for m in client.get_metric_history(hung.info.run_id, "objective")] == [1]  # its epoch before
    rows = [json.loads(line) for line in (folders[1] / "result.json").read_text().splitlines() if line.strip()]
    assert [r.get("epoch") for r in rows] == [1]
    # the slow endings: the scheduler stopped a trial (this seed's trials: always), and no trial
    # after the hung one failed or was retried
    others = {n: s for n, s in status.items() if n != 1}
    assert "STOPPED" in others.values(), status
    assert set(others.values()) <= {"FINISHED", "STOPPED"}, (status, errors, stderr[-3000:])
    assert not any("mtlo.retries" in r.data.tags for r in runs.values())
    study = optuna.load_study(study_name="hang", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE"] * 4 + ["FAIL"], states
