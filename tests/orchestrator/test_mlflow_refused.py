"""A tracking store that refuses mtlo mid-search: an authenticating server whose password
changes (HTTP 401), a sqlite store another process holds locked. Each is an outage: the
search goes on, says so once, ends with one line and --resume (exit 1), and --resume fills
every gap. (In a file of its own so that the test runner can spread the server-backed
searches over its workers.)"""

import os

import pytest
import yaml

from tests.conftest import copy_store, free_port, mtlo_main, search_config
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


def test_credentials_refused_mid_search_are_an_outage_with_the_resume_line(ray_local, tmp_path, store_template,
                                                                           monkeypatch, capsys):
    """A real authenticating server (MLflow's basic-auth app). Wrong credentials at the start:
    refused before Ray starts (exit 2, one line). Right ones, then the password changed
    mid-search (every request of the search now answered 401): the search goes on, ends with
    one line naming the refusal and --resume (exit 1); with the new password, --resume fills
    every gap."""
    import requests
    from mlflow.tracking import MlflowClient

    password, rotated = "Right-pass-123", "Rotated-pass-456"
    copy_store(store_template, tmp_path / "srv", "server.db")  # the server's store, its tables made
    # MLflow's own opt-in cache of checked credentials (its password hash costs 0.3 s a request
    # here); a password changed through the API is dropped from it at once (one worker)
    ini = tmp_path / "srv" / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///basic_auth.db\n"
                   "admin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                   "auth_cache_ttl_seconds = 600\n")
    srv = Server(tmp_path / "srv", free_port(), None, "--app-name", "basic-auth", MLFLOW_AUTH_CONFIG_PATH=str(ini),
                 MLFLOW_AUTH_ADMIN_PASSWORD=password, MLFLOW_FLASK_SERVER_SECRET_KEY="mtlo-test-secret")
    srv.start()
    try:
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("auth", tracking_uri=srv.uri)))
        with monkeypatch.context() as env:  # refused before anything starts: in this process
            env.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            env.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
            rc, _, err = mtlo_main("search", "c.yaml", cwd=tmp_path, capsys=capsys)
        assert rc == 2 and err.strip() == (f"mtlo: error: mlflow.tracking_uri: the MLflow server at {srv.uri} "
                                           "refused mtlo's request (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
                                           "MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN"), err
        assert not (tmp_path / "ray_results").exists()

        creds = {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}
        proc = mtlo(tmp_path, "search", "c.yaml", ray=ray_local, **creds)
        os.environ.update(creds)
        try:
            wait_for_a_finished_trial(MlflowClient(srv.uri), "auth", proc)
        finally:
            for k in creds:
                os.environ.pop(k)
        answer = requests.patch(f"{srv.uri}/api/2.0/mlflow/users/update-password", auth=("admin", password),
                                json={"username": "admin", "password": rotated, "current_password": password},
                                timeout=10)
        assert answer.ok, answer.text
        rc, _, err = finish(proc)
        lines = err.strip().splitlines()
        assert rc == 1 and sum("MLflow write failed" in line for line in lines) == 1, err[-3000:]
        assert lines[-1].startswith(f"mtlo: error: mlflow.tracking_uri: the MLflow server at {srv.uri} refused "
                                    "mtlo's request (HTTP 401)") and "--resume" in lines[-1], lines[-1]
        assert "Traceback" not in err and sorted(len(r) for r in ray_rows(tmp_path, "auth").values()) == [3, 3, 3]

        creds["MLFLOW_TRACKING_PASSWORD"] = rotated
        with monkeypatch.context() as env:  # the resume, in this process (on its Ray, ray_local)
            for k, v in creds.items():
                env.setenv(k, v)
            rc, _, err = mtlo_main("search", "c.yaml", "--resume", cwd=tmp_path, capsys=capsys)
        assert rc == 0, err[-3000:]
        os.environ.update(creds)
        try:
            assert assert_every_metric_in_mlflow(MlflowClient(srv.uri), tmp_path, "auth") == 3 * 3 * len(SERIES)
        finally:
            for k in creds:
                os.environ.pop(k)
    finally:
        srv.kill()


def test_a_locked_sqlite_store_is_an_outage_with_the_resume_line(ray_local, tmp_path, mlflow_db, capsys):
    """Another process holds the sqlite store's write lock (``BEGIN EXCLUSIVE``) from the end of
    the first trial until the search ends: "database is locked" on every write. The search goes
    on, ends with one line and --resume (exit 1), and --resume fills every gap once the lock is
    given back."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("locked")))
    proc = mtlo(tmp_path, "search", "c.yaml", ray=ray_local)
    wait_for_a_finished_trial(MlflowClient(uri), "locked", proc)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        rc, _, err = finish(proc)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    lines = err.strip().splitlines()
    assert rc == 1 and sum("MLflow write failed" in line for line in lines) == 1, err[-3000:]
    assert lines[-1].startswith(f"mtlo: error: mlflow.tracking_uri: the sqlite file {tmp_path / 'mlflow.db'} "
                                "cannot be written (database is locked)") and "--resume" in lines[-1], lines[-1]
    assert "Traceback" not in err and sorted(len(r) for r in ray_rows(tmp_path, "locked").values()) == [3, 3, 3]
    rc, _, err = mtlo_main("search", "c.yaml", "--resume", cwd=tmp_path, capsys=capsys)  # in this process
    assert rc == 0, err[-3000:]
    assert "MLflow had missed" in err  # the resume's sync wrote the gaps, and says so
    assert assert_every_metric_in_mlflow(MlflowClient(uri), tmp_path, "locked") == 3 * 3 * len(SERIES)
