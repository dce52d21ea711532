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
