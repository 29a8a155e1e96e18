"""HIVE's fine-tuning losses, quantile bins, vocabulary extension, and `specialize --method hive-*` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cli_helpers import run_cli as _cli

from envs.pusht.physics import sample_initial_state
from envs.pusht.render import render_state
from sim2real.editing import EditorConfig, build_editor
from sim2real.editing.pipeline import EditPipeline
from sim2real.training.hive import (
    center_rewards,
    ensure_words,
    quality_prompt,
    quantile_bins,
    reward_weights,
    weighted_reward_loss,
)

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads thrash on the shared 2-core box
    yield
    torch.set_num_threads(n)


def tiny_editor() -> EditPipeline:
    torch.manual_seed(0)
    return build_editor(
        EditorConfig(
            resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16, attention_head_dim=8
        )
    )


# --- pure functions ---------------------------------------------------------------------------------------


def test_reward_weights_are_batch_softmax_times_batch_size():
    w = reward_weights(torch.tensor([0.0, math.log(3.0)]), eta=1.0)  # exp: 1, 3 → 2·(1/4, 3/4)
    torch.testing.assert_close(w, torch.tensor([0.5, 1.5]))
    # η divides the reward; a constant shift of all rewards changes nothing
    torch.testing.assert_close(reward_weights(torch.tensor([0.0, math.log(9.0)]), eta=2.0), w)
    torch.testing.assert_close(reward_weights(torch.tensor([5.0, 5.0 + math.log(3.0)]), eta=1.0), w)
    assert reward_weights(torch.randn(7), eta=0.3).mean().item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="eta"):
        reward_weights(torch.zeros(2), eta=0.0)


def test_weighted_reward_loss_hand_value_and_gradient():
    err = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = weighted_reward_loss(err, torch.tensor([0.0, math.log(3.0)]), eta=1.0)
    assert loss.item() == pytest.approx((0.5 * 1.0 + 1.5 * 2.0) / 2)  # 1.75
    loss.backward()
    torch.testing.assert_close(err.grad, torch.tensor([0.25, 0.75]))  # the better edit pulls 3× harder
    # equal rewards: the plain denoising loss
    assert weighted_reward_loss(torch.tensor([1.0, 2.0]), torch.zeros(2), 1.0).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        weighted_reward_loss(torch.zeros(2), torch.zeros(3), 1.0)


def test_quantile_bins_and_centering():
    np.testing.assert_array_equal(quantile_bins(np.arange(10.0)), [1, 1, 2, 2, 3, 3, 4, 4, 5, 5])
    r = np.random.default_rng(0).normal(size=(50, 2))
    levels = quantile_bins(r)
    assert levels.shape == (50, 2) and np.bincount(levels.ravel(), minlength=6)[1:].tolist() == [20] * 5
    assert np.all(np.diff(levels.ravel()[np.argsort(r.ravel())]) >= 0)  # monotone in the reward
    c = center_rewards(np.array([[1.0, 3.0], [10.0, 14.0]]), "group")  # → [[-1, 1], [-2, 2]] / std
    np.testing.assert_allclose(c, np.array([[-1, 1], [-2, 2]]) / math.sqrt(2.5))
    assert center_rewards(np.array([[1.0, 3.0]]), "none").std() == pytest.approx(1.0)


def test_quality_prompt():
    assert (
        quality_prompt("make the table red.", 5)
        == "make the table red, the image quality is five out of five"
    )
    assert quality_prompt("x", 1).endswith("one out of five")
    with pytest.raises(ValueError):
        quality_prompt("x", 6)


def test_ensure_words_extends_vocab_keeps_ids_and_saves(tmp_path):
    pipe = tiny_editor()
    old_vocab = pipe.tokenizer.get_vocab()
    text = quality_prompt("make the table look like a real wooden table", 3)
    assert pipe.tokenizer.unk_token_id in pipe.tokenizer(text).input_ids  # the shipped words lack these
    before = pipe.encode_prompt(["make the table look like a real wooden table"])
    n_rows = pipe.text_encoder.get_input_embeddings().weight.shape[0]
    added = ensure_words(pipe, seed=0)
    assert set(added) == {"image", "quality", "is", "out", "one", "two", "three", "four", "five"}
    assert all(pipe.tokenizer.get_vocab()[w] == i for w, i in old_vocab.items())
    assert pipe.tokenizer.unk_token_id not in pipe.tokenizer(text).input_ids
    emb = pipe.text_encoder.get_input_embeddings().weight
    assert emb.shape[0] == n_rows + len(added)
    new = emb[n_rows:]
    assert torch.cdist(new, new).add(torch.eye(len(added)) * 1e9).min() > 1e-3  # distinct rows
    torch.testing.assert_close(pipe.encode_prompt(["make the table look like a real wooden table"]), before)
    assert ensure_words(pipe, seed=0) == []  # idempotent
    levels = pipe.encode_prompt([quality_prompt("make the table red", n) for n in (1, 5)])
    assert not torch.allclose(levels[0], levels[1])  # "one" and "five" are different conditions
    pipe.save_pretrained(tmp_path / "ed")
    back = EditPipeline.from_pretrained(tmp_path / "ed")
    torch.testing.assert_close(back.encode_prompt([text]), pipe.encode_prompt([text]))


# --- the CLI end to end -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "editor"
    tiny_editor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def refdir(tmp_path_factory):
    import cv2

    folder = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(11)
    for i in range(2):
        img, _ = render_state(sample_initial_state(rng), "tabletop", size=SIZE)
        cv2.imwrite(str(folder / f"ref{i}.png"), img[..., ::-1])
    return folder


TINY_RUN = [
    "train.steps=2",
    "train.frames_per_step=2",
    "train.samples_per_frame=2",  # the quick preset now draws 4; this test checks k=2 rankings
    "train.micro_batch=2",
    "train.num_inference_steps=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "train.num_threads=1",
    f"image_size={SIZE}",
    "frame_pool=4",
    "eval_frames=1",
    "hive.noise_draws=1",
    "hive.reward.epochs=2",
    "hive.reward.hidden=8",
]


@pytest.mark.parametrize("method", ["hive-weighted", "hive-condition"])
def test_cli_specialize_hive_then_edit(method, base_dir, refdir, tmp_path, monkeypatch):
    from sim2real.data.replay import ReplayWriter, open_replay
    from sim2real.training.reward_model import load_rankings

    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    run = tmp_path / "bg"
    args = [
        "specialize",
        "--refs",
        str(refdir),
        "--edit",
        "background",
        "--out",
        str(run),
        "--base",
        str(base_dir),
    ]
    assert _cli(monkeypatch, *args, "--method", method, *TINY_RUN) == 0
    info = json.loads((run / "specialist.json").read_text())
    assert info["method"] == method and info["steps"] == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rm = [r for r in records if r["kind"] == "reward_model"]
    assert len(rm) == 1 and rm[0]["train_groups"] + rm[0]["heldout_groups"] == 4  # 2 steps × 2 frames
    assert rm[0]["features"] == "stats" and 1 <= rm[0]["chosen_epoch"] <= 2
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in records if r["kind"] == "train")
    assert load_rankings(run / "hive" / "rankings" / "rankings.json", size=SIZE).edits.shape[:2] == (4, 2)
    pipe = EditPipeline.from_pretrained(run)
    if method == "hive-condition":
        assert info["instruction"].endswith("the image quality is five out of five")
        assert pipe.tokenizer.unk_token_id not in pipe.tokenizer(info["instruction"]).input_ids
    else:
        assert info["instruction"] == "make the table look like a real wooden table"
    base = EditPipeline.from_pretrained(base_dir)
    assert not torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight)  # it trained

    # the specialist edits a dataset exactly like a D3PO specialist
    sim = tmp_path / "sim.zarr"
    rng = np.random.default_rng(5)
    w = ReplayWriter(sim, attrs={"appearance": "sim", "seed": 5})
    states = [sample_initial_state(rng) for _ in range(2)]
    rendered = [render_state(s, "sim", size=SIZE) for s in states]
    w.append_episode(
        {
            "img": np.stack([r[0] for r in rendered]),
            "mask": np.stack([r[1] for r in rendered]),
            "state": np.stack(states).astype(np.float32),
            "action": rng.uniform(0, 512, (2, 2)).astype(np.float32),
        }
    )
    edited = tmp_path / "edited.zarr"
    edit_args = [
        "edit",
        "--in",
        str(sim),
        "--out",
        str(edited),
        "--specialist",
        str(run),
        "--refs",
        str(refdir),
    ]
    assert _cli(monkeypatch, *edit_args) == 0
    assert open_replay(edited).attrs["edits"][0]["instruction"] == info["instruction"]

    # a rerun resumes: the sampled edits and the reward model are reused, not re-made
    stamp = (run / "hive" / "sampled_edits.pt").stat().st_mtime_ns
    assert _cli(monkeypatch, *args, "--method", method, *TINY_RUN) == 0
    assert (run / "hive" / "sampled_edits.pt").stat().st_mtime_ns == stamp
