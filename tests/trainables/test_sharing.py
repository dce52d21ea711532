"""Sharing modes: which parameters are shared, and the soft-sharing penalty."""

import itertools

import pytest
import torch

from trainables.encoder import load_encoder
from trainables.errors import InputError
from trainables.model import MultiTaskModel
from trainables.sharing import SHARING, layer_list
from trainables.spec import EncoderSpec, TrainSpec
from trainables.tasks import TASK_TYPES

TASKS = ["a", "b", "c"]


def model_for(mode: str, **train: object) -> tuple[MultiTaskModel, dict]:
    base, _ = load_encoder(EncoderSpec(model="builtin:tiny-random"))
    encs = SHARING[mode].encoders(base, TASKS, TrainSpec(sharing=mode, **train))  # type: ignore[arg-type]
    types = {t: TASK_TYPES["classification"] for t in TASKS}
    return MultiTaskModel(encs, types, {t: 2 for t in TASKS}), encs


def test_hard_sharing_is_one_encoder():
    model, encs = model_for("hard")
    assert len({id(e) for e in encs.values()}) == 1
    n_enc = sum(p.numel() for p in encs["a"].parameters())
    assert sum(p.numel() for p in model.shared_parameters()) == n_enc


def test_single_and_soft_share_nothing():
    for mode in ("single", "soft"):
        model, encs = model_for(mode)
        assert len({id(e) for e in encs.values()}) == 3 and model.shared_parameters() == []


def test_partial_shares_embeddings_and_bottom_layers_only():
    model, encs = model_for("partial", branch_layer=1)
    la, lb = layer_list(encs["a"]), layer_list(encs["b"])
    assert la[0] is lb[0] and la[1] is not lb[1]
    assert encs["a"].embeddings is encs["b"].embeddings
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for p in la[0].parameters())
    assert not any(id(p) in shared for p in la[1].parameters())
    # GradNorm's W: the top shared layer
    assert [id(p) for p in model.last_shared_parameters("b")] == [id(p) for p in la[0].parameters()]


def test_partial_branch_layer_out_of_range():
    with pytest.raises(InputError, match="train.branch_layer: 5 is outside 0..2"):
        model_for("partial", branch_layer=5)


def test_soft_penalty_equals_sum_of_pairwise_squared_distances():
    _, encs = model_for("soft")
    torch.manual_seed(0)
    with torch.no_grad():
        for e in encs.values():
            for p in e.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    spec = TrainSpec(sharing="soft", soft_l2=0.5)
    got = SHARING["soft"].penalty(encs, spec)
    params = {t: list(e.parameters()) for t, e in encs.items()}
    want = sum(
        sum((pi - pj).pow(2).sum() for pi, pj in zip(params[i], params[j]))
        for i, j in itertools.combinations(TASKS, 2)
    )
    assert got is not None and float(got) == pytest.approx(0.5 * float(want), rel=1e-4)


def test_lora_gives_each_task_its_adapter_on_one_frozen_encoder():
    model, encs = model_for("lora", lora_rank=4)
    base = encs["a"].peft
    assert all(e.peft is base for e in encs.values()) and len({id(e) for e in encs.values()}) == 3
    frozen = [n for n, p in base.named_parameters() if not p.requires_grad]
    assert frozen and all("lora_" not in n for n in frozen)  # the encoder's own weights alone
    assert model.shared_parameters() == []  # nothing trained is shared: the adapters are the tasks' own
    counts = model.parameter_counts()
    assert counts["params/trainable"] < 0.05 * counts["params/total"]
    # a task's forward pass reaches its own adapter and no other
    batch = {"input_ids": torch.randint(5, 100, (2, 6)), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    model("b", batch).sum().backward()
    with_grad = {n.split("lora_")[1].split(".")[1] for n, p in base.named_parameters()
                 if "lora_B" in n and p.grad is not None}
    assert with_grad == {"b"}
    # GradNorm's W: the top layer's part of the task's own adapter
    top = {id(p) for p in layer_list(encs["c"])[-1].parameters()}
    w = {id(p) for p in model.last_shared_parameters("c")}
    adapter_c = {id(p) for n, p in base.named_parameters() if ".c." in n}
    assert w and w <= top and w <= adapter_c


def test_lora_with_a_trained_encoder_shares_it():
    model, encs = model_for("lora", lora_train_encoder=True)
    shared = {id(p) for p in model.shared_parameters()}
    own = {id(p) for n, p in encs["a"].peft.named_parameters() if "lora_" not in n}
    assert shared == own  # the encoder's weights, shared by every task; the adapters are not


def test_lora_targets_must_name_linear_layers():
    with pytest.raises(InputError, match=r"train.lora_targets: the encoder has no linear layer named q_proj "
                                         r"\(its linear layers: dense, key, query, value\)"):
        model_for("lora", lora_targets=["q_proj", "query"])
    _, encs = model_for("lora", lora_targets=["dense"])
    assert encs["a"].peft.peft_config["a"].target_modules == {"dense"}
