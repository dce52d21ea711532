"""A real two-node Ray cluster started with Ray's own ``ray start``, used through the CLI as a
user would: ``mtlo search --address 127.0.0.1:PORT`` and ``mtlo transfer --address auto``,
with no Ray variable exported to the driver.

The cluster, the driver and all their traffic live in a network namespace of their own
(``ip netns``; the tests run as root), whose only device is loopback: 127.0.0.1, and
10.211.0.1 as the "interface address" Ray 2.60 rewrites a loopback address to (as on a real
machine, where a plain ``ray start --head --node-ip-address=127.0.0.1`` ends up on the
interface address). Nothing can leave it. The cluster runs with Ray's default token
authentication (a token made by ``ray get-auth-token --generate`` in the test's own HOME),
and is stopped by the pids of the namespace's processes.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import named_config

# the tests on a cluster are slow (conftest marks the fixtures that start one); the wrong addresses are not

BIN = Path(sys.executable).parent
PORT = 6379  # a namespace of its own: no port is taken
# 32 tokens: trials long enough that the second node's worker has started before the first
# node's worker, which takes the next trial as each ends, has run all four
CONFIG = named_config("cluster", max_length=32, resources={"cpus_per_trial": 1}, model={"log": False},
                      search={"space": "weights", "num_samples": 4, "objective": "mean_score", "scheduler": "fifo"})


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Namespace:
    """A network namespace with loopback alone (127.0.0.1 and ``ADDRESS``), and an environment
    of its own (HOME, Ray's temp folder) for the commands run in it."""

    ADDRESS = "10.211.0.1"

    def __init__(self) -> None:
        self.name = f"mtlo-{uuid.uuid4().hex[:8]}"
        self.home = Path(tempfile.mkdtemp(prefix="mtlo-ray-"))  # short: Ray's socket paths are limited
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MTLO_FAULT"))}
        self.env.update({"HOME": str(self.home), "RAY_TMPDIR": str(self.home / "tmp"),
                         "MLFLOW_DISABLE_TELEMETRY": "true", "PATH": f"{BIN}:{os.environ.get('PATH', '')}"})
        (self.home / "tmp").mkdir()

    def __enter__(self) -> "Namespace":
        _ip("netns", "add", self.name)
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{self.ADDRESS}/32", "dev", "lo"],
                    ["route", "add", "default", "dev", "lo", "src", self.ADDRESS]):
            _ip("netns", "exec", self.name, "ip", *cmd)
        return self

    def run(self, *cmd: str, cwd: Path | None = None, timeout: float = 300,
            **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.name, *cmd], cwd=cwd, env={**self.env, **env}, text=True,
                              capture_output=True, timeout=timeout)

    def pids(self) -> list[int]:
        out = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids():  # the cluster's processes, and only those: stopped by their pids
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _ip("netns", "delete", self.name)
        shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("this test needs root and iproute2 (`ip netns`) to give the cluster a network of its own")
    with Namespace() as ns:
        token = ns.run(str(BIN / "ray"), "get-auth-token", "--generate", timeout=60)
        assert token.returncode == 0, token.stderr
        head = ns.run(str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}",
                      "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats")
        assert head.returncode == 0, head.stderr[-2000:]
        assert "Token authentication is enabled" in head.stderr + head.stdout  # Ray's default with a token
        # Ray's own `ray start --address` sends the token only when told to (as the driver would
        # have to be, without mtlo)
        worker = ns.run(str(BIN / "ray"), "start", f"--address=127.0.0.1:{PORT}", "--num-cpus=1",
                        "--disable-usage-stats", RAY_AUTH_MODE="token")
        assert worker.returncode == 0, worker.stderr[-2000:]
        yield ns


