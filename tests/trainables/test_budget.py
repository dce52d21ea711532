"""``train.own_batches`` (trainables/budget.py): a task trains on exactly its own batches, leaves
the schedule, and is judged on its own validation score within them."""

import pytest
import torch

from tests.conftest import tiny_config
from trainables import build, fit


def _pair(**train: object) -> dict:
    cfg = tiny_config(schedule="round_robin", epochs=20, device="cpu", **train)
    cfg["tasks"] = {t: cfg["tasks"][t] for t in ("rt", "vader")}
    return cfg


def test_each_task_trains_its_own_batches_then_leaves_and_the_run_ends_with_the_last():
    rows: list[dict] = []
    exp = build(_pair(own_batches={"rt": 6, "vader": 13}))
    result = fit(exp, rows.append)
    # 64 examples at batch 16: 4 batches a task per pass; round robin alternates while both train
    assert rows[-1]["own/rt"] == 6 and rows[-1]["own/vader"] == 13
    assert result.stopped == "own_batches" and result.steps == 6 + 13  # one task a step, no step wasted
    assert [r["own/rt"] for r in rows][:2] == [4, 6]  # rt left mid-epoch: it trains no more
    # each task is judged at its best evaluation within its batches (its own main metric),
    # and the run's result and last row say so
    for t, m in (("rt", "accuracy"), ("vader", "pearson")):
        assert rows[-1][f"judged/{t}/{m}"] == result.metrics[t][m]
        assert 1 <= rows[-1][f"judged_own/{t}"] <= {"rt": 6, "vader": 13}[t]
        assert rows[-1][f"test/{t}/{m}"] == result.test[t][m]
    seen_rt = [r["val/rt/accuracy"] for r in rows]
    assert result.metrics["rt"]["accuracy"] >= max(seen_rt) - 1e-12  # its best, rows included


def test_a_task_alone_with_its_batches_is_the_run_patience_would_have_stopped():
    """Alone, own batches are steps: a run given the steps its patience took trains them again,
    number for number, and judges the task at the same best epoch."""
    cfg = tiny_config(epochs=12, patience=2, device="cpu", lr=3e-3)
    cfg["tasks"] = {"rt": cfg["tasks"]["rt"]}
    first: list[dict] = []
    plain = fit(build(cfg), first.append)
    again: list[dict] = []
    budgeted = fit(build({**cfg, "train": {**cfg["train"], "own_batches": {"rt": plain.steps}}}), again.append)
    assert budgeted.steps == plain.steps and budgeted.metrics == plain.metrics
    assert [r["val/rt/accuracy"] for r in again] == [r["val/rt/accuracy"] for r in first]


def test_a_run_with_own_batches_resumes_where_it_stopped(tmp_path):
    cfg = _pair(own_batches={"rt": 6, "vader": 13})
    full: list[dict] = []
    whole = fit(build(cfg), full.append, save_state=lambda st: torch.save(st, tmp_path / f"e{st['epoch']}.pt"))
    resumed: list[dict] = []
    state = torch.load(tmp_path / "e2.pt", weights_only=True)
    result = fit(build(cfg), resumed.append, state=state)
    strip = lambda rows: [{k: v for k, v in r.items()  # noqa: E731
                           if not k.endswith("seconds") and not k.startswith("memory/")} for r in rows]
    assert strip(resumed) == strip(full[2:]) and result.metrics == whole.metrics


def test_without_own_batches_nothing_changes(tiny):
    """The rows of a run without ``own_batches`` carry no own/ or judged/ keys."""
    rows: list[dict] = []
    fit(build(tiny), rows.append)
    assert not any(k.startswith(("own/", "judged")) for r in rows for k in r)


@pytest.mark.parametrize("schedule", ["joint", "proportional"])
def test_other_schedules_count_own_batches_too(schedule):
    rows: list[dict] = []
    cfg = _pair(own_batches={"rt": 5, "vader": 9})
    cfg["train"]["schedule"] = schedule
    result = fit(build(cfg), rows.append)
    assert (rows[-1]["own/rt"], rows[-1]["own/vader"]) == (5, 9) and result.stopped == "own_batches"
