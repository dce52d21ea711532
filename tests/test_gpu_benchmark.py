"""benchmarks/gpu.py's dry run: every step of the GPU benchmark on the CPU (tiny encoder, small
slices, one search on the tests' Ray), so that a run on a GPU machine is not wasted on a typo."""

import json
import math

import pytest

from benchmarks import gpu


@pytest.mark.slow
def test_the_gpu_benchmark_runs_every_step_on_the_cpu(ray_local, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MTLO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "gpu.json"
    args = ["--dry-run", "--trials-per-gpu", "1", "--out", str(out), "--address", ray_local]
    gpu.main(args)
    res = json.loads(out.read_text())
    assert res["dry_run"] and res["device"] == "cpu (dry run)"
    assert res["command"] == "python -m benchmarks.gpu " + " ".join(args)
    for name in ("one_trial", "one_trial_compiled"):
        r = res[name]
        assert r["epochs"] == 3 and r["examples_per_epoch"] == [320, 320, 320]  # 5 tasks x 64 examples
        assert r["train_examples_per_s"] > 0 and r["first_epoch_examples_per_s"] > 0
        assert math.isfinite(r["warmup_seconds"]) and math.isfinite(r["objective"])
        # epoch 2 on: the examples of epochs 2-3 over their training seconds
        assert r["train_examples_per_s"] == pytest.approx(640 / sum(r["train_seconds_per_epoch"][1:]), rel=2e-3)
    (search,) = res["searches"]
    assert search["trials_per_gpu"] == 1 and search["trials"] == search["finished"] == 1
    assert search["gpu_util_mean"] is None  # no nvidia-smi here: nothing sampled, nothing made up
    assert set(res["targets"]) == {"train_examples_per_s", "warmup_seconds", "gpu_busy_8_trials"}
    assert res["targets"]["gpu_busy_8_trials"]["measured"] is None  # no 8-trial search was asked for
    table = capsys.readouterr().out
    assert "| one trial compiled |" in table and "| 1 | 1/1 |" in table
