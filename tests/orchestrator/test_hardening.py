"""The lower items of docs/security.md, each with the behaviour it guards: a resumed search
unpickles only what its own user wrote, crash logs and the lock file are the user's alone and
redacted, a report over someone else's store carries no live markdown or HTML, a runs table no
spreadsheet formula, an exhaustive study refuses early what it cannot handle, and a logged
model's input example is made up."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.config import load_config
from orchestrator.errors import ConfigError
from tests.conftest import mtlo_main, search_config, tiny_config


def _resumable(tmp_path, mode: int):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("mine")))
    folder = tmp_path / "ray_results" / "mine"
    folder.mkdir(parents=True)
    (folder / "mtlo_search.json").write_text(json.dumps({"parent_run_id": "x"}))
    folder.chmod(mode)
    return folder


@pytest.mark.parametrize(("mode", "owner", "message"), [
    (0o777, None, "can be written by others (mode 0o777)"),
    (0o700, 54321, "belongs to another user (uid 54321)"),
])
def test_resume_unpickles_only_what_this_user_wrote(tmp_path, capsys, mode, owner, message):
    folder = _resumable(tmp_path, mode)
    if owner is not None:
        if os.getuid() != 0:
            pytest.skip("giving a folder to another user needs root")  # CI and this machine run as root
        os.chown(folder, owner, -1)
    rc, _, err = mtlo_main("search", "c.yaml", "--resume", cwd=tmp_path, capsys=capsys)
    assert rc == 2 and message in err and err.count("\n") == 1, err


def test_a_crash_log_is_the_users_alone_and_redacted(tmp_path, capsys, monkeypatch):
    from orchestrator import commands

    def boom(**_: object) -> int:
        raise RuntimeError("store http://alice:Sup3rSecret@mlflow.example:5000 answered 500")

    monkeypatch.setattr(commands, "cmd_tasks", boom)
    rc, _, err = mtlo_main("tasks", cwd=tmp_path, capsys=capsys)
    assert rc == 1 and "alice:***@mlflow.example" in err and "Sup3rSecret" not in err
    log = err.split("(details: ")[1].split(")")[0]
    assert oct(os.stat(log).st_mode & 0o777) == "0o600"
    assert oct(os.stat(os.path.dirname(log)).st_mode & 0o777) == "0o700"
    written = Path(log).read_text()
    assert "Sup3rSecret" not in written and "alice:***@" in written


def test_the_lock_file_is_the_users_alone_and_redacted(tmp_path, monkeypatch):
    from orchestrator.runtime import lock

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("locked")))
    monkeypatch.setattr(sys, "argv", ["mtlo", "search", "c.yaml", "--set", "mlflow.tracking_uri=http://a:Pw1234@h"])
    cfg = load_config(tmp_path / "c.yaml")
    with lock.released_at_end():
        lock.acquire(cfg, "search")
        info = lock.lock_path(cfg).with_name(lock.lock_path(cfg).name + ".json")
        assert oct(info.stat().st_mode & 0o777) == "0o600"
        assert "Pw1234" not in info.read_text() and "a:***@h" in info.read_text()


def test_a_report_over_someone_elses_store_carries_no_live_markdown_or_html():
    from orchestrator.report.search_md import search_markdown

    evil = "![x](http://evil.example/beacon.png) <img src=x onerror=alert(1)> | [click](http://evil.example)"
    res = {"name": "s", "objective": "mean_score", "parent_run_id": "p", "status": "FINISHED",
           "trials": [{"trial_id": "t1", "status": "FAILED", "retries": 0, "error": evil, "objective": None,
                       "params": {}}]}
    text = search_markdown(res, [])
    row = next(line for line in text.splitlines() if line.startswith("| t1 |"))
    assert "![" not in row and "<img" not in row and "](" not in row.replace("\\](", "")
    assert row.count(" | ") == 3  # the error stays in its cell: its pipe is escaped


def test_a_runs_table_cell_that_a_spreadsheet_would_run_is_made_inert():
    from orchestrator.store.runs import runs_table_text

    rows = [{"run_id": "=HYPERLINK(\"http://evil\")", "tasks": "+a", "seed": -1, "val/a/mse": -0.5,
             "status": "@x"}]
    text = runs_table_text(rows, ".csv")
    assert "'=HYPERLINK" in text and ",'+a," in text and ",'@x" in text
    assert ",-1," in text and ",-0.5," in text  # numbers stay numbers


def test_an_exhaustive_study_of_too_many_tasks_is_refused_before_its_subsets_are_built():
    import time

    from orchestrator.transfer.methods import method

    started = time.perf_counter()
    with pytest.raises(ConfigError, match="--method exhaustive: 30 tasks have 1,073,741,823 subsets; it handles "
                                          "up to 14 tasks"):
        method("exhaustive").subsets([f"t{i}" for i in range(30)])
    assert time.perf_counter() - started < 1.0


def test_a_logged_models_input_example_is_made_up():
    from orchestrator.store.models import EXAMPLE_TEXTS, _example
    from trainables import build
    from trainables.data import raw_splits

    exp = build(tiny_config(max_eval_examples=16))
    frame = _example(exp)
    assert frame["text"].tolist() == EXAMPLE_TEXTS
    for t in exp.tasks:
        test = raw_splits(t, exp.spec.tasks[t], exp.spec.train).test
        texts = {" ".join(x) if isinstance(x, list) else x for x in test.texts}
        assert not texts & set(EXAMPLE_TEXTS)
