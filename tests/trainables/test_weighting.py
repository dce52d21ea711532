"""Loss-weighting methods against hand-computed cases."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from trainables.errors import InputError
from trainables.weighting import DWA, PCGrad, Static, Uncertainty, make_weighting


class TwoTaskToy(nn.Module):
    """A shared 2-vector and one private scalar per task: losses are linear in the shared part."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Parameter(torch.zeros(2))
        self.heads = nn.ParameterDict({"a": nn.Parameter(torch.zeros(1)), "b": nn.Parameter(torch.zeros(1))})

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.shared]


def test_static_uses_configured_weights_default_one():
    toy = TwoTaskToy()
    w = Static(["a", "b"], {"a": 3.0})
    losses = {"a": (toy.shared * torch.tensor([1.0, 0.0])).sum(), "b": (toy.shared * torch.tensor([0.0, 1.0])).sum()}
    assert w.backward(losses, toy) == {"a": 3.0, "b": 1.0}  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == [3.0, 1.0]


def test_pcgrad_projects_conflicting_gradients():
    # g_a = (1, 0), g_b = (-1, 1): they conflict (dot = -1). PCGrad (Yu et al. 2020):
    # g_a' = g_a - (g_a.g_b / |g_b|^2) g_b = (0.5, 0.5); g_b' = g_b - (g_b.g_a / |g_a|^2) g_a = (0, 1)
    toy = TwoTaskToy()
    losses = {"a": (toy.shared * torch.tensor([1.0, 0.0])).sum() + toy.heads["a"].sum(),
              "b": (toy.shared * torch.tensor([-1.0, 1.0])).sum() + 2 * toy.heads["b"].sum()}
    PCGrad(["a", "b"], {}).backward(losses, toy)  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == pytest.approx([0.5, 1.5])
    # private parameters keep their own plain gradients
    assert toy.heads["a"].grad.item() == 1.0 and toy.heads["b"].grad.item() == 2.0


def test_pcgrad_leaves_agreeing_gradients_alone():
    toy = TwoTaskToy()
    losses = {"a": (toy.shared * torch.tensor([1.0, 0.0])).sum(),
              "b": (toy.shared * torch.tensor([1.0, 1.0])).sum()}
    PCGrad(["a", "b"], {}).backward(losses, toy)  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == pytest.approx([2.0, 1.0])


def test_uncertainty_weight_is_half_inverse_variance():
    toy = TwoTaskToy()
    w = Uncertainty(["a", "b"], {})
    with torch.no_grad():
        w.log_var.copy_(torch.tensor([0.0, math.log(4.0)]))
    losses = {"a": toy.shared.sum(), "b": toy.shared.sum()}
    used = w.backward(losses, toy)  # type: ignore[arg-type]
    assert used == pytest.approx({"a": 0.5, "b": 0.125})
    # d/ds (0.5 e^-s L + 0.5 s) at L=0 is 0.5: the log-variance is pushed down only by the loss
    assert w.log_var.grad.tolist() == pytest.approx([0.5, 0.5])


def test_dwa_weights_follow_loss_ratios():
    w = DWA(["a", "b"], {}, temperature=2.0)
    w.end_epoch({"a": 1.0, "b": 1.0})
    assert w.current == {"a": 1.0, "b": 1.0}  # needs two epochs of history
    w.end_epoch({"a": 0.5, "b": 1.0})  # a is learning fast, b stalls: b gets more weight
    ea, eb = math.exp(0.5 / 2), math.exp(1.0 / 2)
    assert w.current["a"] == pytest.approx(2 * ea / (ea + eb))
    assert w.current["b"] == pytest.approx(2 * eb / (ea + eb))
    assert sum(w.current.values()) == pytest.approx(2.0)


def test_unknown_weighting_and_task_weights_are_refused():
    with pytest.raises(InputError, match="valid: static, uncertainty, gradnorm, dwa, pcgrad, famo"):
        make_weighting("nope", ["a"], {})
    with pytest.raises(InputError, match="unknown task"):
        make_weighting("static", ["a"], {"zzz": 1.0})


