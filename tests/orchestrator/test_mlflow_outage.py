"""A tracking server that goes down mid-search (a real ``mlflow server`` on loopback, killed).

The search goes on without it (Ray keeps every result), ends with one line that says how to
continue (exit 1), and once the server is back ``--resume`` writes everything MLflow missed:
every trial's every epoch, once. (A server that is down at the start is refused before Ray
starts: the corpus case tests/bad_inputs/config_mlflow_server_down.yaml.)
"""

import os
import signal

import pytest
import yaml

from tests.conftest import copy_store, free_port, mtlo_main, search_config
from tests.services import Server, mtlo, wait_for_a_finished_trial

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path, store_template):
    copy_store(store_template, tmp_path, "server.db")  # the server's store, its tables made
    srv = Server(tmp_path, free_port())
    srv.start()
    yield srv
    srv.kill()


def test_server_down_mid_search_loses_nothing(ray_local, tmp_path, server, capsys):
    config = search_config("outage", tracking_uri=server.uri)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)

    def children() -> dict[str, object]:
        exp = client.get_experiment_by_name("outage")
        if exp is None:
            return {}
        return {r.data.tags["mtlo.trial_id"]: r for r in client.search_runs(
            [exp.experiment_id], "tags.`mtlo.role` = 'trial'")}

    proc = mtlo(tmp_path, "search", "c.yaml", ray=ray_local)
    try:
        wait_for_a_finished_trial(client, "outage", proc)  # the server goes down once the first trial has finished
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
    rc, _, err = mtlo_main("search", "c.yaml", "--resume", cwd=tmp_path, capsys=capsys)  # in this process
    assert rc == 0, err[-3000:]
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

