"""``mtlo transfer`` end to end on the tiny encoder: subsets x seeds as nested MLflow runs,
the equal-budget rule, gains, the grouping and its confirmation by training, a report
rebuilt from MLflow alone."""

import json
from pathlib import Path

import pytest
import yaml

from orchestrator.config import ConfigError, load_config
from tests.conftest import named_config

# one run at a time: each study stage starts its trial workers anew, seconds of CPU each
CONFIG = named_config("study", ("rt", "vader", "sms"), search={"max_concurrent": 1}, resources={"cpus_per_trial": 1})


def write(tmp_path, **over):
    data = {**json.loads(json.dumps(CONFIG)), **over}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_pairwise_study_with_confirmation(ray_local, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from orchestrator.transfer.results import analyse
    from orchestrator.transfer.runner import run_transfer
    from orchestrator.transfer.study import Study, load_runs

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path)
    out = run_transfer(load_config(path), path, method="pairwise", seeds=2, budget=1, check_seeds=2)
    # 3 singles + 3 pairs at 2 seeds; budget 1 forces the 3-task group, only estimated, so it is trained
    assert out["cost"]["trials"] == 12 + 2
    gr = out["grouping"]
    chosen = gr.get("within_budget") or gr  # the budget's grouping (beside "train apart" unless credible)
    assert chosen["groups"] == [["rt", "sms", "vader"]] and gr["confirmed"] is True
    assert gr["apart"] is (not chosen["expected"]["credible"])  # two seeds of tiny slices: the test decides
    assert gr["groups"] == ([["rt"], ["sms"], ["vader"]] if gr["apart"] else chosen["groups"])
    assert set(out["baselines"]) == {"rt", "vader", "sms"} and all(b["n"] == 2 for b in out["baselines"].values())
    groups = {(g["task"], tuple(g["group"])) for g in out["gains"]}
    assert ("rt", ("rt", "vader")) in groups and ("vader", ("rt", "sms", "vader")) in groups
    for g in out["gains"]:  # 2 seeds: never significant (default needs 3)
        assert not g["significant"] and g["n"] == 2
    assert out["pairwise"]["rt"]["vader"] == next(g["delta"] for g in out["gains"]
                                                  if g["task"] == "rt" and g["group"] == ["rt", "vader"])

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("study")
    parent = client.get_run(out["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["mtlo.role"] == "transfer"
    assert parent.data.tags["mtlo.grouping"] == " | ".join(",".join(g) for g in gr["groups"])
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{out['parent_run_id']}'")
    checks = [c for c in children if c.data.tags["mtlo.role"] == "check"]
    children = [c for c in children if c.data.tags["mtlo.role"] != "check"]
    assert len(children) == 14
    # --check-seeds 2: the three tasks alone and the budget's grouping again at seeds 2 and 3, under
    # the same parent, scored there beside the study's estimate, and left out of the study's figures
    ck = out["check"]
    assert sorted((c.data.tags["mtlo.tasks"], c.data.tags["mtlo.seed"]) for c in checks) == sorted(
        (t, s) for t in ("rt", "sms", "vader", "rt,sms,vader") for s in ("2", "3"))
    assert ck["seeds"] == [2, 3] and ck["groups"] == [["rt", "sms", "vader"]] and ck["runs"] == 8
    assert ck["expected"] == chosen["expected"]["expected"] and ck["interval"] == chosen["expected"]["interval"]
    assert ck["held"] is (ck["interval"][0] <= ck["total"] <= ck["interval"][1])
    assert ck["total"] == pytest.approx(sum(ck["per_seed"].values()) / 2)
    # every run logs its tasks' data as MLflow dataset inputs (the UI's Dataset column), one digest a task
    digests = {i.dataset.name: i.dataset.digest for i in client.get_run(out["parent_run_id"]).inputs.dataset_inputs}
    assert set(digests) == {"rt", "sms", "vader"}
    for c in children:
        got = {i.dataset.name: i.dataset.digest for i in c.inputs.dataset_inputs}
        assert got == {t: digests[t] for t in c.data.tags["mtlo.tasks"].split(",")}
    seen = sorted((c.data.tags["mtlo.tasks"], c.data.tags["mtlo.seed"]) for c in children)
    assert seen.count(("rt", "0")) == 1 and seen.count(("rt,sms,vader", "1")) == 1
    cap = int(parent.data.params["transfer.max_steps"])
    assert cap == 2 * 3 * 3  # 2 epochs of the 3-task group: 3 batches of 16 per task
    alone = {(c.data.tags["mtlo.tasks"], c.data.tags["mtlo.seed"]): c.data.metrics["train_steps"] for c in children
             if "," not in c.data.tags["mtlo.tasks"]}
    for c in children:
        m, group, seed = c.data.metrics, c.data.tags["mtlo.tasks"].split(","), c.data.tags["mtlo.seed"]
        assert all(f"best/{t}/" in " ".join(m) for t in group)
        if len(group) == 1:  # alone: patience on its own score, under the study's step cap
            assert 0 < m["best_step"] <= m["train_steps"] <= cap
            continue
        # in a group, each task trains the own batches it took alone at the same seed (patience
        # decided them there), and is judged within them: the same data alone and in the group
        for t in group:
            assert m[f"own/{t}"] == alone[(t, seed)], (group, seed, t)
            assert 1 <= m[f"judged_own/{t}"] <= alone[(t, seed)]
        assert m["train_steps"] == max(alone[(t, seed)] for t in group)  # joint: a batch of each task a step
    # a report rebuilt from MLflow alone gives the same figures
    study = Study("study", out["parent_run_id"], ["rt", "vader", "sms"], out["main_metric"],
                  {"rt": True, "vader": True, "sms": True}, "pairwise", [0, 1], 1)
    again = analyse(study, load_runs(client, exp.experiment_id, out["parent_run_id"], out["main_metric"]))
    assert again["gains"] == out["gains"] and again["grouping"] == out["grouping"]
    # the grouping's interval over seeds, by hand: at seed s, the sum over tasks of
    # (score in the group − score alone, both at s) / |mean alone|; t interval with 1 df
    base = {t: out["baselines"][t]["mean"] for t in ("rt", "vader", "sms")}
    at = {(tuple(r["group"]), r["seed"]): r["scores"] for r in out["runs"]}
    totals = [sum((at[(("rt", "sms", "vader"), s)][t] - at[((t,), s)][t]) / abs(base[t]) for t in base) for s in (0, 1)]
    half = 12.7062 * abs(totals[0] - totals[1]) / 2 ** 0.5 / 2 ** 0.5
    assert sum(totals) / 2 == pytest.approx(chosen["score"])
    assert chosen["ci"] == pytest.approx([sum(totals) / 2 - half, sum(totals) / 2 + half], rel=1e-4)
    # the study's folder, whose saved state --resume unpickles, is this user's alone
    assert oct((tmp_path / "ray_results" / "study").stat().st_mode & 0o777) == "0o700"
    trials = list((tmp_path / "ray_results").rglob("trainable_*"))  # finished: results kept, checkpoints gone
    assert len(trials) == 14 + 8 and all((t / "result.json").is_file() and not any(t.glob("checkpoint_*"))
                                     for t in trials)
    logged = client.download_artifacts(out["parent_run_id"], "transfer.json", str(tmp_path))
    assert json.loads(Path(logged).read_text())["grouping"] == out["grouping"]

    # the report, by name, from MLflow alone: markdown, heat map, gain bars, logged on the parent
    from orchestrator.commands import build_report

    res, md, folder = build_report(f"sqlite:///{tmp_path / 'mlflow.db'}", "study", tmp_path / "rep")
    assert res["grouping"] == out["grouping"] and res["gains"] == out["gains"]
    assert {p.name for p in folder.iterdir()} == {"report.md", "report.json", "transfer_matrix.png", "gains.png"}
    assert "## Recommended grouping" in md and ("rt+sms+vader" if gr["apart"] else "**rt + sms + vader**") in md
    assert f"Check on new seeds (2, 3) of rt+sms+vader: {'held' if ck['held'] else 'did not hold'} on new seeds" in md
    assert res["check"] == ck
    assert "`mtlo transfer CONFIG --groups rt+sms+vader --seeds 2 --set train.seed=2 --set name=study-check`" in md
    assert (folder / "transfer_matrix.png").read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in client.list_artifacts(out["parent_run_id"], "report")}
    assert {"report/report.md", "report/transfer_matrix.png", "report/gains.png"} <= logged
    with pytest.raises(ConfigError, match="no search or transfer study named 'nope'"):
        build_report(f"sqlite:///{tmp_path / 'mlflow.db'}", "nope", tmp_path / "rep2")


def test_affinity_study_proposes_groups_and_confirms_them(ray_local, tmp_path, monkeypatch):
    from orchestrator.commands import build_report
    from orchestrator.transfer import results as runner
    from orchestrator.transfer.methods import Affinity
    from orchestrator.transfer.runner import run_transfer

    # the tiny encoder's gains are all positive here, so the real estimate proposes the trained
    # all-tasks group; a planted estimate (rt + vader: +100% each, any other group: -100%) makes
    # the proposal need a confirmation, whatever the tiny encoder learns
    real = Affinity.estimator

    def planted(*args):
        est = real(*args)

        class Planted(type(est)):  # type: ignore[misc]
            def __call__(self, t, g):
                return 1.0 if tuple(g) == ("rt", "vader") else -1.0 if len(g) > 1 else 0.0

        est.__class__ = Planted
        return est

    monkeypatch.setattr(Affinity, "estimator", staticmethod(planted))
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, name="aff")
    # no confirmation at first: the proposal is only estimated, the recommendation measured
    first = run_transfer(load_config(path), path, method="affinity", seeds=1, budget=2, confirm_rounds=0)
    assert {tuple(r["group"]) for r in first["runs"]} == {("rt",), ("sms",), ("vader",), ("rt", "sms", "vader")}
    assert ["rt", "vader"] in first["proposed"]["groups"] and not first["grouping"]["confirmed"]
    assert runner.to_confirm(first) == [["rt", "vader"]]
    # resumed with more rounds, the finished study goes on with the groups it proposes; once
    # measured, rt + vader's gains replace the planted estimate
    out = run_transfer(load_config(path), path, method="affinity", seeds=1, budget=2, confirm_rounds=3, resume=True)
    tasks = ["rt", "vader", "sms"]
    assert {(i, j) for i in out["affinity"] for j in out["affinity"][i]} == \
        {(i, j) for i in tasks for j in tasks}  # every ordered pair measured, and the diagonal
    proposed = out["proposed"]["groups"]
    assert {t for g in proposed for t in g} == set(tasks) and len(proposed) <= 2  # a cover, within budget
    trained = {tuple(r["group"]) for r in out["runs"]}
    # 3 singles + the all-tasks run, then every proposed group of 2+ tasks, trained to confirm it
    assert {("rt",), ("sms",), ("vader",), ("rt", "sms", "vader"), ("rt", "vader")} <= trained
    assert all(tuple(sorted(g)) in trained for g in proposed)
    assert out["grouping"]["confirmed"] is True and out["grouping"]["method"] == "affinity"
    assert out["cost"]["trials"] == len(trained)
    res, md, folder = build_report(f"sqlite:///{tmp_path / 'mlflow.db'}", "aff", tmp_path / "rep")
    assert res["affinity"] == out["affinity"] and (folder / "affinity.png").is_file()
    # one all-tasks run: no agreement across seeds to measure; the joint schedule trains every
    # task at every step, so no single task's gradient is read (no gradient affinity)
    assert out["affinity_signals"] == res["affinity_signals"] == {
        "lookahead": {"runs": 1, "agreement": None, "matrix": out["affinity"]}}
    assert "## Affinity (estimated)" in md
    # the proposal's estimates: each task's dilution, measured residual and its source in the all-tasks
    # group (single-task learning curves were read back from MLflow), each proposed group's estimate
    fit = out["estimator"]
    assert set(fit["dilution"]) == set(tasks) == set(fit["residual"])
    assert all(v <= 0 for v in fit["dilution"].values())  # fewer own steps can only cost
    everyone = {g["task"]: g["delta"] for g in out["gains"] if sorted(g["group"]) == sorted(tasks)}
    assert all(fit["residual"][t] == pytest.approx(everyone[t] - fit["dilution"][t]) for t in tasks)
    shown = {tuple(e["group"]) for e in fit["proposed"]}  # estimate beside measurement, every group proposed so far
    assert {tuple(g) for g in proposed if len(g) > 1} <= shown and ("rt", "vader") in shown
    assert {"group": ["rt", "vader"], "task": "rt", "estimated": 1.0} in fit["proposed"]
    assert shown <= {tuple(g) for g in trained if len(g) > 1} | {tuple(g) for g in proposed}
    assert set(fit["carry"]) == set(tasks) and all(0 <= v <= 1 for v in fit["carry"].values())
    assert res["estimator"] == fit and "| task | measured (all tasks) | λ | dilution (all tasks) |" in md
    assert all(fit["helper"][t] in (None, *tasks) for t in tasks)
    # its runs table (mtlo report --runs-table) replays the same analysis with no MLflow store, the
    # affinity and the single-task learning curves included (benchmarks/grouping.py reads tables)
    from mlflow.tracking import MlflowClient

    from orchestrator.commands import write_runs_table
    from orchestrator.domain import mean_matrix
    from orchestrator.store.runs import read_runs_table, table_affinity, table_runs
    from orchestrator.transfer.study import study_from_mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = study_from_mlflow(MlflowClient(uri), out["parent_run_id"])
    for name in ("runs.csv", "runs.json"):
        write_runs_table(uri, out["parent_run_id"], tmp_path / name)
        rows = read_runs_table(tmp_path / name)
        assert all(r.curve for r in table_runs(rows, study.main_metric) if len(r.group) == 1)
        again = runner.analyse(study, table_runs(rows, study.main_metric), mean_matrix(table_affinity(rows)))
        assert again["gains"] == out["gains"] and again["grouping"] == out["grouping"]
        assert again["affinity"] == out["affinity"] and again["estimator"] == out["estimator"]


