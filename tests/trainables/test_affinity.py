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


@pytest.mark.slow  # 4 epochs of real learning on 3 x 600 examples; the logic's unit tests follow
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
    # 3 steps an epoch: affinity measured at step 2, then a step of the same epoch and a whole
    # epoch trained after it
    cfg["train"].update(max_train_examples=96, max_eval_examples=32)
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


def test_resumed_run_measures_the_affinity_as_the_uninterrupted_one(tmp_path):
    import torch

    from trainables.loop import build, fit

    cfg = planted(tmp_path)
    cfg["train"].update(schedule="round_robin", epochs=2, max_train_examples=64, max_eval_examples=32)
    full: list[dict] = []
    fit(build(cfg), full.append, save_state=lambda s: torch.save(s, tmp_path / f"epoch{s['epoch']}.pt"))
    state = torch.load(tmp_path / "epoch1.pt", weights_only=True)
    resumed: list[dict] = []
    fit(build(cfg), resumed.append, state=state)
    keys = [k for k in full[-1] if k.startswith("affinity/")]
    assert keys
    # the lookahead's own batch draws restored
    assert [{k: r[k] for k in keys} for r in resumed] == [{k: r[k] for k in keys} for r in full[1:]]
