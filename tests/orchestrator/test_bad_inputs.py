"""The bad-input corpus (tests/bad_inputs/cases.yaml): malformed configs, search spaces and
data files. Each gives exit code 2 and one line on stderr that names the file or field, with
no traceback, before Ray starts and before anything is written to MLflow.

Run in-process (one import of torch and Ray for all cases); ``_ray_init`` is replaced by a
tripwire, so a case that got as far as starting Ray fails. One case also runs as a real
subprocess, for the exit code and stderr of the process itself.
"""

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator import cli
from tests.conftest import run_mtlo

CORPUS = Path(__file__).resolve().parent.parent / "bad_inputs"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())


def test_the_corpus_is_large_and_every_file_is_used():
    assert len(CASES) >= 25
    referenced = {c["file"] for c in CASES}
    configs = {p.name for p in CORPUS.glob("*.yaml")} - {"cases.yaml"} - {p.name for p in CORPUS.glob("space_*.yaml")}
    assert referenced == configs


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_ray: None) -> Path:
    shutil.copytree(CORPUS, tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")
    return tmp_path / "in"


def written(folder: Path) -> list[str]:
    """What a run may leave behind: an MLflow store, Ray's results, a report, an Optuna study."""
    names = ("mlflow.db", "mlruns", "ray_results", "reports", "optuna.db")
    return sorted(str(p.relative_to(folder)) for n in names for p in folder.rglob(n))


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_bad_input_exits_2_with_one_line(case, workdir, capsys):
    before = written(workdir)
    rc = cli.main([case["command"], case["file"], *case.get("args", [])])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("mtlo: error: "), err
    assert case["expect"] in lines[0], (case["expect"], lines[0])
    assert "Traceback" not in err
    assert written(workdir) == before  # nothing in MLflow, no Ray results, no report


def test_bad_input_in_a_real_process(tmp_path):
    shutil.copytree(CORPUS, tmp_path / "in")
    out = run_mtlo(tmp_path / "in", "search", "data_no_label_column.yaml", timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [out.stderr.strip()] and "column 'label' not in" in out.stderr
    assert written(tmp_path / "in") == [] and not (tmp_path / "in" / "ray_results").exists()


@pytest.mark.parametrize(("ref", "expect"), [
    ("no-such-study", "report: no search or transfer study named 'no-such-study' in the MLflow store"),
    ("x' OR 1=1 --", "report: \"x' OR 1=1 --\" is neither a run id nor a search or study name"),
    ("TRIAL", "is a trial run, not the parent run of a search or transfer study"),
])
def test_report_of_what_is_not_a_study_is_one_line(tmp_path, capsys, ref, expect):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    trial = client.create_run(client.create_experiment("e"), tags={"mtlo.role": "trial"}).info.run_id
    capsys.readouterr()  # MLflow's own lines as it made the store
    rc = cli.main(["report", trial if ref == "TRIAL" else ref, "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and expect in err, err
