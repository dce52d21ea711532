"""A trained multi-task model outside training: saved as a folder, loaded, and asked for
predictions (no MLflow here: the MLflow ``pyfunc`` wrapper is ``orchestrator/store/pyfunc_entry.py``).

The folder holds everything inference needs and nothing of training: the model's weights
(``weights.pt``, read with ``torch.load(weights_only=True)``), the encoder's architecture
(``encoder/config.json``; the weights rebuild it, no pretrained download), the tokenizer,
and ``mtlo_model.json``: each task's type, label names, whether it reads text pairs, the
regression targets' scale, and the resolved run config. An MLflow model ships this package
with it (``code_paths``), so it loads where mtlo is not installed.

Inputs are texts (and second texts for pair tasks); a tagging task reads its text as
whitespace-separated words. Each prediction is a dict per task: ``label`` and
``probability`` (classification), ``value`` (regression), ``tags`` (one per word) and
``entities`` (type, start, end, text; character offsets into the input) for tagging.

The training side never imports this module. An MLflow model is logged "from code"
(``orchestrator/store/pyfunc_entry.py``), never pickled.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.state import cpu_weights

META_FILE = "mtlo_model.json"
TRUST_REMOTE_CODE_ENV = "MTLO_TRUST_REMOTE_CODE"  # serving an MLflow model: the encoder's remote code, if set
WEIGHTS_FILE = "weights.pt"
FORMAT = 1
_WORD = re.compile(r"\S+")


class PredictError(ValueError):
    """Input a model cannot answer (a missing column, pairs for a model that reads none...)."""


def save_model(exp: Any, folder: str | Path, *, info: dict[str, Any] | None = None) -> Path:
    """Write ``exp`` (a :class:`trainables.Experiment` whose model holds the weights to keep)
    to ``folder``; ``info``: anything else to record (scores, the search and trial)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = exp.model
    torch.save(cpu_weights(model), folder / WEIGHTS_FILE)  # a shared encoder once, from any device
    next(iter(model.encoders.values())).config.save_pretrained(folder / "encoder")
    for enc in model.encoders.values():  # lora: each task's adapter the PEFT way too (adapters/<task>/)
        save_adapter = getattr(enc, "save_adapter", None)
        if callable(save_adapter):
            save_adapter(folder / "adapters")
    exp.tokenizer.save_pretrained(folder / "tokenizer")
    spec = exp.spec
    tasks = {t: {"type": d.type, "labels": list(d.label_names), "num_labels": d.num_labels,
                 "pair": spec.tasks[t].text_pair is not None, "main_metric": exp.main_metric[t],
                 "target_mean": d.target_mean, "target_std": d.target_std}
             for t, d in exp.data.items()}
    meta = {"format": FORMAT, "tasks": tasks, "run": spec.to_dict(), "info": info or {}}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return folder


