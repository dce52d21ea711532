"""Real services the end-to-end tests share, and what they read back: an ``mlflow server`` on
loopback, ``mtlo`` as a process, Ray's own result files, the listening sockets of a process
tree. Fixtures that start them are in conftest.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from orchestrator.runtime import address


def listening(root: psutil.Process) -> set[tuple[str, int, str]]:
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return set()
    found = set()
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    found.add((c.laddr.ip, c.laddr.port, p.name()))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


is_loopback = address.is_loopback  # the product's own test of an address (IPv4 mapped into IPv6 included)


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


def mtlo(workdir: Path, *args: str, ray: str | None = None, **extra: str) -> subprocess.Popen:
    """``mtlo ARGS`` started in its own process group, its output piped; ``ray``: the address of
    a running Ray (``ray_local``) it joins; ``extra``: environment variables."""
    args = (*args, "--address", ray) if ray else args
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
