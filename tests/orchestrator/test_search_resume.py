"""A search whose driver is killed (SIGKILL) continues with ``--resume``: finished trials are
not rerun, the same parent run continues, no child run is duplicated, and a trial that was
running continues from its last epoch's checkpoint."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

CONFIG = {
    "name": "resume",
    "encoder": {"model": "builtin:tiny-random", "max_length": 32},
    "tasks": {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"}},
    "train": {"epochs": 3, "batch_size": 16, "max_train_examples": 96, "max_eval_examples": 32, "lr": 1e-3},
    "search": {"space": "weights", "num_samples": 3, "objective": "mean_score", "max_concurrent": 1,
               "scheduler": "fifo"},
    "mlflow": {"tracking_uri": "sqlite:///mlflow.db", "experiment": "resume"},
}


def mtlo(workdir: Path, *args: str, **kw):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_AIR_NEW_OUTPUT": "0"}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "search", "c.yaml", *args], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def children(db: Path) -> list[tuple[str, str, int]]:
    """(run id, mtlo.status, number of val/rt/accuracy points) of every child run."""
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        rows = con.execute(
            "select r.run_uuid, (select value from tags where run_uuid=r.run_uuid and key='mtlo.status'), "
            "(select count(*) from metrics where run_uuid=r.run_uuid and key='val/rt/accuracy') "
            "from runs r where exists (select 1 from tags t where t.run_uuid=r.run_uuid "
            "and t.key='mtlo.role' and t.value='trial')").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()
    return rows


def test_killed_driver_resumes_without_losing_or_repeating_work(tmp_path):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    db = tmp_path / "mlflow.db"
    proc = mtlo(tmp_path)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once one trial finished and the next has reported an epoch
        rows = children(db)
        if any(s == "FINISHED" for _, s, _ in rows) and any(s == "RUNNING" and n >= 1 for _, s, n in rows):
            break
        if proc.poll() is not None:
            pytest.fail(f"search ended before it could be killed: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    else:
        pytest.fail("search never reached its second trial")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {rid: (status, n) for rid, status, n in children(db)}
    finished_before = {rid for rid, (status, _) in before.items() if status == "FINISHED"}

    again = mtlo(tmp_path, "--resume")
    out, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    after = {rid: (status, n) for rid, status, n in children(db)}
    assert len(after) == 3  # three trials, each one child run: none duplicated
    assert set(before) <= set(after)  # the same child runs continued
    for rid in finished_before:
        assert after[rid] == before[rid]  # finished trials were not rerun
    for rid, (status, n) in after.items():
        assert status == "FINISHED" and n == 3, (rid, status, n)  # each epoch logged exactly once
    con = sqlite3.connect(db)
    parents = con.execute("select count(*) from tags where key='mtlo.role' and value='search'").fetchone()[0]
    con.close()
    assert parents == 1  # the same parent run continued
