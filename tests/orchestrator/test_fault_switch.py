"""The test-only fault switch (MTLO_FAULT): parsing, matching, counting, and that a planted
NaN reaches the training loop's own divergence check."""

import pytest

from orchestrator.errors import ConfigError
from orchestrator.runtime import faults
from tests.conftest import tiny_config
from trainables import DivergedError, build, fit


def test_parse_trial_and_driver_faults(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLO_FAULT_DIR", str(tmp_path))
    f = faults.parse("raise@2 trial=0; kill@1 trial=3 times=1; nan@4; driver@trials=2; driver@report")
    assert [(x.kind, x.when, x.trial, x.times) for x in f.trial] == [
        ("raise", "2", 0, None), ("kill", "1", 3, 1), ("nan", "4", None, None)]
    assert [x.when for x in f.driver] == ["trials=2", "report"]
    assert not faults.parse("") and not faults.parse(None)


@pytest.mark.parametrize(("text", "message"), [
    ("explode@2", "KIND@EPOCH"), ("raise@two", "KIND@EPOCH"), ("raise@2 trail=1", "trail=1"),
    ("driver@lunch", "driver@lunch"), ("kill@1 times=1", "needs MTLO_FAULT_DIR"),
    ("tune-crash@2", "tune-crash@trials=N"), ("tune-crash@trials=2 trial=1", "tune-crash@trials=N"),
    ("tune-crash@trials=1 times=1", "needs MTLO_FAULT_DIR")])
def test_a_malformed_switch_is_a_one_line_error(text, message, monkeypatch):
    monkeypatch.delenv("MTLO_FAULT_DIR", raising=False)
    with pytest.raises(ConfigError, match=message):
        faults.parse(text)


def test_matching_and_counting(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLO_FAULT_DIR", str(tmp_path))
    once = faults.parse("kill@1 trial=10 times=1").trial[0]
    assert faults.trial_number("318f814c", "/r/s/trainable_318f814c_10_task_weight_rt=1.25_2026-11-23") == 10
    assert faults.trial_number("bcd53_00003", "/r/s/trainable_bcd53_00003_3_mtlo_fixed=x_2026") == 3
    assert once.matches(10) and not once.matches(1) and not once.matches(None)
    assert faults.parse("raise@1").trial[0].matches(None)  # no trial=: every trial
    assert once.take("318f814c") and not once.take("318f814c")  # counted across attempts (processes)
    tf = faults.TrialFaults(faults.parse("raise@2 trial=0").trial, "x_00000", 0)
    tf.after_epoch(1)  # not yet
    with pytest.raises(RuntimeError, match="injected fault"):
        tf.after_epoch(2)
    tf.after_epoch(3)  # once per attempt


def test_tune_crash_is_the_error_ray_tune_stops_on_and_counts_its_firings(tmp_path, monkeypatch):
    from ray.exceptions import OutOfMemoryError, RayTaskError

    from orchestrator.runtime.tuner import ray_system_error

    monkeypatch.setenv("MTLO_FAULT_DIR", str(tmp_path))
    f = faults.parse("tune-crash@trials=2 times=1; driver@report")
    faults.tune_crash(f, "trials=1")  # not yet
    with pytest.raises(RuntimeError, match="Caught unexpected exception") as crash:
        faults.tune_crash(f, "trials=2")
    assert isinstance(ray_system_error(crash.value), OutOfMemoryError)  # the search is restored
    faults.tune_crash(f, "trials=2")  # times=1: fired once in all
    # a trial's own error, or mtlo's, is not a Ray system error: no restore, it is raised
    assert ray_system_error(RuntimeError("a bug")) is None
    try:
        raise ValueError("in a task") from RayTaskError("f", "Traceback: ...", ValueError("x"))
    except ValueError as e:
        assert ray_system_error(e) is None


def test_planted_nan_is_caught_by_the_loop(monkeypatch):
    exp = build(tiny_config(epochs=3))
    tf = faults.TrialFaults(faults.parse("nan@1").trial, "x_00000", 0)
    tf.install(exp)
    epochs = []

    def report(row):
        epochs.append(row["epoch"])
        tf.after_epoch(row["epoch"])

    with pytest.raises(DivergedError, match="loss is nan"):
        fit(exp, report)
    assert epochs == [1]  # epoch 1 trained normally, epoch 2 diverged at its first step