def test_gradnorm_step_matches_a_hand_computed_one():
    """Shared W = (1, 1); L_a = 3 W0 + 0 (|grad| 3), L_b = W1 (|grad| 1). Step 1: the initial
    losses are these, so every ratio is 1 and the target norm is the mean, 2; the GradNorm loss
    |3 w_a - 2| + |1 w_b - 2| has gradient (3, -1) at w = (1, 1); the model gets w_a grad L_a +
    w_b grad L_b = (3, 1). Step 2, after an SGD step of 0.1 on w, renormalized to sum 2:
    w = (0.7, 1.1) * 2 / 1.8; L_a halves (ratio 0.5), L_b stays (ratio 1): targets
    Gbar * (r / mean r)^1.5."""
    from trainables.weighting import GradNorm

    class Toy(TwoTaskToy):
        def last_shared_parameters(self, task):
            return [self.shared]

    toy = Toy()
    with torch.no_grad():
        toy.shared.fill_(1.0)
    gn = GradNorm(["a", "b"], {})

    def losses(scale_a):
        return {"a": scale_a * 3.0 * toy.shared[0] + 0 * toy.heads["a"].sum(),
                "b": toy.shared[1] + 0 * toy.heads["b"].sum()}

    w = gn.backward(losses(1.0), toy)  # type: ignore[arg-type]
    assert w == {"a": 1.0, "b": 1.0}
    assert gn.w.grad.tolist() == pytest.approx([3.0, -1.0])
    assert toy.shared.grad.tolist() == pytest.approx([3.0, 1.0])
    with torch.no_grad():  # what the optimizer would do to w
        gn.w -= 0.1 * gn.w.grad
    toy.shared.grad = None
    w = gn.backward(losses(0.5), toy)  # type: ignore[arg-type]
    wa, wb = 0.7 * 2 / 1.8, 1.1 * 2 / 1.8
    assert w == pytest.approx({"a": wa, "b": wb})
    g = [1.5 * wa, 1.0 * wb]  # |grad (w_i L_i)|
    ratio = [0.5, 1.0]
    target = [(sum(g) / 2) * (r / 0.75) ** 1.5 for r in ratio]
    sign = [math.copysign(1.0, gi - ti) for gi, ti in zip(g, target)]
    assert gn.w.grad.tolist() == pytest.approx([sign[0] * 1.5, sign[1] * 1.0])
    assert toy.shared.grad.tolist() == pytest.approx([wa * 1.5, wb * 1.0])


def test_famo_weights_and_logit_step_match_a_hand_computed_one():
    """FAMO (Liu et al. 2023), two tasks, logits xi = 0, losses 2.0 and 0.5 before the step.
    Weights: z = (1/2, 1/2), c = z_a / 2.0 + z_b / 0.5 = 1.25, task t's loss gets 2 z_t / (c L_t):
    0.4 and 1.6 (they sum to the number of tasks). After the step the losses are 1.0 and 0.45:
    delta = log(2/1) - ..., = (0.693147, 0.105361); J_softmax^T delta = z (delta - z.delta) =
    (+0.146893, -0.146893); Adam's first step moves each logit by lr against its gradient's
    sign (m/sqrt(v) = +-1; weight decay adds nothing at xi = 0): xi = (-0.025, +0.025). The
    next step gives task b, whose loss fell least, the larger share at equal losses."""
    from trainables.weighting import FAMO

    toy = TwoTaskToy()
    famo = FAMO(["a", "b"], {})
    la, lb = (toy.shared * torch.tensor([1.0, 0.0])).sum() + 2.0, (toy.shared * torch.tensor([0.0, 1.0])).sum() + 0.5
    used = famo.backward({"a": la, "b": lb}, toy)  # type: ignore[arg-type]
    assert {t: float(v) for t, v in used.items()} == pytest.approx({"a": 0.4, "b": 1.6})
    assert toy.shared.grad.tolist() == pytest.approx([0.4, 1.6])  # d(0.4 L_a + 1.6 L_b)/d shared
    famo.after_step({"a": torch.tensor(1.0), "b": torch.tensor(0.45)})
    assert famo.logits.detach().tolist() == pytest.approx([-0.025, 0.025], abs=1e-7)
    toy.shared.grad = None
    equal = famo.backward({"a": toy.shared.sum() + 1.0, "b": toy.shared.sum() + 1.0}, toy)  # type: ignore[arg-type]
    z_b = math.exp(0.025) / (math.exp(0.025) + math.exp(-0.025))
    assert float(equal["b"]) == pytest.approx(2 * z_b) and float(equal["a"]) == pytest.approx(2 * (1 - z_b))


