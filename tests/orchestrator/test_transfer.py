"""``mtlo transfer`` end to end on the tiny encoder: subsets x seeds as nested MLflow runs,
the equal-budget rule, gains, the grouping and its confirmation by training, a report
rebuilt from MLflow alone."""

import json
from pathlib import Path

import pytest

from orchestrator.config import ConfigError, load_config
from tests.conftest import study_file as write


def test_pairwise_study_with_confirmation(ray_local, tmp_path, mlflow_db, monkeypatch):
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


def test_affinity_study_proposes_groups_and_confirms_them(ray_local, tmp_path, mlflow_db, monkeypatch):
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
