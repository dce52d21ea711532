"""``mtlo report`` writes only inside its own folder and uploads only its own files.

A run name is text anyone with write access to the MLflow store chooses; it must never pick
where the report is written (``reports/<run name>`` with ``../..`` or an absolute path), and
``--out .`` must never upload the current folder (mlflow.db, configs, data) to MLflow.
"""

from pathlib import Path

import pytest

from tests.conftest import copy_store

HOSTILE = ["../../escaped", "/tmp/mtlo-absolute-escape", "..", "a/../../b", ".hidden"]


def _search_parent(uri: str, name: str) -> str:
    """A finished search parent run with no trials, named ``name``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.create_experiment("paths")
    run = client.create_run(exp, run_name=name, tags={"mtlo.role": "search", "mtlo.objective": "mean_score"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _uploaded(uri: str, run_id: str) -> set[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    out, todo = set(), [""]
    while todo:
        for f in client.list_artifacts(run_id, todo.pop() or None):
            (todo.append(f.path) if f.is_dir else out.add(f.path))
    return out


def _files(root: Path) -> set[str]:
    """Every file under ``root`` but MLflow's own artifact store (mlruns/: what was uploaded,
    checked by ``_uploaded``)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "mlruns" not in p.parts}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_run_name_cannot_write_outside_reports(name, tmp_path, store_template, monkeypatch):
    from orchestrator.commands import build_report

    work = tmp_path / "a" / "b" / "work"
    copy_store(store_template, work)
    monkeypatch.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    run_id = _search_parent(uri, name)
    before_tmp = set(Path("/tmp").glob("mtlo-absolute-escape*"))

    _, _, folder = build_report(uri, run_id)

    reports = (work / "reports").resolve()
    assert folder.resolve().parent == reports, f"run name {name!r} chose the folder {folder}"
    assert _files(tmp_path) == {"a/b/work/mlflow.db"} | {
        f"a/b/work/reports/{folder.name}/{f}" for f in ("report.md", "report.json")}, \
        "nothing is written outside reports/<sanitized name>"
    assert set(Path("/tmp").glob("mtlo-absolute-escape*")) == before_tmp, "an absolute run name wrote there"
    assert _uploaded(uri, run_id) == {"report/report.md", "report/report.json"}


def test_out_dot_uploads_only_the_reports_own_files(tmp_path, mlflow_db, monkeypatch):
    from orchestrator.commands import build_report

    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.yaml").write_text("token: do-not-upload\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _search_parent(uri, "plain")

    _, _, folder = build_report(uri, run_id, Path("."))

    assert folder.resolve() == tmp_path.resolve()
    assert _uploaded(uri, run_id) == {"report/report.md", "report/report.json"}, \
        "mlflow.db and the user's files in --out stay local"
    assert (tmp_path / "secret.yaml").read_text() == "token: do-not-upload\n"