def test_surrogate_study_through_the_cli(ray_local, tmp_path, monkeypatch, capsys):
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


def test_transfer_refuses_bad_arguments(tmp_path, monkeypatch):
    from orchestrator.transfer.runner import run_transfer

    monkeypatch.chdir(tmp_path)
    path = write(tmp_path)
    with pytest.raises(ConfigError, match="--seeds: must be at least 1"):
        run_transfer(load_config(path), path, method="pairwise", seeds=0)
    with pytest.raises(ConfigError, match="--confirm-rounds: must be 0 or more"):
        run_transfer(load_config(path), path, method="affinity", confirm_rounds=-1)
    with pytest.raises(ConfigError, match="groups: rt\\+ner: no task 'ner' in the config"):
        run_transfer(load_config(path), path, method="exhaustive", groups=[["rt", "ner"]])
    with pytest.raises(ConfigError, match="groups: no task set of two or more tasks to train"):
        run_transfer(load_config(path), path, method="exhaustive", groups=[["rt"]], singles=False)
    one = write(tmp_path, tasks={"rt": {"source": "builtin:rt_polarity"}})
    with pytest.raises(ConfigError, match="needs at least two tasks"):
        run_transfer(load_config(one), one, method="pairwise")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_cli_transfer_json(ray_local, tmp_path, monkeypatch, capsys):
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
def test_interrupted_study_reports_what_it_has_and_resumes_without_repeating_runs(ray_local, tmp_path):
    """Ctrl-C (MTLO_FAULT=sigint@trials=2: SIGINT to the driver's process group, as a terminal
    sends it) once rt and sms alone are done: exit 130 with the resume line; the report is
    rebuilt from MLflow for the interrupted study (status KILLED, the baselines, no pair yet);
    ``--resume`` trains only the pair, on the same parent run. While the first driver runs,
    every listening socket of its process tree (the driver, Ray's GCS, raylet and workers) is
    on loopback. (SIGKILL of a driver: tests/orchestrator/test_search_resume.py.)"""
    from mlflow.tracking import MlflowClient

    from orchestrator.commands import build_report
    from tests.conftest import run_mtlo
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
    # resumed on another Ray (the tests' shared one): what goes on is on disk and in MLflow
    resumed = run_mtlo(tmp_path, "transfer", str(path), "--method", "pairwise", "--seeds", "1", "--resume", "--json",
                       ray=ray_local)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = json.loads(resumed.stdout)
    assert out["parent_run_id"] == parent_id and client.get_run(parent_id).info.status == "FINISHED"
    children = client.search_runs([client.get_experiment_by_name("study").experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent_id}'")
    assert sorted(c.data.tags["mtlo.tasks"] for c in children) == ["rt", "rt,sms", "sms"]  # none twice
    assert before <= {c.info.run_id for c in children} and all(c.info.status == "FINISHED" for c in children)
    assert study_from_mlflow(client, parent_id).planned == 3  # study.json, read back
    assert out["cost"]["trials"] == out["cost"]["planned"] == 3 and \
        {(g["task"], tuple(g["group"])) for g in out["gains"]} == \
        {("rt", ("rt", "sms")), ("sms", ("rt", "sms"))}
