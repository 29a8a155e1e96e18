"""The D3PO losses against hand-computed values."""

import math

import pytest
import torch

from sim2real.training.d3po import clamped_log_ratio, d3po_loss, plackett_luce_loss, preference_accuracy

LOG09, LOG11 = math.log(0.9), math.log(1.1)


def _nll_sigmoid(z: float) -> float:
    return math.log1p(math.exp(-z))


def test_clamped_log_ratio_matches_clamped_ratio():
    logp = torch.tensor([-1.0, -2.0, -3.0, 0.0, 500.0])
    ref = torch.tensor([-1.05, -1.8, -3.0, -500.0, 0.0])
    got = clamped_log_ratio(logp, ref, 0.1)
    # D3PO's own formula, on entries where exp does not overflow
    want = torch.log(torch.clamp(torch.exp(logp[:3] - ref[:3]), 0.9, 1.1))
    torch.testing.assert_close(got[:3], want)
    assert got[3].item() == pytest.approx(LOG11) and got[4].item() == pytest.approx(LOG11)


def test_d3po_loss_hand_value_and_gradient():
    logp_w = torch.tensor([-1.0], requires_grad=True)  # ratio e^0.05, inside 1 ± 0.1
    logp_l = torch.tensor([-2.0], requires_grad=True)  # ratio e^-0.2, clamped to 0.9
    ref_w, ref_l = torch.tensor([-1.05]), torch.tensor([-1.8])
    loss = d3po_loss(logp_w, logp_l, ref_w, ref_l, beta=0.1, clip=0.1)
    z = 0.1 * (0.05 - LOG09)
    assert loss.item() == pytest.approx(_nll_sigmoid(z), rel=1e-5)
    loss.backward()
    # dL/dlogp_w = −β·σ(−z); the clamped loser gets no gradient
    assert logp_w.grad.item() == pytest.approx(-0.1 / (1 + math.exp(z)), rel=1e-5)
    assert logp_l.grad.item() == 0.0


def test_d3po_loss_sign_winner_up_loser_down_lowers_loss():
    ref = torch.zeros(4)
    base = d3po_loss(ref, ref, ref, ref)
    assert base.item() == pytest.approx(math.log(2))
    better = d3po_loss(ref + 0.05, ref - 0.05, ref, ref)
    worse = d3po_loss(ref - 0.05, ref + 0.05, ref, ref)
    assert better < base < worse


def test_d3po_loss_ties_give_no_gradient_and_leave_the_mean():
    logp_w = torch.tensor([0.05, 0.02], requires_grad=True)
    logp_l = torch.tensor([-0.05, 0.03], requires_grad=True)
    zero = torch.zeros(2)
    mask = torch.tensor([True, False])
    loss = d3po_loss(logp_w, logp_l, zero, zero, mask=mask)
    assert loss.item() == pytest.approx(_nll_sigmoid(0.1 * 0.1), rel=1e-5)  # the tie is not averaged in
    loss.backward()
    assert logp_w.grad[1].item() == 0.0 and logp_l.grad[1].item() == 0.0
    assert logp_w.grad[0].item() < 0.0 < logp_l.grad[0].item()
    all_ties = d3po_loss(logp_w, logp_l, zero, zero, mask=torch.tensor([False, False]))
    assert all_ties.item() == 0.0 and all_ties.requires_grad


def test_d3po_loss_per_timestep_shape_and_errors():
    x = torch.zeros(3, 5)
    assert d3po_loss(x, x, x, x).shape == ()
    with pytest.raises(ValueError, match="shapes differ"):
        d3po_loss(x, x[:, :2], x, x)
    with pytest.raises(ValueError, match="clip"):
        d3po_loss(x, x, x, x, clip=1.5)


def test_plackett_luce_equals_d3po_for_pairs():
    torch.manual_seed(0)
    logps, refs = torch.randn(6, 2) * 0.1, torch.randn(6, 2) * 0.1
    order = torch.stack([torch.randperm(2) for _ in range(6)])
    pl = plackett_luce_loss(logps, refs, order)
    w, lo = order[:, 0], order[:, 1]
    idx = torch.arange(6)
    pair = d3po_loss(logps[idx, w], logps[idx, lo], refs[idx, w], refs[idx, lo])
    torch.testing.assert_close(pl, pair)


def test_plackett_luce_hand_value_k3():
    # log-ratios inside the clip range: 0.06, -0.02, 0.09; order best first: 2, 0, 1
    logps = torch.tensor([[0.06, -0.02, 0.09]])
    refs = torch.zeros(1, 3)
    order = torch.tensor([[2, 0, 1]])
    s = [0.1 * 0.09, 0.1 * 0.06, 0.1 * -0.02]  # β·log r, best first
    stage0 = s[0] - math.log(sum(math.exp(v) for v in s))
    stage1 = s[1] - math.log(math.exp(s[1]) + math.exp(s[2]))
    want = -(stage0 + stage1)
    assert plackett_luce_loss(logps, refs, order).item() == pytest.approx(want, rel=1e-5)


def test_plackett_luce_ties_carry_no_preference():
    logps = torch.tensor([[0.05, -0.05, 0.01]], requires_grad=True)
    refs = torch.zeros(1, 3)
    scores = torch.tensor([[1.0, 1.0, 2.0]])  # samples 0 and 1 tie, sample 2 is worst
    order = torch.tensor([[0, 1, 2]])
    loss = plackett_luce_loss(logps, refs, order, scores=scores)
    s = [0.005, -0.005, 0.001]
    want = -(
        (s[0] - math.log(math.exp(s[0]) + math.exp(s[2])))
        + (s[1] - math.log(math.exp(s[1]) + math.exp(s[2])))
    )
    assert loss.item() == pytest.approx(want, rel=1e-5)
    all_tied = plackett_luce_loss(logps, refs, order, scores=torch.ones(1, 3))
    all_tied.backward()
    assert all_tied.item() == 0.0 and torch.all(logps.grad == 0)


def test_plackett_luce_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        plackett_luce_loss(torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, k\)"):
        plackett_luce_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.zeros(2, 3, dtype=torch.long))


def test_preference_accuracy():
    w, lo = torch.tensor([0.1, -0.1, 0.2]), torch.tensor([0.0, 0.0, 0.3])
    assert preference_accuracy(w, lo) == pytest.approx(1 / 3)
    assert preference_accuracy(w, lo, torch.tensor([True, False, False])) == 1.0
