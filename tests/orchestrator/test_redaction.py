"""Passwords never leave the URL (orchestrator/redact.py): a search whose MLflow store and
Optuna storage are PostgreSQL URLs with a password (a real server, the ``pgserver`` wheel on a
Unix socket, which takes any password), its report, and an error line that names the store:
the password is in no printed line, MLflow param or tag, artifact, report, log or table row,
as a grep of all of them shows."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from orchestrator.redact import MASK, redact, redact_data
from tests.conftest import mtlo_main, run_mtlo, search_config

PASSWORD = "Hunter2-s3cret"


def test_redact_masks_passwords_in_urls_and_secret_query_values_and_nothing_else():
    assert redact("postgresql+psycopg2://bob:Hunter2@db.example:5432/ml?sslmode=require") == \
        f"postgresql+psycopg2://bob:{MASK}@db.example:5432/ml?sslmode=require"
    assert redact("failed: http://u:p%40ss@host/x and https://a:b@c") == \
        f"failed: http://u:{MASK}@host/x and https://a:{MASK}@c"
    assert redact("mysql://root:@h/db") == "mysql://root:@h/db"  # no password: nothing to hide
    assert redact("https://host/api?token=abc&x=1;password=pw") == \
        f"https://host/api?token={MASK}&x=1;password={MASK}"
    assert redact("sqlite:///mlflow.db and http://127.0.0.1:5000") == "sqlite:///mlflow.db and http://127.0.0.1:5000"
    assert redact_data({"mlflow": {"tracking_uri": "http://u:pw@h"}, "n": [1, "x://a:b@c"]}) == \
        {"mlflow": {"tracking_uri": f"http://u:{MASK}@h"}, "n": [1, f"x://a:{MASK}@c"]}


@pytest.fixture(scope="module")
def postgres():
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="mtlo-pg-"))  # short: a Unix socket's path is limited
    server = pgserver.get_server(str(folder / "db"), cleanup_mode="stop")
    for name in ("store", "optuna"):
        server.psql(f"create database {name};")
    yield folder / "db"
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


def _dump(url: str) -> str:
    """Every row of every table of a database, as text."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    out = []
    with engine.connect() as conn:
        for table in sqlalchemy.inspect(conn).get_table_names():
            out += [repr(tuple(row)) for row in conn.execute(sqlalchemy.text(f'select * from "{table}"'))]
    engine.dispose()
    return "\n".join(out)


@pytest.mark.slow
def test_a_password_in_both_urls_is_nowhere_mtlo_writes(ray_local, postgres, tmp_path, capsys):
    store = f"postgresql+psycopg2://postgres:{PASSWORD}@/store?host={postgres}"
    optuna = f"postgresql+psycopg2://postgres:{PASSWORD}@/optuna?host={postgres}"
    cfg = search_config("secret", tracking_uri=store, log_model=True, examples=48, num_samples=2, storage=optuna)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    logs = Path(os.environ["MTLO_CACHE_DIR"]) / "logs"
    before = set(logs.glob("*")) if logs.is_dir() else set()
    runs = [run_mtlo(tmp_path, "search", "c.yaml", ray=ray_local)]
    for args in (("--tracking-uri", store, "--runs-table", "runs.csv"),  # the reports: in this process
                 ("--tracking-uri", store.replace("/store?", "/nosuchdb?"))):
        rc, out, err = mtlo_main("report", "secret", *args, cwd=tmp_path, capsys=capsys)
        runs.append(subprocess.CompletedProcess(["mtlo", "report"], rc, out, err))
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    assert runs[1].returncode == 0, runs[1].stderr[-3000:]
    # a database that cannot be used: one line at once (not MLflow's 100 s of retries), the URL masked
    assert runs[2].returncode == 2 and runs[2].stderr.strip().splitlines() == [
        f"mtlo: error: --tracking-uri: the database at postgresql+psycopg2://postgres:***@/nosuchdb?host={postgres} "
        "cannot be used: " + runs[2].stderr.split("cannot be used: ", 1)[-1].strip()], runs[2].stderr
    assert 'database "nosuchdb" does not exist' in runs[2].stderr
    printed = "\n".join(r.stdout + r.stderr for r in runs)
    assert "optuna-dashboard postgresql+psycopg2://postgres:***@" in printed  # the commands shown, masked
    assert PASSWORD not in printed
    # every file written under the working folder (reports, artifacts, the runs table, Ray's trial
    # results) but the user's own config and Ray's pickled resume state (it must reconnect to the
    # Optuna storage: docs/security.md), and every crash log
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix not in (".pkl",) and p.name != "c.yaml"]
    written += [p for p in (set(logs.glob("*")) if logs.is_dir() else set()) - before]
    assert any(p.name == "report.md" for p in written) and any(p.name == "config.yaml" for p in written)
    leaked = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
    assert leaked == []
    # every param, tag, dataset and run row of the MLflow store, and the Optuna study's database
    for url in (store, optuna):
        rows = _dump(url)
        assert rows and PASSWORD not in rows
    assert "postgres:***@" in _dump(store)  # the stored config and tags keep the masked URL


def test_a_database_store_that_cannot_be_used_is_one_line_at_once(tmp_path, capsys, monkeypatch):
    """A SQL tracking store nobody answers at: refused in one line, the password masked, after one
    connection attempt (MLflow's own first connection, never reached, retries for about 100 s)."""
    import mlflow.store.db.utils as db_utils

    from tests.conftest import free_port, mtlo_main

    def retried(uri):  # noqa: ANN001, ANN202
        raise AssertionError("MLflow's connection with retries was reached")

    monkeypatch.setattr(db_utils, "create_sqlalchemy_engine_with_retry", retried)
    uri = f"postgresql+psycopg2://mtlo:{PASSWORD}@127.0.0.1:{free_port()}/store"
    rc, _, err = mtlo_main("report", "any", "--tracking-uri", uri, cwd=tmp_path, capsys=capsys)
    line = err.strip()
    assert rc == 2 and line.startswith("mtlo: error: --tracking-uri: the database at "
                                       "postgresql+psycopg2://mtlo:***@127.0.0.1:"), err
    assert "cannot be used: " in line and "\n" not in line and PASSWORD not in line