class Predictor:
    """A saved model, loaded for inference (on the GPU when there is one)."""

    def __init__(self, folder: str | Path, device: str | None = None, *, trust_remote_code: bool = False) -> None:
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        from trainables.model import MultiTaskModel
        from trainables.sharing import sharing_mode
        from trainables.spec import RunSpec
        from trainables.tasks import task_type

        folder = Path(folder)
        self.meta = json.loads((folder / META_FILE).read_text())
        if self.meta.get("format") != FORMAT:
            raise PredictError(f"{folder}: not an mtlo model of format {FORMAT}")
        spec = RunSpec.from_dict(self.meta["run"])
        self.spec = spec
        self.tasks: dict[str, dict[str, Any]] = self.meta["tasks"]
        # remote code only where the user who loads it asks (never because the folder says so: a
        # model from a shared registry would otherwise run whatever code its config points to)
        config = AutoConfig.from_pretrained(folder / "encoder", trust_remote_code=trust_remote_code)
        kwargs = {"add_pooling_layer": False} if config.model_type == "bert" else {}
        base = AutoModel.from_config(config, trust_remote_code=trust_remote_code, **kwargs)
        encoders = sharing_mode(spec.train.sharing).encoders(base, list(self.tasks), spec.train)
        self.types = {t: task_type(m["type"]) for t, m in self.tasks.items()}
        model = MultiTaskModel(encoders, self.types, {t: m["num_labels"] for t, m in self.tasks.items()},
                               pooling=spec.encoder.pooling)
        model.load_state_dict(torch.load(folder / WEIGHTS_FILE, weights_only=True, map_location="cpu"))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer", trust_remote_code=trust_remote_code)
        self.max_length = spec.encoder.max_length

    def check(self, tasks: Sequence[str] | None, has_pairs: bool) -> list[str]:
        """The tasks to answer; :class:`PredictError` for an unknown task or input that does not fit."""
        chosen = list(tasks) if tasks else list(self.tasks)
        unknown = [t for t in chosen if t not in self.tasks]
        if unknown:
            raise PredictError(f"--tasks: unknown task(s) {', '.join(unknown)} (this model has: "
                               f"{', '.join(self.tasks)})")
        need = [t for t in chosen if self.tasks[t]["pair"]]
        if need and not has_pairs:
            raise PredictError(f"text_pair: task(s) {', '.join(need)} read text pairs; the input has no "
                               "'text_pair' column")
        if has_pairs and not need:
            kinds = ", ".join(f"{t}: {self.tasks[t]['type']}" for t in chosen)
            raise PredictError(f"text_pair: the input has text pairs, but no task of this model reads them ({kinds})")
        return chosen

    @torch.no_grad()
    def predict(self, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                tasks: Sequence[str] | None = None, batch_size: int = 64,
                on_batch: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
        """One record per text: every chosen task's prediction. ``on_batch(n)`` after each
        batch of ``n`` texts (a progress bar)."""
        chosen = self.check(tasks, pairs is not None)
        texts = [str(t) for t in texts]
        out: list[dict[str, Any]] = [{} for _ in texts]
        # sentence-level tasks that share an encoder and read the same input share one forward pass
        groups: dict[tuple[int, bool], list[str]] = {}
        for t in chosen:
            if self.tasks[t]["type"] != "tagging":
                groups.setdefault((id(self.model.encoders[t]), self.tasks[t]["pair"]), []).append(t)
        tagging = [t for t in chosen if self.tasks[t]["type"] == "tagging"]
        lengths = np.array([len(t) for t in texts])
        order = np.argsort(-lengths, kind="stable")  # similar lengths together: little padding
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size].tolist()
            for (_, pair), group in groups.items():
                second = [str(pairs[i]) for i in idx] if pair and pairs is not None else None
                enc = self.tokenizer([texts[i] for i in idx], second, truncation=True, max_length=self.max_length,
                                     padding=True, return_tensors="pt")
                if not pair:
                    enc.pop("token_type_ids", None)
                for t, logits in self._logits(group, enc).items():
                    for row, i in enumerate(idx):
                        out[i][t] = self._decode(t, logits[row])
            for t in tagging:
                self._tag(t, [texts[i] for i in idx], [out[i] for i in idx])
            if on_batch is not None:
                on_batch(len(idx))
        return out

    def _logits(self, tasks: list[str], enc: Any) -> dict[str, torch.Tensor]:
        """Each task's logits (float32) for one tokenized batch; ``tasks`` share their encoder."""
        batch = {k: v.to(self.device) for k, v in enc.items()}
        bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()  # as training evaluates
        with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            hidden = self.model.encode(tasks[0], batch)
            return {t: self.model.heads[t](hidden).float() for t in tasks}

    def _decode(self, task: str, logits: torch.Tensor) -> dict[str, Any]:
        meta = self.tasks[task]
        if meta["type"] == "regression":
            return {"value": float(logits.squeeze(-1)) * meta["target_std"] + meta["target_mean"]}
        probs = torch.softmax(logits, -1)
        k = int(probs.argmax())
        return {"label": meta["labels"][k], "probability": float(probs[k])}

    def _tag(self, task: str, texts: list[str], out: list[dict[str, Any]]) -> None:
        words = [[(m.group(), m.start(), m.end()) for m in _WORD.finditer(t)] for t in texts]
        enc = self.tokenizer([[w for w, _, _ in ws] or [""] for ws in words], is_split_into_words=True,
                             truncation=True, max_length=self.max_length, padding=True, return_tensors="pt")
        enc.pop("token_type_ids", None)
        pred = self._logits([task], enc)[task].argmax(-1).cpu()
        names = self.tasks[task]["labels"]
        for row, (ws, text) in enumerate(zip(words, texts)):
            tags = ["O"] * len(ws)  # words cut off by max_length are tagged O
            prev = None
            for pos, wid in enumerate(enc.word_ids(row)):
                if wid is not None and wid != prev and wid < len(ws):
                    tags[wid] = names[int(pred[row, pos])]
                prev = wid
            out[row][task] = {"tags": tags, "entities": [
                {"type": kind, "start": ws[a][1], "end": ws[b][2], "text": text[ws[a][1]:ws[b][2]]}
                for kind, a, b in spans(tags)]}


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, last word) of each entity in BIO tags (an ``I-`` without its ``B-``
    starts an entity, as seqeval reads it)."""
    found: list[tuple[str, int, int]] = []
    kind, begin = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, typ = tag.partition("-")
        if kind is not None and (prefix != "I" or typ != kind):
            found.append((kind, begin, i - 1))
            kind = None
        if prefix == "B" or (prefix == "I" and kind is None):
            kind, begin = typ, i
    return found
