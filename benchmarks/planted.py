"""Planted transfer structure from real text, for checking that the transfer methods find it.

Writes five tasks (each a folder with train.csv and validation.csv, read as ``hf:FOLDER``)
and a config under ``--out``:

- ``small``: 200 training sentences of rt_polarity (movie-review polarity), 400 validation;
- ``twin``: 2,000 *other* rt_polarity sentences, labelled by the same rule: should help ``small``;
- ``noise``: 2,000 other rt_polarity sentences with *shuffled* labels: should not help, and
  may hurt, ``small`` (its head learns nothing; its gradient is noise for the shared encoder);
- ``topic``: 1,000 trec_coarse questions (question type): unrelated to sentiment;
- ``topic_copy``: an exact copy of ``topic``: the planted null for ``small`` (it is as
  unrelated to ``small`` as ``topic`` is, and helps ``topic`` as a copy of itself).

``truth.json`` beside the config states the expected signs, which benchmarks/grouping.py
checks against each method's findings.

    python -m benchmarks.planted --out /tmp/planted [--encoder builtin:tiny-random]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from trainables.data import read_source
from trainables.spec import TaskSpec

TRUTH = {
    "helps": [["small", "twin"]],  # [task, partner]: Δ_task({task, partner}) > 0
    "hurts_or_neutral": [["small", "noise"]],
    "null": [["small", "topic_copy"], ["small", "topic"]],  # no transfer expected
}


def _write(folder: Path, train: pd.DataFrame, val: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    train.to_csv(folder / "train.csv", index=False)
    val.to_csv(folder / "validation.csv", index=False)


def make(out: Path, encoder: str, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rt = read_source("rt", TaskSpec(source="builtin:rt_polarity"))
    texts = list(rt.train.texts) + list(rt.validation.texts if rt.validation is not None else [])
    labels = list(rt.train.labels) + list(rt.validation.labels if rt.validation is not None else [])
    order = rng.permutation(len(texts))
    pick = lambda lo, hi: pd.DataFrame({"text": [texts[i] for i in order[lo:hi]],  # noqa: E731
                                        "label": [labels[i] for i in order[lo:hi]]})
    small_train, small_val = pick(0, 200), pick(200, 600)
    twin_train, twin_val = pick(600, 2600), pick(2600, 2800)
    noise_train, noise_val = pick(2800, 4800), pick(4800, 5000)
    noise_train["label"] = rng.permutation(noise_train["label"].to_numpy())
    noise_val["label"] = rng.permutation(noise_val["label"].to_numpy())
    trec = read_source("trec", TaskSpec(source="builtin:trec_coarse"))
    t_order = rng.permutation(len(trec.train.texts))
    topic = pd.DataFrame({"text": [trec.train.texts[i] for i in t_order[:1300]],
                          "label": [trec.train.labels[i] for i in t_order[:1300]]})
    for name, (tr, va) in {"small": (small_train, small_val), "twin": (twin_train, twin_val),
                           "noise": (noise_train, noise_val), "topic": (topic[:1000], topic[1000:]),
                           "topic_copy": (topic[:1000], topic[1000:])}.items():
        _write(out / "data" / name, tr, va)
    config = {
        "name": "planted",
        "encoder": {"model": encoder, "max_length": 64},
        "tasks": {name: {"source": f"hf:{out / 'data' / name}", "type": "classification"}
                  for name in ("small", "twin", "noise", "topic", "topic_copy")},
        "train": {"epochs": 3, "batch_size": 32, "lr": 1e-3 if encoder == "builtin:tiny-random" else 1e-4,
                  "head_lr": 3e-3, "schedule": "round_robin", "max_train_examples": 2000, "seed": 0},
        "search": {"max_concurrent": None},
        "resources": {"cpus_per_trial": 1},
        "mlflow": {"tracking_uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": "planted"},
        "ray": {"storage": str(out / "ray_results")},
    }
    path = out / "planted.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    (out / "truth.json").write_text(json.dumps(TRUTH, indent=2))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--encoder", default="builtin:tiny-random")
    args = ap.parse_args()
    print(make(Path(args.out).resolve(), args.encoder))


if __name__ == "__main__":
    main()
