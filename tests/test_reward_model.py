"""HIVE's reward model: Bradley–Terry loss vs hand values, rankings file, learning a planted ranking."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from envs.pusht.physics import sample_initial_state
from envs.pusht.render import render_state
from sim2real.editing import EditorConfig, build_editor
from sim2real.errors import Sim2RealError
from sim2real.training.reward_model import (
    RankingSet,
    RewardModel,
    RewardModelConfig,
    bradley_terry_loss,
    fit_reward_model,
    load_rankings,
    pairwise_agreement,
    ranks_from_scores,
    save_rankings,
)

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    """2 torch threads thrash ~10x on the shared 2-core box (measured: 67 s vs 6 s for the planted test)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def nll(x: float) -> float:
    return -math.log(1.0 / (1.0 + math.exp(-x)))  # −log σ(x)


def test_bradley_terry_loss_hand_values():
    # one pair, better has reward 1, worse 0: −log σ(1)
    loss = bradley_terry_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0, 1]]))
    assert loss.item() == pytest.approx(nll(1.0), abs=1e-6)
    # k = 3 strict order: the 3 pairs (0,1) (0,2) (1,2) with differences 1, 2, 1 count equally
    loss = bradley_terry_loss(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[0, 1, 2]]))
    assert loss.item() == pytest.approx((2 * nll(1.0) + nll(2.0)) / 3, abs=1e-6)
    # the ranking, not the sample order, picks the winner; ties (equal rank) form no pair
    loss = bradley_terry_loss(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0, 0, 1]]))
    assert loss.item() == pytest.approx((nll(0.0) + nll(1.0)) / 2, abs=1e-6)
    # two groups: mean over all ranked pairs of the batch
    loss = bradley_terry_loss(torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([[0, 1], [0, 1]]))
    assert loss.item() == pytest.approx((nll(1.0) + nll(-3.0)) / 2, abs=1e-6)


def test_bradley_terry_gradient_and_all_ties():
    r = torch.tensor([[0.5, -0.5]], requires_grad=True)
    bradley_terry_loss(r, torch.tensor([[1, 0]])).backward()  # sample 1 is better
    s = 1.0 / (1.0 + math.exp(-(-0.5 - 0.5)))  # σ(R_1 − R_0)
    torch.testing.assert_close(r.grad, torch.tensor([[1 - s, -(1 - s)]]))  # push 1 up, 0 down
    r = torch.zeros(2, 3, requires_grad=True)
    loss = bradley_terry_loss(r, torch.zeros(2, 3, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(r.grad == 0)


def test_ranks_and_agreement():
    np.testing.assert_array_equal(ranks_from_scores(np.array([[0.3, 0.1, 0.3]])), [[1, 0, 1]])
    np.testing.assert_array_equal(
        ranks_from_scores(np.array([[0.3, 0.1, 0.2]]), higher_is_better=True), [[0, 2, 1]]
    )
    ranks = np.array([[0, 1, 2]])
    assert pairwise_agreement(np.array([[3.0, 2.0, 1.0]]), ranks) == 1.0
    assert pairwise_agreement(np.array([[1.0, 2.0, 3.0]]), ranks) == 0.0
    assert pairwise_agreement(np.array([[2.0, 2.0, 1.0]]), ranks) == pytest.approx(2.5 / 3)
    assert math.isnan(pairwise_agreement(np.zeros((1, 2)), np.zeros((1, 2), int)))
    with pytest.raises(ValueError, match="shape"):
        ranks_from_scores(np.zeros(3))


def test_rankings_file_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    data = RankingSet(
        rng.integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8),
        rng.integers(0, 256, (2, 3, SIZE, SIZE, 3), dtype=np.uint8),
        ["make the table blue", "make the table red"],
        np.array([[1, 0, 1], [2, 1, 0]]),
    )
    path = save_rankings(tmp_path / "r" / "rankings.json", data, scores=np.zeros((2, 3)))
    doc = json.loads(path.read_text())
    assert doc["groups"][0]["ranking"] == [[1], [0, 2]] and doc["groups"][1]["ranking"] == [[2], [1], [0]]
    back = load_rankings(path, size=SIZE)
    np.testing.assert_array_equal(back.inputs, data.inputs)
    np.testing.assert_array_equal(back.edits, data.edits)
    np.testing.assert_array_equal(back.ranks, data.ranks)
    assert back.instructions == data.instructions
    # a flat list is a strict order; a ranking that misses an edit is a one-line error
    doc["groups"][0]["ranking"] = [2, 0, 1]
    path.write_text(json.dumps(doc))
    np.testing.assert_array_equal(load_rankings(path, size=SIZE).ranks[0], [1, 2, 0])
    doc["groups"][0]["ranking"] = [[2], [0]]
    path.write_text(json.dumps(doc))
    with pytest.raises(Sim2RealError, match="exactly once"):
        load_rankings(path, size=SIZE)
    path.write_text(json.dumps({"format": "other", "groups": []}))
    with pytest.raises(Sim2RealError, match="sim2real-rankings/1"):
        load_rankings(path, size=SIZE)


def planted_set(n: int, k: int, seed: int) -> RankingSet:
    """Sim frames whose table is repainted towards red by k different amounts: redder = better."""
    rng = np.random.default_rng(seed)
    inputs = np.stack([render_state(sample_initial_state(rng), "sim", size=SIZE)[0] for _ in range(n)])
    red = np.array([220, 40, 30], np.float32)
    amounts = rng.uniform(0, 1, (n, k)).astype(np.float32)
    edits = (
        inputs[:, None].astype(np.float32) * (1 - amounts[..., None, None, None])
        + red * amounts[..., None, None, None]
    )
    edits += rng.normal(0, 6, edits.shape)  # noise the ranking must look through
    edits = np.clip(edits, 0, 255).astype(np.uint8)
    return RankingSet(
        inputs, edits, ["make the table red"] * n, ranks_from_scores(amounts, higher_is_better=True)
    )


def test_reward_model_learns_a_planted_ranking_and_saves(tmp_path):
    torch.manual_seed(0)
    pipe = build_editor(EditorConfig(resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16))
    train, held_out = planted_set(24, 3, seed=1), planted_set(12, 3, seed=2)
    rm = RewardModel(pipe, RewardModelConfig(hidden=16, layers=1, epochs=15, batch_groups=8, seed=0))
    before = pairwise_agreement(rm.score_groups(held_out), held_out.ranks)
    hist = fit_reward_model(rm, train, held_out)
    assert hist.loss[-1] < hist.loss[0]
    assert hist.val_agreement[-1] >= 0.9 and hist.val_agreement[-1] > before
    rm.save_pretrained(tmp_path / "rm")
    back = RewardModel.from_pretrained(tmp_path / "rm", pipe)
    np.testing.assert_allclose(back.score_groups(held_out), rm.score_groups(held_out), rtol=0, atol=1e-6)
