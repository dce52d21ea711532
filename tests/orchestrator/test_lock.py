"""One driver per search or study (orchestrator/runtime/lock.py): a second driver of the same
name is refused with one line naming the first; a lock whose driver was SIGKILLed is taken
over."""

import os
import signal
import subprocess
import sys

import yaml

from tests.conftest import mtlo_main, search_config

HOLD = r'''
import sys, time
from orchestrator.config import load_config
from orchestrator.runtime import lock
lock.acquire(load_config(sys.argv[1]), "search")
print("holding", flush=True)
time.sleep(600)
'''


def test_a_second_driver_is_refused_and_a_killed_drivers_lock_is_taken_over(tmp_path, capsys, monkeypatch):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(search_config("locked")))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "c.yaml"], cwd=tmp_path, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        for args in ((), ("--resume",)):
            if args:  # an interrupted search to resume: its state file is there
                (tmp_path / "ray_results" / "locked").mkdir()
                (tmp_path / "ray_results" / "locked" / "mtlo_search.json").write_text("{}")
            rc, out, err = mtlo_main("search", "c.yaml", *args, cwd=tmp_path, capsys=capsys)
            lines = err.strip().splitlines()
            assert rc == 2 and len(lines) == 1, err
            assert lines[0].startswith(f"mtlo: error: search 'locked' is being run by another mtlo (pid {holder.pid} "
                                       f"on ") and "mtlo" in lines[0].split(": ", 3)[-1], lines[0]
            assert not (tmp_path / "mlflow.db").exists()  # refused before anything was written
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        from orchestrator.config import load_config
        from orchestrator.runtime import lock

        monkeypatch.chdir(tmp_path)  # ray_results of the config, as the CLI resolves it
        with lock.released_at_end():  # the kernel released the dead driver's lock: taken over
            lock.acquire(load_config(tmp_path / "c.yaml"), "search")
            assert lock.lock_path(load_config(tmp_path / "c.yaml")) in lock._HELD
        assert not lock._HELD
    finally:
        holder.kill()