@pytest.fixture(scope="module")
def loopback_head():
    """A one-node cluster bound to loopback alone, as docs/cluster.md starts one on a shared
    machine: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head --node-ip-address=127.0.0.1``
    (a driver left to Ray's defaults would look for it at the interface address, and retry for
    minutes)."""
    with Namespace() as ns:
        head = ns.run(str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={PORT}",
                      "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
        assert head.returncode == 0, head.stderr[-2000:]
        yield ns


def mtlo(ns: Namespace, workdir: Path, *args: str, timeout: float = 420) -> subprocess.CompletedProcess:
    """``mtlo ARGS`` in the namespace, as its user: HOME (the token's) and Ray's temp folder (where
    ``ray start --head`` wrote its address, which ``auto`` reads) are theirs; no RAY_ variable
    beyond it reaches the driver."""
    return ns.run(sys.executable, "-m", "orchestrator.cli", *args, cwd=workdir, timeout=timeout)


def write(workdir: Path, **extra: object) -> Path:
    data = json.loads(json.dumps(CONFIG))
    data.update(extra)
    data["ray"] = {"storage": str(workdir / "shared")}  # one machine: every node sees this folder
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_search_through_the_cli_runs_on_both_nodes(cluster, tmp_path, mlflow_db):
    """``mtlo search --address 127.0.0.1:PORT`` with no Ray auth or cluster variable set: joins
    the cluster (token auth, a loopback address whose node Ray put on the interface address),
    its trials land on both nodes, and every trial reaches MLflow."""
    from mlflow.tracking import MlflowClient

    write(tmp_path)
    out = mtlo(cluster, tmp_path, "search", "c.yaml", "--address", f"127.0.0.1:{PORT}", "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = [client.get_run(t["run_id"]) for t in result["trials"]]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert len({r.data.tags["mtlo.node_id"] for r in children}) == 2  # both nodes ran trials
    for r in children:
        assert [m.step for m in client.get_metric_history(r.info.run_id, "val/vader/pearson")] == [1, 2]


def test_a_transfer_study_through_the_cli_finds_the_cluster_with_auto(cluster, tmp_path, mlflow_db):
    """``mtlo transfer --address auto``: the cluster is found as Ray finds it (the address file
    of the last ``ray start --head`` under Ray's temp folder) and the study's runs finish."""
    write(tmp_path, name="cluster-transfer", train={**CONFIG["train"], "epochs": 1})
    out = mtlo(cluster, tmp_path, "transfer", "c.yaml", "--address", "auto", "--method", "pairwise", "--seeds", "1",
               "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["cost"]["trials"] == 3 and not result.get("failed_runs"), result


def test_a_search_joins_a_head_bound_to_loopback(loopback_head, tmp_path, mlflow_db):
    write(tmp_path, name="loopback", search={**CONFIG["search"], "num_samples": 2},
          train={**CONFIG["train"], "epochs": 1})
    out = mtlo(loopback_head, tmp_path, "search", "c.yaml", "--address", f"127.0.0.1:{PORT}", "--json",
               timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert [t["status"] for t in json.loads(out.stdout)["trials"]] == ["FINISHED", "FINISHED"]


def test_driver_local_storage_is_refused_on_a_multi_node_cluster(cluster, tmp_path):
    path = write(tmp_path, name="refused")
    data = yaml.safe_load(path.read_text())
    del data["ray"]
    path.write_text(yaml.safe_dump(data))
    out = mtlo(cluster, tmp_path, "search", "c.yaml", "--address", f"127.0.0.1:{PORT}")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.startswith("mtlo: error: ray.storage: the Ray cluster has 2 nodes") and \
        len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was recorded


@pytest.mark.parametrize("address, expect", [
    ("127.0.0.1:1", "no Ray cluster answers at 127.0.0.1:1 (connection refused)"),
    ("nohost.invalid:6379", "no Ray cluster answers at nohost.invalid:6379 (unknown host"),
    ("10.0.0.5", "'10.0.0.5' is not HOST:PORT"),
])
def test_a_wrong_address_fails_in_seconds_with_one_line(tmp_path, address, expect, no_ray, capsys):
    """Refused by mtlo's own check of the address, before Ray is asked (``no_ray``: Ray's
    connecting would fail the test), in seconds, not after Ray's minutes of retries."""
    from tests.conftest import mtlo_main

    write(tmp_path)
    started = time.monotonic()
    rc, _, err = mtlo_main("search", "c.yaml", "--address", address, cwd=tmp_path, capsys=capsys)
    took = time.monotonic() - started
    assert rc == 2 and err.startswith(f"mtlo: error: --address: {expect}"), err
    assert len(err.strip().splitlines()) == 1 and took < 30, (took, err)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "shared").exists()
