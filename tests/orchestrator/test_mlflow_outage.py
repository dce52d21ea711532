"""A tracking server that goes down mid-search (a real ``mlflow server`` on loopback, killed).

The search goes on without it (Ray keeps every result), ends with one line that says how to
continue (exit 1), and once the server is back ``--resume`` writes everything MLflow missed:
every trial's every epoch, once. (A server that is down at the start is refused before Ray
starts: the corpus case tests/bad_inputs/config_mlflow_server_down.yaml.)
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, search_config

pytestmark = pytest.mark.slow


SERIES = ("val/rt/accuracy", "val/vader/pearson", "train/rt/loss", "train/vader/loss", "objective")


class Server:
    """A real ``mlflow server`` on 127.0.0.1 (one worker, no job runner), stopped by its pid;
    ``backend``: its store (default: a sqlite file in ``folder``)."""

    def __init__(self, folder: Path, port: int, backend: str | None = None, *args: str, **env: str) -> None:
        self.folder, self.port, self.proc = folder, port, None
        self.backend = backend or f"sqlite:///{folder / 'server.db'}"
        self.args, self.env = args, env

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers",
             "1", "--backend-store-uri", self.backend, "--artifacts-destination",
             str(self.folder / "artifacts"), *self.args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=self.folder)  # the auth app keeps basic_auth.db in its working folder
        deadline = time.time() + 180
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def ray_rows(workdir: Path, name: str) -> dict[str, list[dict]]:
    """Each trial's results as Ray wrote them (result.json), by trial id."""
    out = {}
    for folder in (workdir / "ray_results" / name / "search").glob("trainable_*"):
        rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines() if line.strip()]
        out[rows[0]["trial_id"]] = rows
    return out


def assert_every_metric_in_mlflow(client, workdir: Path, name: str) -> int:
    """Every per-epoch value of every series in Ray's result files is in MLflow once, equal.
    Returns how many points were compared."""
    exp = client.get_experiment_by_name(name)
    runs = {r.data.tags["mtlo.trial_id"]: r for r in client.search_runs([exp.experiment_id],
                                                                        "tags.`mtlo.role` = 'trial'")}
    rows = ray_rows(workdir, name)
    assert set(runs) == set(rows) and len(rows) == 3
    compared = 0
    for tid, trial_rows in rows.items():
        run = runs[tid]
        assert run.info.status == "FINISHED" and run.data.tags["mtlo.status"] == "FINISHED", (tid, run.data.tags)
        for key in SERIES:
            history = client.get_metric_history(run.info.run_id, key)
            assert sorted(m.step for m in history) == [r["epoch"] for r in trial_rows], (tid, key)
            logged = {m.step: m.value for m in history}
            for r in trial_rows:
                assert logged[r["epoch"]] == pytest.approx(r[key], rel=1e-6), (tid, key, r["epoch"])
                compared += 1
    parent = client.search_runs([exp.experiment_id], "tags.`mtlo.role` = 'search'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    return compared


def mtlo(workdir: Path, *args: str, **extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MTLO_FAULT"}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", **extra})
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, out, err


def wait_for_a_finished_trial(client, name: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        exp = client.get_experiment_by_name(name)
        runs = client.search_runs([exp.experiment_id], "tags.`mtlo.role` = 'trial'") if exp else []
        if any(r.data.tags.get("mtlo.status") == "FINISHED" for r in runs):
            return
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.5)
    pytest.fail("the first trial never finished")


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, free_port())
    srv.start()
    yield srv
    srv.kill()


def test_server_down_mid_search_loses_nothing(tmp_path, server):
    config = search_config("outage", tracking_uri=server.uri)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MTLO_FAULT", None)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)

    def children() -> dict[str, object]:
        exp = client.get_experiment_by_name("outage")
        if exp is None:
            return {}
        return {r.data.tags["mtlo.trial_id"]: r for r in client.search_runs(
            [exp.experiment_id], "tags.`mtlo.role` = 'trial'")}

    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "search", "c.yaml"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:  # the server goes down once the first trial has finished
            if any(r.data.tags.get("mtlo.status") == "FINISHED" for r in children().values()):
                break
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("the first trial never finished")
        server.kill()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, err[-3000:]
    assert "MLflow write failed" in err  # said once, when it happened; the search went on
    last = err.strip().splitlines()[-1]
    assert last.startswith("mtlo: error: mlflow.tracking_uri:") and "--resume" in last, last
    rows = {p.name: (p / "result.json").read_text().count("\n")
            for p in (tmp_path / "ray_results" / "outage" / "search").glob("trainable_*")}
    assert sorted(rows.values()) == [3, 3, 3], rows  # Ray kept every epoch of every trial

    server.start()  # back, same store
    again = subprocess.run([sys.executable, "-m", "orchestrator.cli", "search", "c.yaml", "--resume"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    runs = children()
    assert len(runs) == 3
    for tid, run in runs.items():
        assert run.data.tags["mtlo.status"] == "FINISHED" and run.info.status == "FINISHED", tid
        for key in ("val/rt/accuracy", "val/vader/pearson", "train/rt/loss", "objective"):
            assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], (tid, key)
        assert "best/objective" in run.data.metrics
    parent = client.search_runs([client.get_experiment_by_name("outage").experiment_id],
                                "tags.`mtlo.role` = 'search'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent[0].info.run_id, "report")} >= {"report/report.md"}

