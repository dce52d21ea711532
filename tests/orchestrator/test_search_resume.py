"""A search whose driver is stopped (Ctrl-C) or killed (SIGKILL) continues with ``--resume``:
finished trials are not rerun, the same parent run continues, no child run is duplicated, and
a trial that was running continues from its last epoch's checkpoint."""

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_mtlo, search_config

pytestmark = pytest.mark.slow

CONFIG = search_config("resume", log_model=True)


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


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def run(workdir: Path, ray: str, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return run_mtlo(workdir, "search", "c.yaml", *args, fault=fault, ray=ray)


def test_driver_stopped_at_four_points_resumes_without_losing_or_repeating_work(ray_local, tmp_path, mlflow_db,
                                                                                 monkeypatch):
    """Ctrl-C (MTLO_FAULT=sigint@..., SIGINT to the process group as a terminal sends it) during
    the first trial: exit 130 with the resume line, the running trial left open. Then SIGKILL
    (driver@...) during that trial again, mid-search (2 trials done) and while the report is
    written; after each, ``--resume``; then a final ``--resume`` completes.

    On the way to the report, Ray Tune stops the search on a Ray error once (Ray Tune 2.60 stops
    the whole search when Ray's memory monitor kills a trial's worker; MTLO_FAULT=tune-crash
    raises its exception from the controller as the last trial ends): mtlo restores the search
    from its saved state in the same command and goes on, the trial that had just finished not
    retried."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG))
    monkeypatch.setenv("MTLO_FAULT_DIR", str(tmp_path))
    db = tmp_path / "mlflow.db"
    report = tmp_path / "reports" / "resume"
    seen: dict[str, tuple[str, int]] = {}
    for args, fault, expect in [((), "sigint@first-result", {"RUNNING": 1}),
                                (("--resume",), "driver@first-result", {"RUNNING": 1}),
                                (("--resume",), "driver@trials=2", {"FINISHED": 2}),
                                (("--resume",), "tune-crash@trials=1 times=1; driver@report", {"FINISHED": 3}),
                                (("--resume", "--json"), None, {"FINISHED": 3})]:
        out = run(tmp_path, ray_local, *args, fault=fault)
        if fault and fault.startswith("sigint"):
            assert out.returncode == 130, (fault, out.returncode, out.stderr[-2000:])
            said = out.stderr.strip().splitlines()
            assert said[-1] == "mtlo: interrupted: what finished is recorded; run the same command with --resume " \
                "to go on" and "Traceback" not in out.stderr, out.stderr[-2000:]
            parent = sqlite3.connect(db).execute("select status from runs where run_uuid in (select run_uuid from "
                                                 "tags where key='mtlo.role' and value='search')").fetchall()
            assert parent == [("KILLED",)]  # until --resume sets it running again
        elif fault:
            assert out.returncode == -signal.SIGKILL, (fault, out.returncode, out.stderr[-2000:])
        else:
            assert out.returncode == 0, out.stderr[-3000:]
            done = json.loads(out.stdout)  # a real process's stdout holds only the JSON
            assert done["name"] == "resume" and len(done["trials"]) == 3
        rows = {rid: (status, n) for rid, status, n in children(db)}
        statuses = [s for s, _ in rows.values()]
        assert {s: statuses.count(s) for s in expect} == expect, (fault, rows)
        for rid, (status, n) in seen.items():  # no child run lost; finished ones never touched again
            assert rid in rows and (status != "FINISHED" or rows[rid] == (status, n)), (fault, rid)
        seen = rows
        if fault and "tune-crash" in fault:  # it fired once, and the command went on by itself to its report
            assert (tmp_path / "search-tune-crash").read_text() == "1"
            said = " ".join(out.stderr.split())
            assert "Ray Tune stopped on a Ray error (OutOfMemoryError: injected fault" in said, said[-2000:]
            assert "going on from the saved state, as --resume would (1 of 3)" in said
            assert "failed" not in said.lower().replace("0 failed", "")  # the trial just finished: not retried
        if fault and fault.endswith("driver@report"):  # killed while report.json was being written, half on disk
            assert (report / "report.md").read_text().startswith("# Search") and not (report / "report.json").exists()
            [half] = report.glob(".report.json.*.tmp")  # mkstemp's name: never one given in advance
            partial = half.read_text()
            assert partial.startswith("{") and not _is_json(partial)  # the kill landed inside the write
    assert len(seen) == 3  # three trials, each one child run: none duplicated
    # Ray's own per-trial results (what MLflow's de-duplication cannot hide): no finished trial
    # trained again, no trial that had reached epoch 2 restarted from epoch 1; an epoch reported
    # just before a stop may be reported again by the resumed trial (Ray Tune registers an
    # epoch's checkpoint after the callbacks that see its result, where the faults fire), never
    # an earlier one, and at most once per stop
    folders = sorted((tmp_path / "ray_results" / "resume" / "search").glob("trainable_*"))
    assert len(folders) == 3
    for folder in folders:
        rows = map(json.loads, (folder / "result.json").read_text().splitlines())
        epochs = [r["epoch"] for r in rows if "epoch" in r]
        assert set(epochs) == {1, 2, 3} and len(epochs) <= 3 + 4, (folder.name, epochs)
        assert all(b >= a for a, b in zip(epochs, epochs[1:])), (folder.name, epochs)
    for rid, (status, n) in seen.items():
        assert status == "FINISHED" and n == 3, (rid, status, n)  # each epoch logged exactly once
    con = sqlite3.connect(db)
    parents = con.execute("select run_uuid, status from runs where run_uuid in (select run_uuid from tags "
                          "where key='mtlo.role' and value='search')").fetchall()
    con.close()
    assert len(parents) == 1 and parents[0][1] == "FINISHED"  # the same parent run continued, and ended
    assert json.loads((report / "report.json").read_text())["status"] == "FINISHED"
    assert not list(report.glob(".report.json.*.tmp"))  # the half-written temporary file was cleared
    # all finished: checkpoints given back but for the best trial's weights (model.keep: 1)
    assert [p.name for p in (tmp_path / "ray_results").rglob("checkpoint_*/*")] == ["model.pt"]
    from mlflow.tracking import MlflowClient

    artifacts = {a.path for a in MlflowClient(f"sqlite:///{db}").list_artifacts(parents[0][0], "report")}
    assert {"report/report.md", "report/report.json"} <= artifacts
    # the Optuna study on disk went on through the kills: each trial told once, with its best epoch's value
    import optuna

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    client = MlflowClient(f"sqlite:///{db}")
    best = sorted(client.get_run(rid).data.metrics["best/objective"] for rid in seen)
    assert sorted(t.value for t in told) == pytest.approx(best, abs=1e-9), (told, best)
    assert len({json.dumps(t.params, sort_keys=True) for t in told}) == 3
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("mtlo.orphan") for t in others), others
