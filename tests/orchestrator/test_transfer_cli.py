"""``mtlo transfer`` through its command line: a surrogate study, ``--json`` with a diverged
run and the runs table, Ctrl-C and ``--resume``, and bad arguments refused in one line. (In a
file of its own so that the test runner can spread the study tests over its workers.)"""

import json

import pytest

from tests.conftest import study_file as write


def test_surrogate_study_through_the_cli(ray_local, tmp_path, mlflow_db, monkeypatch, capsys):
    """``mtlo transfer --method surrogate --runs 3``: every task alone and the 3 subsets Optuna
    proposes, each task's model fitted, the proposed groups trained to confirm them, the
    model in ``--json``, on the parent run and in the report."""
    from mlflow.tracking import MlflowClient

    from orchestrator.transfer.surrogate import propose_subsets
    from tests.conftest import mtlo_main

    tasks = {"rt": {"source": "builtin:rt_polarity"}, "vader": {"source": "builtin:vader_movies"},
             "sms": {"source": "builtin:sms_spam"}, "trec": {"source": "builtin:trec_coarse"}}
    path = write(tmp_path, name="sur", tasks=tasks)
    rc, stdout, stderr = mtlo_main("transfer", str(path), "--method", "surrogate", "--runs", "3", "--seeds", "1",
                                   "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, stderr[-3000:]
    out = json.loads(stdout)
    sampled = propose_subsets(list(tasks), 3, seed=0)
    assert len(sampled) == 3 and all(len(g) >= 2 for g in sampled)
    trained = {tuple(r["group"]) for r in out["runs"]}
    first = {(t,) for t in tasks} | set(sampled)
    assert first <= trained and out["cost"]["planned"] == 7
    # the proposal came from the surrogate's estimates; the groups it proposed were trained
    assert out["proposed"]["method"] == "surrogate (estimated)" and out["grouping"]["confirmed"] is True
    assert all(tuple(sorted(g)) in trained for g in out["proposed"]["groups"])
    assert trained - first <= {tuple(sorted(g)) for g in out["proposed"]["groups"]}
    fit = out["surrogate"]
    seen = {t for g in trained if len(g) > 1 for t in g}  # a task in some trained subset has a model
    assert set(fit["tasks"]) == seen and out["estimator"] is None
    for t, m in fit["tasks"].items():
        assert set(m["coefficients"]) == (set(tasks) - {t}) | {"size"}
        assert all(isinstance(c["predicts"], float) for c in m["coefficients"].values())
    assert fit["cv"]["subsets"] == len([g for g in trained if len(g) > 1])
    # every group of two or more tasks not trained is estimated by the model (and says so)
    est = {(g["task"], tuple(g["group"])) for g in out["estimated_gains"]}
    assert est and all(g not in trained for _, g in est) and all(g["estimated"] for g in out["estimated_gains"])
    assert all(g["p_adjusted"] is None or g["p_adjusted"] >= g["p"] for g in out["gains"])
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_run(out["parent_run_id"]).data.params["transfer.runs"] == "3"
    report = (tmp_path / "reports" / "sur" / "report.md").read_text()
    assert "## Surrogate model (estimated)" in report and "| task ↓ / with → |" in report
    assert "Groups proposed from the model:" in report


@pytest.mark.parametrize(("args", "said"), [
    (["--method", "nope"], "--method"),
    (["--method", "pairwise", "--groups", "rt+sms"], "not allowed with argument --method"),
    (["--groups", "rt+nope"], "groups: rt+nope: no task 'nope' in the config"),
    (["--groups", "rt,,sms"], "groups: (empty): an empty task set"),
    (["--method", "surrogate", "--runs", "0"], "--runs: must be at least 1, got 0"),
    (["--method", "surrogate", "--runs", "2"], "--runs: 2 tasks have 1 subset of two or more tasks, asked for 2"),
    (["--method", "pairwise", "--runs", "3"],
     "--runs: only a method that samples task subsets takes it (the method is pairwise)")])
def test_cli_transfer_refuses_bad_arguments_with_one_line(args, said, tmp_path, capsys):
    from tests.conftest import mtlo_main

    path = write(tmp_path, name="cli", tasks={"rt": {"source": "builtin:rt_polarity"},
                                              "sms": {"source": "builtin:sms_spam"}})
    rc, out, err = mtlo_main("transfer", str(path), *args, cwd=tmp_path, capsys=capsys)
    assert rc == 2 and said in err and "Traceback" not in err and out == "", err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_cli_transfer_json(ray_local, tmp_path, mlflow_db, monkeypatch, capsys):
    """``mtlo transfer --groups ... --json`` in this process, on the module's Ray (stdout holding
    only JSON in a real process: the killed-study test's ``--resume --json``)."""
    from tests.conftest import mtlo_main

    path = write(tmp_path, name="cli", tasks={"rt": {"source": "builtin:rt_polarity"},
                                              "sms": {"source": "builtin:sms_spam"}})
    # rt and sms alone, then rt+sms: the pair's loss turns NaN after its first epoch (MTLO_FAULT)
    monkeypatch.setenv("MTLO_FAULT", "nan@1 tasks=sms+rt")
    # --groups: these task sets and every task alone (here the same grid as --method pairwise)
    rc, stdout, stderr = mtlo_main("transfer", str(path), "--groups", "sms+rt", "--seeds", "1",
                                   "--set", "train.seed=4", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, stderr[-3000:]
    assert "Downloading artifacts" not in stderr  # MLflow's progress bars are off (study.json is read back)
    data = json.loads(stdout)
    assert data["method"] == "groups" and data["seeds"] == [4]
    # the given set diverged (below): the checked grouping has no score, and says why
    assert data["checked"]["groups"] == [] and data["checked"]["score"] is None and "rt" in data["checked"]["note"]
    assert set(data) >= {"name", "parent_run_id", "baselines", "gains", "negative_transfer", "affinity",
                         "grouping", "cost"}
    assert set(data["grouping"]) >= {"groups", "score", "method", "confirmed"}
    # the diverged run is left out of the analysis, and listed, not dropped silently
    assert data["cost"]["trials"] == 2 and [(r["group"], r["status"]) for r in data["failed_runs"]] == \
        [(["rt", "sms"], "DIVERGED")]
    assert data["grouping"]["groups"] == [["rt"], ["sms"]] and data["gains"] == []
    report = (tmp_path / "reports" / "cli" / "report.md").read_text()
    assert "1 run(s) failed or diverged" in report and "| rt+sms | 4 | DIVERGED |" in report
    # the study's runs as a table (mtlo report --runs-table), CSV and JSON alike
    import csv

    rc, _, stderr = mtlo_main("report", "cli", "--runs-table", "runs.csv", "--json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, stderr
    rows = list(csv.DictReader((tmp_path / "runs.csv").open()))
    status = {(r["tasks"], r["seed"]): r["status"] for r in rows}
    assert set(status) == {("rt", "4"), ("sms", "4"), ("rt+sms", "4")} and status[("rt+sms", "4")] == "DIVERGED"
    assert status[("rt", "4")] in ("FINISHED", "STOPPED") and status[("sms", "4")] in ("FINISHED", "STOPPED"), rows
    rt = next(r for r in rows if r["tasks"] == "rt")
    assert 0 <= float(rt["val/rt/accuracy"]) <= 1 and 0 <= float(rt["test/rt/accuracy"]) <= 1
    assert int(rt["best_epoch"]) >= 1 and int(rt["train_steps"]) >= int(rt["best_step"]) > 0
    assert rt["val/sms/macro_f1"] == ""  # a column of another run's task: empty here
    rc, _, stderr = mtlo_main("report", "cli", "--runs-table", "runs.json", cwd=tmp_path, capsys=capsys)
    assert rc == 0, stderr
    as_json = json.loads((tmp_path / "runs.json").read_text())
    assert [{k: str(v) for k, v in r.items()} for r in as_json] == \
        [{k: v for k, v in r.items() if v != ""} for r in rows]
    rc, _, stderr = mtlo_main("report", "cli", "--runs-table", "runs.txt", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and stderr.strip() == "mtlo: error: --runs-table: runs.txt must end in .csv or .json", stderr


@pytest.mark.slow
def test_interrupted_study_reports_what_it_has_and_resumes_without_repeating_runs(ray_local, tmp_path, mlflow_db,
                                                                                   capsys):
    """Ctrl-C (MTLO_FAULT=sigint@trials=2: SIGINT to the driver's process group, as a terminal
    sends it) once rt and sms alone are done: exit 130 with the resume line; the report is
    rebuilt from MLflow for the interrupted study (status KILLED, the baselines, no pair yet);
    ``--resume`` trains only the pair, on the same parent run. While the first driver runs,
    every listening socket of its process tree (the driver, Ray's GCS, raylet and workers) is
    on loopback. (SIGKILL of a driver: tests/orchestrator/test_search_resume.py.)"""
    from mlflow.tracking import MlflowClient

    from orchestrator.commands import build_report
    from tests.conftest import mtlo_main, run_mtlo
    from tests.services import is_loopback

    path = write(tmp_path, name="killed", tasks={"rt": {"source": "builtin:rt_polarity"},
                                                 "sms": {"source": "builtin:sms_spam"}},
                 search={"max_concurrent": 1})
    sockets: set = set()
    killed = run_mtlo(tmp_path, "transfer", str(path), "--method", "pairwise", "--seeds", "1",
                      fault="sigint@trials=2", sockets=sockets)
    assert killed.returncode == 130, killed.stderr[-2000:]
    assert killed.stderr.strip().splitlines()[-1] == "mtlo: interrupted: what finished is recorded; run the same " \
        "command with --resume to go on" and "Traceback" not in killed.stderr, killed.stderr[-2000:]
    assert len(sockets) >= 5, sockets  # GCS, raylet, workers... were seen, so the check below means something
    assert all(is_loopback(host) for host, _, _ in sockets), f"listening beyond loopback: {sorted(sockets)}"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res, md, _ = build_report(uri, "killed", tmp_path / "rep")
    assert res["status"] == "KILLED" and set(res["baselines"]) == {"rt", "sms"} and res["gains"] == []
    assert "(KILLED)" in md and res["grouping"]["groups"] == [["rt"], ["sms"]]  # no pair trained yet
    assert res["cost"] == {"trials": 2, "train_steps": res["cost"]["train_steps"], "planned": 3}
    assert "Cost: 2 of 3 planned runs finished" in md
    client = MlflowClient(uri)
    parent_id = res["parent_run_id"]
    from orchestrator.transfer.study import study_from_mlflow

    before = {r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("study").experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")}
    # resumed on another Ray (the tests' shared one, in this process): what goes on is on disk and in MLflow
    rc, stdout, stderr = mtlo_main("transfer", str(path), "--method", "pairwise", "--seeds", "1", "--resume", "--json",
                                   cwd=tmp_path, capsys=capsys)
    assert rc == 0, stderr[-3000:]
    out = json.loads(stdout)
    assert out["parent_run_id"] == parent_id and client.get_run(parent_id).info.status == "FINISHED"
    children = client.search_runs([client.get_experiment_by_name("study").experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(c.data.tags["mtlo.tasks"] for c in children) == ["rt", "rt,sms", "sms"]  # none twice
    assert before <= {c.info.run_id for c in children} and all(c.info.status == "FINISHED" for c in children)
    assert study_from_mlflow(client, parent_id).planned == 3  # study.json, read back
    assert out["cost"]["trials"] == out["cost"]["planned"] == 3 and \
        {(g["task"], tuple(g["group"])) for g in out["gains"]} == \
        {("rt", ("rt", "sms")), ("sms", ("rt", "sms"))}
