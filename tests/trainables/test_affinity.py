"""Lookahead inter-task affinity (TAG) on planted structure: a task and its exact copy help
each other most; a copy with shuffled labels gets less from either; measuring affinity does
not change training."""

import numpy as np
import pandas as pd
import pytest

from trainables import train
from trainables.data import read_source
from trainables.errors import InputError
from trainables.spec import TaskSpec


def planted(tmp_path):
    raw = read_source("rt", TaskSpec(source="builtin:rt_polarity"))
    rng = np.random.default_rng(0)
    pick = rng.choice(len(raw.train.texts), size=600, replace=False)
    texts, labels = [raw.train.texts[i] for i in pick], [raw.train.labels[i] for i in pick]
    shuffled = list(rng.permutation(labels))
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame({"text": texts, "label": shuffled}).to_csv(tmp_path / "noise.csv", index=False)
    return {
        "encoder": {"model": "builtin:tiny-random", "max_length": 32},
        "tasks": {"a": {"source": f"csv:{tmp_path / 'a.csv'}", "type": "classification"},
                  "copy": {"source": f"csv:{tmp_path / 'a.csv'}", "type": "classification"},
                  "noise": {"source": f"csv:{tmp_path / 'noise.csv'}", "type": "classification"}},
        "train": {"epochs": 2, "batch_size": 32, "lr": 1e-3, "num_threads": 1, "device": "cpu",
                  "schedule": "joint", "affinity_every": 2},
    }


def test_affinity_recovers_a_planted_copy_and_noise(tmp_path):
    cfg = planted(tmp_path)
    cfg["train"]["epochs"] = 4  # the random tiny encoder first has to learn the task
    rows = []
    train(cfg, rows.append)
    z = {k.split("/", 1)[1]: v for k, v in rows[-1].items() if k.startswith("affinity/")}
    assert len(z) == 9  # every ordered pair of the three tasks and the diagonal, at every epoch's report
    assert all(k.startswith("affinity/") for r in rows for k in r if "affinity" in k)
    assert z["a/copy"] > 0 and z["copy/a"] > 0  # a step on a task lowers its copy's loss
    assert z["a/copy"] > z["a/noise"] and z["copy/a"] > z["noise/a"]
    assert z["a/copy"] > 3 * abs(z["a/noise"])
    # the diagonal is measured on another batch of the same task: a real-label step generalises
    # to unseen sentences of its task, a shuffled-label step does not
    assert z["a/a"] > 0 and z["copy/copy"] > 0
    assert z["a/a"] > 3 * abs(z["noise/noise"])


def test_measuring_affinity_does_not_change_training(tmp_path):
    cfg = planted(tmp_path)
    cfg["train"]["max_train_examples"] = 192
    with_rows, without_rows = [], []
    train(cfg, with_rows.append)
    cfg["train"]["affinity_every"] = None
    train(cfg, without_rows.append)
    for a, b in zip(with_rows, without_rows, strict=True):
        assert a["val/a/accuracy"] == b["val/a/accuracy"] and a["train/noise/loss"] == pytest.approx(
            b["train/noise/loss"], rel=1e-6)


def test_affinity_needs_shared_parameters(tmp_path):
    cfg = planted(tmp_path)
    cfg["train"]["sharing"] = "soft"
    with pytest.raises(InputError, match="affinity needs parameters the tasks share"):
        train(cfg, lambda row: None)


def test_gradient_affinity_by_hand():
    import torch

    from trainables.affinity import GradientAffinity

    w = torch.nn.Parameter(torch.zeros(3))
    meter = GradientAffinity()
    ga, gb, ga2 = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([2.0, -1.0, 2.0]), torch.tensor([2.0, 2.0, 1.0])
    w.grad = ga * 0.5  # weight 0.5 in the objective: divided out
    meter.observe("a", [w], loss=2.0, lr=0.1, scale=0.5)
    assert meter.row() == {}  # nothing to pair with yet
    w.grad = gb
    meter.observe("b", [w], loss=4.0, lr=0.1)
    w.grad = ga2
    meter.observe("a", [w], loss=1.0, lr=0.2)
    z = meter.row()
    # <ga, gb> = 0; <ga2, gb> = 4; <ga2, ga> = 6
    assert z["gaffinity/b/a"] == pytest.approx((0.1 * 0 / 2.0 + 0.2 * 4 / 1.0) / 2)  # onto a: a's loss then
    assert z["gaffinity/a/b"] == pytest.approx((0.1 * 0 / 4.0 + 0.2 * 4 / 4.0) / 2)  # onto b: b's latest loss
    assert z["gaffinity/a/a"] == pytest.approx(0.2 * 6 / 1.0)  # two batches of a
    assert z["gcos/a/b"] == pytest.approx((0 + 4 / (3 * 3)) / 2) and z["gcos/a/a"] == pytest.approx(6 / (3 * 5 ** 0.5))
    again = GradientAffinity()
    again.load(meter.state())
    assert again.row() == z
    w.grad = gb
    meter.observe("b", [w], loss=4.0, lr=0.1)
    again.observe("b", [w], loss=4.0, lr=0.1)
    assert again.row() == meter.row()  # a resumed meter pairs with the gradients it had kept


def test_gradient_affinity_in_training(tmp_path):
    cfg = planted(tmp_path)
    short = {**cfg, "train": {**cfg["train"], "schedule": "round_robin", "epochs": 1, "max_train_examples": 64}}
    rows = []
    train(short, rows.append)
    assert rows and not any(k.startswith(("gaffinity/", "gcos/")) for k in rows[-1])  # off by default
    rows = []
    train({**short, "train": {**short["train"], "gradient_affinity": True, "schedule": "joint"}}, rows.append)
    # joint: every task in every step, no single task's gradient to read
    assert rows and not any(k.startswith(("gaffinity/", "gcos/")) for k in rows[-1])
    # the lookahead (every 2 steps in planted()) is not what is checked here: it never fires
    cfg["train"].update(schedule="round_robin", epochs=3, gradient_affinity=True, affinity_every=10 ** 9)
    rows = []
    train(cfg, rows.append)
    g = {k.split("/", 1)[1]: v for k, v in rows[-1].items() if k.startswith("gaffinity/")}
    assert len(g) == 9
    assert g["a/copy"] > 0 and g["a/copy"] > g["a/noise"] and g["copy/a"] > g["noise/a"]


def test_resumed_run_measures_both_affinities_as_the_uninterrupted_one(tmp_path):
    import torch

    from trainables.loop import build, fit

    cfg = planted(tmp_path)
    cfg["train"].update(schedule="round_robin", epochs=3, gradient_affinity=True, max_train_examples=128)
    full: list[dict] = []
    fit(build(cfg), full.append, save_state=lambda s: torch.save(s, tmp_path / f"epoch{s['epoch']}.pt"))
    state = torch.load(tmp_path / "epoch1.pt", weights_only=True)
    resumed: list[dict] = []
    fit(build(cfg), resumed.append, state=state)
    keys = [k for k in full[-1] if k.startswith(("affinity/", "gaffinity/", "gcos/"))]
    assert any(k.startswith("affinity/") for k in keys) and any(k.startswith("gaffinity/") for k in keys)
    # the lookahead's own batch draws and the gradient meter's sums and last gradients restored
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in full[1:]]
