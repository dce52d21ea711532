"""Training throughput: ``mtlo``'s trial function against a typical tutorial recipe.

Both sides train MiniLM-L6 on the same examples of three built-in tasks (rt_polarity,
vader_movies, trec_coarse), batch 32, truncation at 128 tokens, one epoch, 2 CPU threads:

- mtlo: ``trainables.build`` + ``fit`` with hard sharing (tokenized once, dynamic padding,
  length-grouped batches); its time includes tokenization (cache cleared) and a (tiny)
  validation pass, so it is, if anything, overstated.
- tutorial: per task a ``Dataset`` that tokenizes in ``__getitem__`` with
  ``padding="max_length", max_length=128``, a ``DataLoader``, one model per task, a plain loop.

The runs alternate (mtlo, tutorial, mtlo, ...) so that machine noise hits both alike;
the script prints the median examples/second of each and their ratio.

    .venv/bin/python -m benchmarks.throughput [--runs 3] [--examples 256]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from trainables import build, fit
from trainables.data import prepare
from trainables.encoder import load_encoder
from trainables.spec import EncoderSpec, TaskSpec, TrainSpec

TASKS = {"rt": "rt_polarity", "vader": "vader_movies", "trec": "trec_coarse"}


def mtlo_config(n: int, threads: int) -> dict:
    return {
        "encoder": {"model": "builtin:minilm-l6", "max_length": 128},
        "tasks": {t: {"source": f"builtin:{b}"} for t, b in TASKS.items()},
        "train": {"epochs": 1, "batch_size": 32, "lr": 5e-5, "sharing": "hard", "schedule": "joint",
                  "max_train_examples": n, "max_eval_examples": 8, "num_threads": threads},
    }


def run_mtlo(n: int, threads: int, tmp: Path) -> float:
    prepare._MEMORY.clear()
    for f in (tmp / "tokenized").glob("*.pt"):
        f.unlink()
    t0 = time.perf_counter()
    exp = build(mtlo_config(n, threads))
    result = fit(exp, lambda row: None)
    seconds = time.perf_counter() - t0
    return result.examples / seconds


class TutorialDataset(Dataset):
    """The common recipe: tokenize each example when it is fetched, pad to max_length."""

    def __init__(self, texts, labels, tokenizer, max_length=128):
        self.texts, self.labels, self.tok, self.max_length = texts, labels, tokenizer, max_length

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        enc = self.tok(self.texts[i], padding="max_length", truncation=True, max_length=self.max_length,
                       return_tensors="pt")
        item = {k: v.squeeze(0) for k, v in enc.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


class TutorialModel(nn.Module):
    def __init__(self, encoder, num_out):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, num_out)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(out.last_hidden_state[:, 0])


def tutorial_data(n: int) -> dict:
    """The same training examples mtlo trains on (its deterministic split and subsample)."""
    out = {}
    for t, b in TASKS.items():
        sp = prepare.raw_splits(t, TaskSpec(source=f"builtin:{b}"), TrainSpec(max_train_examples=n))
        classes = sp.label_names if sp.raw.type == "classification" else None
        train = sp.train
        labels = [classes.index(str(v)) if classes else float(v) for v in train.labels]
        out[t] = (train.texts, labels, len(classes) if classes else 1)
    return out


def run_tutorial(data: dict, base: nn.Module, tokenizer, threads: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    examples = 0
    for _t, (texts, labels, k) in data.items():  # one model per task, trained in turn
        model = TutorialModel(copy.deepcopy(base), k)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
        loader = DataLoader(TutorialDataset(texts, labels, tokenizer), batch_size=32, shuffle=True)
        model.train()
        for batch in loader:
            y = batch.pop("labels")
            logits = model(**batch)
            loss = nn.functional.cross_entropy(logits, y) if k > 1 else \
                nn.functional.mse_loss(logits.squeeze(-1), y.float())
            loss.backward()
            opt.step()
            opt.zero_grad()
            examples += len(y)
    return examples / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--examples", type=int, default=256, help="training examples per task")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import os
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mtlo-bench-"))
    os.environ["MTLO_CACHE_DIR"] = str(tmp)
    base, tokenizer = load_encoder(EncoderSpec(model="builtin:minilm-l6"))
    data = tutorial_data(args.examples)
    mtlo, tut = [], []
    for i in range(args.runs):
        mtlo.append(run_mtlo(args.examples, args.threads, tmp))
        tut.append(run_tutorial(data, base, tokenizer, args.threads))
        print(f"run {i + 1}: mtlo {mtlo[-1]:.1f} ex/s, tutorial {tut[-1]:.1f} ex/s", file=sys.stderr)
    result = {
        "examples_per_task": args.examples, "runs": args.runs, "threads": args.threads,
        "mtlo_ex_per_s": [round(x, 2) for x in mtlo], "tutorial_ex_per_s": [round(x, 2) for x in tut],
        "mtlo_median": round(statistics.median(mtlo), 2), "tutorial_median": round(statistics.median(tut), 2),
        "ratio_of_medians": round(statistics.median(mtlo) / statistics.median(tut), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