def test_famo_state_survives_a_checkpoint():
    """extra_state/load_extra_state: the logits and Adam's moments, so a resumed run goes on
    with the same weights and the same next step."""
    from trainables.weighting import FAMO

    def run(famo: FAMO, losses_after: tuple[float, float]) -> None:
        toy = TwoTaskToy()
        famo.backward({"a": toy.shared.sum() + 2.0, "b": toy.shared.sum() + 0.5}, toy)  # type: ignore[arg-type]
        famo.after_step({"a": torch.tensor(losses_after[0]), "b": torch.tensor(losses_after[1])})

    first = FAMO(["a", "b"], {})
    run(first, (1.0, 0.45))
    state = first.extra_state()
    resumed = FAMO(["a", "b"], {})
    resumed.load_extra_state(state)
    for famo in (first, resumed):
        run(famo, (1.5, 0.3))
    assert resumed.logits.detach().tolist() == pytest.approx(first.logits.detach().tolist(), abs=1e-9)
    assert resumed.logits.detach().tolist() != pytest.approx([-0.025, 0.025], abs=1e-4)  # it moved on


def conflicting(toy: TwoTaskToy) -> dict[str, torch.Tensor]:
    """g_a = (1, 0), g_b = (-1, 1) on the shared part (they conflict: dot -1); private scalars
    with gradients 1 and 2."""
    return {"a": (toy.shared * torch.tensor([1.0, 0.0])).sum() + toy.heads["a"].sum(),
            "b": (toy.shared * torch.tensor([-1.0, 1.0])).sum() + 2 * toy.heads["b"].sum()}


def test_upgrad_averages_each_gradient_projected_onto_the_dual_cone():
    """UPGrad (Quinton & Rey 2024), by hand: g_a projected onto {x: x.g_a >= 0, x.g_b >= 0} is
    g_a - (g_a.g_b / |g_b|^2) g_b = (0.5, 0.5); g_b's is g_b - (g_b.g_a / |g_a|^2) g_a = (0, 1);
    their mean (0.25, 0.75) = 1.0 g_a + 0.75 g_b."""
    toy = TwoTaskToy()
    used = make_weighting("upgrad", ["a", "b"], {}).backward(conflicting(toy), toy)  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == pytest.approx([0.25, 0.75], abs=1e-3)  # the library's solver: 1e-4
    assert {t: float(v) for t, v in used.items()} == pytest.approx({"a": 1.0, "b": 0.75}, abs=1e-3)
    assert toy.heads["a"].grad.item() == 1.0 and toy.heads["b"].grad.item() == 2.0  # private: plain


def test_mgda_takes_the_min_norm_point_of_the_gradients_hull():
    """MGDA, by hand: |w g_a + (1 - w) g_b|^2 = (2w - 1)^2 + (1 - w)^2 is least at w = 0.6:
    0.6 g_a + 0.4 g_b = (0.2, 0.4). The static weights scale the rows first."""
    toy = TwoTaskToy()
    used = make_weighting("mgda", ["a", "b"], {}).backward(conflicting(toy), toy)  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == pytest.approx([0.2, 0.4], abs=1e-3)
    assert {t: float(v) for t, v in used.items()} == pytest.approx({"a": 0.6, "b": 0.4}, abs=1e-3)
    toy = TwoTaskToy()
    make_weighting("mgda", ["a", "b"], {"a": 2.0}).backward(conflicting(toy), toy)  # type: ignore[arg-type]
    # rows (2, 0) and (-1, 1): |w (2, 0) + (1 - w)(-1, 1)|^2 = (3w - 1)^2 + (1 - w)^2, least at w = 0.4
    assert toy.shared.grad.tolist() == pytest.approx([0.2, 0.6], abs=1e-3)
    assert toy.heads["a"].grad.item() == 2.0


def test_cagrad_gives_a_direction_that_decreases_both_losses():
    toy = TwoTaskToy()
    make_weighting("cagrad", ["a", "b"], {}).backward(conflicting(toy), toy)  # type: ignore[arg-type]
    g = toy.shared.grad
    assert float(g @ torch.tensor([1.0, 0.0])) > 0 and float(g @ torch.tensor([-1.0, 1.0])) > 0  # both descend


