"""Searches recorded by a real ``mlflow server`` on a real PostgreSQL (the ``pgserver`` wheel,
on a Unix socket), on 127.0.0.1, whose database stops mid-search while the server goes on
answering (/health passes, every write fails with HTTP 503): the search goes on, ends with
one line (exit 1) that says how to continue, and once the database is back ``--resume``
fills every gap; or the database comes back while the search runs, and what MLflow missed is
written then, not at the end. Either way every metric Ray saw reaches MLflow once."""

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import free_port, mtlo_main, search_config
from tests.services import (
    SERIES,
    Server,
    assert_every_metric_in_mlflow,
    finish,
    mtlo,
    ray_rows,
    wait_for_a_finished_trial,
)

pytestmark = pytest.mark.slow

class Postgres:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mtlo-pg-"))  # short: a Unix socket's path is limited
        self.server = None

    def start(self) -> None:
        import pgserver

        self.server = pgserver.get_server(str(self.folder / "db"), cleanup_mode="stop")

    def stop(self) -> None:
        self.server.cleanup()

    @property
    def uri(self) -> str:  # SQLAlchemy 2.1 takes postgresql:// for psycopg 3; pgserver pairs with psycopg2
        return self.server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)


@pytest.fixture(scope="module")
def postgres():
    db = Postgres()
    db.start()
    yield db
    db.stop()
    shutil.rmtree(db.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_on_postgres(postgres, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("mlflow-pg"), free_port(), backend=postgres.uri)
    srv.start()
    yield srv
    srv.kill()


def test_the_database_stops_mid_search_and_resume_fills_every_gap(ray_local, postgres, mlflow_on_postgres,
                                                                 tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_on_postgres.uri)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("pg-down", tracking_uri=mlflow_on_postgres.uri)))
    proc = mtlo(tmp_path, "search", "c.yaml", ray=ray_local)
    wait_for_a_finished_trial(client, "pg-down", proc)  # then the database stops
    postgres.stop()
    try:
        with __import__("urllib.request").request.urlopen(f"{mlflow_on_postgres.uri}/health", timeout=5) as r:
            assert r.status == 200  # the server answers its probe: only its store is gone
        rc, _, err = finish(proc)
    finally:
        postgres.start()
    lines = err.strip().splitlines()
    assert rc == 1, err[-3000:]
    assert sum("MLflow write failed" in line for line in lines) == 1, err[-3000:]  # said once; the search went on
    assert lines[-1].startswith("mtlo: error: mlflow.tracking_uri: the MLflow server at ") and \
        "its store does not (HTTP 503" in lines[-1] and "--resume" in lines[-1], lines[-1]
    assert "Traceback" not in err
    assert sorted(len(r) for r in ray_rows(tmp_path, "pg-down").values()) == [3, 3, 3]  # Ray kept every epoch

    # the resume, in this process (on its Ray, ray_local)
    rc, out, err = mtlo_main("search", "c.yaml", "--resume", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, err[-3000:]
    assert len(json.loads(out)["trials"]) == 3  # stdout holds only the JSON (no MLflow "View run" lines)
    assert assert_every_metric_in_mlflow(client, tmp_path, "pg-down") == 3 * 3 * len(SERIES)


def test_the_database_back_mid_search_is_caught_up_before_the_end(ray_local, postgres, mlflow_on_postgres,
                                                                  tmp_path):
    """The database stops once the first trial has finished and is back 6 s later, while the
    search goes on: the outage is said once, the return once, and what MLflow missed is written
    as soon as it answers (probed every 2 s: ``mlflow.retry_every_s``), not at the end: every
    per-epoch point is in MLflow once, written before the search's end, which then has none to
    write (it would say how many)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_on_postgres.uri)
    config = search_config("pg-back", tracking_uri=mlflow_on_postgres.uri, num_samples=6)
    config["mlflow"]["retry_every_s"] = 2
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    proc = mtlo(tmp_path, "search", "c.yaml", ray=ray_local)
    wait_for_a_finished_trial(client, "pg-back", proc)
    postgres.stop()
    time.sleep(6)  # longer than MLflow's own retries of a request (3 s): writes fail, and points go missing
    postgres.start()
    rc, _, err = finish(proc)
    lines = err.strip().splitlines()
    assert rc == 0, err[-3000:]
    assert sum("MLflow write failed" in line for line in lines) == 1, err[-3000:]
    assert sum("MLflow answers again" in line for line in lines) == 1, err[-3000:]
    assert "MLflow had missed" not in err, err[-3000:]  # nothing was left for the end of the search to fill
    exp = client.get_experiment_by_name("pg-back")
    runs = client.search_runs([exp.experiment_id], "tags.`mtlo.role` = 'trial'")
    assert len(runs) == 6 and all(r.data.tags["mtlo.status"] == "FINISHED" for r in runs)
    points = {r.info.run_id: {k: client.get_metric_history(r.info.run_id, k) for k in SERIES} for r in runs}
    for history in points.values():
        assert all(sorted(m.step for m in h) == [1, 2, 3] for h in history.values()), history

