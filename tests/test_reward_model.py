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
    _dihedral,
    bradley_terry_loss,
    fit_reward_model,
    load_rankings,
    pairwise_agreement,
    pixel_statistics,
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


PLANTED = {
    "stats": RewardModelConfig(hidden=8, epochs=40, seed=0),
    "latents": RewardModelConfig(features="latents", hidden=16, layers=1, epochs=15, batch_groups=8, seed=0),
}


@pytest.mark.parametrize("features", ["stats", "latents"])
def test_reward_model_learns_a_planted_ranking_and_saves(features, tmp_path):
    torch.manual_seed(0)
    pipe = build_editor(EditorConfig(resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16))
    train, held_out = planted_set(24, 3, seed=1), planted_set(12, 3, seed=2)
    rm = RewardModel(pipe, PLANTED[features])
    before = pairwise_agreement(rm.score_groups(held_out), held_out.ranks)
    hist = fit_reward_model(rm, train, held_out)
    assert hist.loss[-1] < hist.loss[0]
    assert hist.stop_groups == 5 and 1 <= hist.chosen_epoch <= rm.cfg.epochs  # 20 % of 24 inputs
    # the kept model is the chosen epoch's: its held-out agreement is the curve's value there
    after = pairwise_agreement(rm.score_groups(held_out), held_out.ranks)
    assert after == pytest.approx(hist.val_agreement[hist.chosen_epoch - 1])
    assert after >= 0.9 and after > before
    rm.save_pretrained(tmp_path / "rm")
    back = RewardModel.from_pretrained(tmp_path / "rm", pipe)
    assert back.cfg.features == features
    np.testing.assert_allclose(back.score_groups(held_out), rm.score_groups(held_out), rtol=0, atol=1e-6)


def test_held_out_set_never_steers_training():
    pipe = build_editor(EditorConfig(resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16))
    train, held_out = planted_set(12, 3, seed=1), planted_set(6, 3, seed=2)
    cfg = RewardModelConfig(hidden=4, epochs=6, seed=0)
    a, b = RewardModel(pipe, cfg), RewardModel(pipe, cfg)
    hist_a, hist_b = fit_reward_model(a, train, held_out), fit_reward_model(b, train, None)
    assert (
        hist_a.chosen_epoch == hist_b.chosen_epoch
        and len(hist_a.val_agreement) == 6
        and not hist_b.val_agreement
    )
    np.testing.assert_array_equal(a.score_groups(held_out), b.score_groups(held_out))


def test_old_reward_model_folders_load_as_latents(tmp_path):
    pipe = build_editor(EditorConfig(resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16))
    rm = RewardModel(pipe, RewardModelConfig(features="latents", hidden=8, layers=1))
    rm.save_pretrained(tmp_path)
    doc = json.loads((tmp_path / "reward_model.json").read_text())
    del doc["config"]["features"], doc["config"]["scales"], doc["config"]["early_stopping"]
    (tmp_path / "reward_model.json").write_text(json.dumps(doc))  # as written before `stats` existed
    assert RewardModel.from_pretrained(tmp_path, pipe).cfg.features == "latents"


def test_split_and_folds_keep_repeated_inputs_on_one_side():
    data = planted_set(6, 2, seed=3)
    rep = data.subset(np.array([0, 1, 2, 0, 3, 0, 4, 5, 1]))  # frames drawn twice/thrice from a pool
    key = lambda x: x.tobytes()  # noqa: E731
    train, held = rep.split(0.4, seed=0)
    assert len(train) + len(held) == 9 and len({key(x) for x in held.inputs}) == 2  # round(6·0.4)
    assert not {key(x) for x in train.inputs} & {key(x) for x in held.inputs}
    folds = rep.folds(3, seed=0)
    held_sets = [{key(x) for x in h.inputs} for _, h in folds]
    assert set.union(*held_sets) == {key(x) for x in data.inputs} and [len(h) for h in held_sets] == [2, 2, 2]
    for (tr, h), hs in zip(folds, held_sets, strict=True):
        assert not {key(x) for x in tr.inputs} & hs and len(tr) + len(h) == 9
    with pytest.raises(Sim2RealError, match="folds"):
        rep.folds(7)


def test_pixel_statistics_see_colour_and_edges_and_ignore_orientation():
    data = planted_set(3, 2, seed=4)
    inp, ed = data.inputs, data.edits[:, 0]
    f = pixel_statistics(inp, ed, [1, 2])
    assert f.shape == (3, 44) and torch.isfinite(f).all()
    for view in range(1, 8):  # flips and 90° rotations of input and edit together
        g = pixel_statistics(_dihedral(inp, view), _dihedral(ed, view), [1, 2])
        torch.testing.assert_close(g[:, :40], f[:, :40], atol=1e-4, rtol=1e-4)  # colour, Sobel: exact
        torch.testing.assert_close(g[:, 40:], f[:, 40:], atol=0.01, rtol=0)  # Canny: a few pixels
    same = pixel_statistics(inp, inp, [1])
    assert torch.all(same[:, 5:10] == 0)  # no change: the mean |Δ| maps are exactly 0 …
    assert torch.all(same[:, 20:22] == 0)  # … and no edge disagrees
    redder = pixel_statistics(inp, np.clip(inp.astype(int) + [60, -30, -30], 0, 255).astype(np.uint8), [1])
    assert torch.all(redder[:, 1] > same[:, 1])  # mean a* (green→red) of the edit goes up