def test_nash_mtl_weights_solve_the_bargaining_condition():
    """Navon et al. 2022 (Multi-Task Learning as a Bargaining Game, Claim 3.1): the Nash
    bargaining weights alpha satisfy (G G^T alpha)_i = 1 / alpha_i; the library then rescales
    the step to norm at most 1, which keeps alpha_i (G G^T alpha)_i equal across tasks."""
    torch.manual_seed(0)
    rows = torch.randn(3, 10)
    shared = nn.Parameter(torch.zeros(10))
    toy = SimpleNamespace(shared_parameters=lambda: [shared], parameters=lambda: [shared])
    used = make_weighting("nash_mtl", ["a", "b", "c"], {}).backward(  # type: ignore[arg-type]
        {t: (shared * rows[i]).sum() for i, t in enumerate("abc")}, toy)
    alpha = torch.stack([torch.as_tensor(used[t]) for t in "abc"]).float()
    products = alpha * (rows @ rows.T @ alpha)
    assert (alpha > 0).all() and torch.allclose(products, products.mean().expand(3), rtol=1e-3), products
    assert torch.allclose(shared.grad, alpha @ rows, atol=1e-5)


def test_the_jacobian_is_the_one_torchjd_computes():
    """set_jacobians (one backward pass per loss, each through its own forward pass, as the
    loop makes them) leaves the shared parameters the .jac rows that TorchJD's autojac.backward
    leaves, and the private ones the gradient of the losses' sum; a parameter a loss does not
    reach gets a row of zeros."""
    from torchjd.autojac import backward as jac_backward

    from trainables.weighting import set_jacobians

    torch.manual_seed(0)
    shared, other, head = (nn.Parameter(torch.randn(*shape)) for shape in ((3, 2), (2,), (2,)))
    x = torch.randn(4, 3)

    def losses() -> list[torch.Tensor]:
        def h() -> torch.Tensor:
            return torch.tanh(x @ shared)
        return [(h() @ head).pow(2).sum(), (h() * other).sum().exp(), h().sum()]

    jac_backward(losses(), inputs=[shared, other])
    want = {"shared": shared.jac.clone(), "other": other.jac.clone()}  # type: ignore[attr-defined]
    del shared.jac, other.jac  # type: ignore[attr-defined]
    want_head = torch.autograd.grad(sum(losses()), head)[0]
    set_jacobians([shared, other], [head], losses())
    assert torch.allclose(shared.jac, want["shared"]) and torch.allclose(other.jac, want["other"])  # type: ignore
    assert other.jac[0].abs().sum() == 0 and other.jac[2].abs().sum() == 0  # type: ignore[attr-defined]
    assert torch.allclose(head.grad, want_head)


def test_an_aggregator_with_one_task_a_step_is_that_tasks_weighted_loss():
    toy = TwoTaskToy()
    used = make_weighting("upgrad", ["a", "b"], {"a": 3.0}).backward(  # type: ignore[arg-type]
        {"a": (toy.shared * torch.tensor([1.0, 0.0])).sum()}, toy)
    assert used == {"a": 3.0} and toy.shared.grad.tolist() == [3.0, 0.0]


def test_options_reach_the_method_and_bad_ones_are_one_line():
    """train.weighting_options, per method: CAGrad with c = 0 is the mean gradient, by hand
    ((1, 0) + (-1, 1)) / 2 = (0, 0.5); FAMO's logit learning rate sets the size of Adam's first
    step (0.1 instead of 0.025); another method's options are ignored."""
    from trainables.weighting import FAMO

    toy = TwoTaskToy()
    options = {"cagrad": {"c": 0.0}, "famo": {"lr": 0.1}}
    make_weighting("cagrad", ["a", "b"], {}, options=options).backward(conflicting(toy), toy)  # type: ignore[arg-type]
    assert toy.shared.grad.tolist() == pytest.approx([0.0, 0.5], abs=1e-4)
    famo = make_weighting("famo", ["a", "b"], {}, options=options)
    assert isinstance(famo, FAMO) and (famo.lr, famo.decay) == (0.1, 0.01)  # the unnamed option: its default
    toy = TwoTaskToy()
    famo.backward({"a": toy.shared.sum() + 2.0, "b": toy.shared.sum() + 0.5}, toy)  # type: ignore[arg-type]
    famo.after_step({"a": torch.tensor(1.0), "b": torch.tensor(0.45)})
    assert famo.logits.detach().tolist() == pytest.approx([-0.1, 0.1], abs=1e-6)
    with pytest.raises(InputError, match=r"^train.weighting_options.cagrad.c: Input should be less than 1 \(got 1\)$"):
        make_weighting("cagrad", ["a", "b"], {}, options={"cagrad": {"c": 1}})
    with pytest.raises(InputError, match=r"^train.weighting_options.upgrad.c: upgrad has no option 'c' "
                                         r"\(its options: none\)$"):
        make_weighting("upgrad", ["a", "b"], {}, options={"upgrad": {"c": 0.5}})
