"""The specialist trainer on a tiny random editor: what a step changes, the frozen reference, resume, CLI."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from cli_helpers import run_cli as _cli

from envs.pusht.physics import sample_initial_state
from envs.pusht.render import render_state
from sim2real.data.replay import ReplayWriter, open_replay
from sim2real.editing import EditorConfig, build_editor
from sim2real.feedback.score import FeedbackConfig
from sim2real.training.d3po import D3POConfig, SpecialistTrainer, load_editor
from sim2real.training.specialize import FrameSource

SIZE = 32
INSTRUCTION = "make the table look like a real wooden table"


def tiny_editor_config() -> EditorConfig:
    return EditorConfig(
        resolution=SIZE, codec_factor=4, unet_channels=[16, 16], text_dim=16, attention_head_dim=8
    )


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny random-weight editor saved as an editor folder (never trained weights in fast tests)."""
    folder = tmp_path_factory.mktemp("base") / "editor"
    build_editor(tiny_editor_config()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def refs():
    rng = np.random.default_rng(7)
    pairs = [render_state(sample_initial_state(rng), "tabletop", size=SIZE) for _ in range(3)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def make_trainer(base_dir, out, refs, **overrides) -> SpecialistTrainer:
    torch.manual_seed(0)
    settings = dict(
        steps=2,
        frames_per_step=2,
        samples_per_frame=2,
        micro_batch=2,
        num_inference_steps=3,
        eval_every=1,
        checkpoint_every=1,
        learning_rate=1e-4,
    )
    cfg = D3POConfig(**(settings | overrides))
    frames = FrameSource(None, SIZE, pool=4, n_eval=1, seed=0)
    return SpecialistTrainer(
        cfg, load_editor(base_dir), frames, refs[0], refs[1], "background", INSTRUCTION, FeedbackConfig(), out
    )


def _params(tr: SpecialistTrainer) -> dict[str, torch.Tensor]:
    named = {f"unet.{n}": p for n, p in tr.pipe.unet.named_parameters()}
    named |= {f"style_module.{n}": p for n, p in tr.pipe.style_module.named_parameters()}
    named |= {f"text_encoder.{n}": p for n, p in tr.pipe.text_encoder.named_parameters()}
    return {n: p.detach().clone() for n, p in named.items()}


def _ranked_rollout(tr: SpecialistTrainer):
    images, labels = tr.frames.sample(2, np.random.default_rng(3))
    r = tr.sample(images, labels, generator=torch.Generator().manual_seed(3))
    tr.rank(r)
    assert (r.scores["pref"][:, 0, 1] != 0).any(), "need at least one non-tied pair"
    return r


def test_rollout_shares_initial_noise_and_ranks(base_dir, refs, tmp_path):
    tr = make_trainer(base_dir, tmp_path / "run", refs, samples_per_frame=3)
    r = _ranked_rollout(tr)
    assert r.latents.shape[:2] == (6, 4) and r.edits.shape == (2, 3, SIZE, SIZE, 3)
    z0 = r.latents[:, 0].view(2, 3, -1)
    assert torch.equal(z0[:, 0], z0[:, 1]) and torch.equal(z0[:, 0], z0[:, 2])  # same initial noise per frame
    assert not torch.equal(r.latents[0, -1], r.latents[1, -1])  # stochastic steps differ
    best = r.order[:, 0].numpy()
    assert np.all(r.scores["total"][np.arange(2), best] == r.scores["total"].min(axis=1))


def test_one_step_changes_only_trainable_params_lowers_loss_and_keeps_reference(base_dir, refs, tmp_path):
    tr = make_trainer(base_dir, tmp_path / "run", refs)
    r = _ranked_rollout(tr)
    frames = torch.arange(2)
    with torch.no_grad():
        cur0 = tr.step_log_probs(r, frames, 1)
        with tr.reference():
            ref0 = tr.step_log_probs(r, frames, 1)
    torch.testing.assert_close(cur0, ref0, rtol=0, atol=1e-6)  # zero-init LoRA / channels: identical at start
    before = _params(tr)
    loss0 = tr.rollout_loss(r)
    assert loss0 == pytest.approx(np.log(2), abs=1e-6)  # ratio 1 everywhere
    tr.accumulate(r, 1.0)
    tr.optimizer.step()
    tr.optimizer.zero_grad()
    loss1 = tr.rollout_loss(r)
    assert loss1 < loss0 - 1e-5
    after = _params(tr)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= set(tr.trainable_names)
    assert any("lora" in n for n in changed) and "unet.conv_in.weight" in changed
    n_old = 2 * tr.pipe.codec.latent_channels  # only the new (style) input channels of conv_in train
    w0, w1 = before["unet.conv_in.weight"], after["unet.conv_in.weight"]
    assert torch.equal(w0[:, :n_old], w1[:, :n_old]) and not torch.equal(w0[:, n_old:], w1[:, n_old:])
    assert "unet.conv_in.bias" not in changed
    with torch.no_grad():
        cur1 = tr.step_log_probs(r, frames, 1)
        with tr.reference():
            ref1 = tr.step_log_probs(r, frames, 1)
    torch.testing.assert_close(ref1, ref0, rtol=0, atol=1e-6)  # the reference did not move
    assert not torch.allclose(cur1, cur0)
    # the reference's conv_in / style module are the base editor's, not the trained ones
    base = load_editor(base_dir)
    torch.testing.assert_close(tr.ref_conv_in.weight, base.unet.conv_in.weight)
    assert not torch.equal(tr.pipe.unet.conv_in.weight, base.unet.conv_in.weight)


def test_nonfinite_gradient_skips_the_update(base_dir, refs, tmp_path, caplog, monkeypatch):
    tr = make_trainer(base_dir, tmp_path / "run", refs)
    before = _params(tr)

    def nan_grads(rollout, scale):
        for p in tr.params:
            p.grad = torch.full_like(p, float("nan"))
        return {"loss": float("nan"), "win_rate": 0.0}

    monkeypatch.setattr(tr, "sample", lambda images, labels: None)
    monkeypatch.setattr(tr, "rank", lambda rollout: None)
    monkeypatch.setattr(tr, "accumulate", nan_grads)
    stats = tr.train_step()
    assert stats["skipped"] and "update skipped" in caplog.text
    after = _params(tr)
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_fit_resume_continues_the_same_run(base_dir, refs, tmp_path):
    out = tmp_path / "run"
    fast = dict(num_inference_steps=2, eval_every=2)
    tr = make_trainer(base_dir, out, refs, steps=2, **fast)
    tr.fit()
    trained = {n: p.detach().clone() for n, p in tr._trainable_state().items()}
    tr2 = make_trainer(base_dir, out, refs, steps=3, **fast)
    assert tr2.load_checkpoint() and tr2.step_count == 2
    for n, p in tr2._trainable_state().items():
        torch.testing.assert_close(p, trained[n], rtol=0, atol=0)
    tr2.fit()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [0, 2, 3]  # every 2 steps and at the end
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000002.pt", "step_000003.pt"]
    assert (out / "samples" / "step_00003.png").exists()


def test_unknown_method_is_a_clear_error():
    from sim2real.errors import Sim2RealError
    from sim2real.training.d3po import METHODS, get_method

    assert get_method("d3po") is METHODS["d3po"]
    with pytest.raises(Sim2RealError, match="method 'nope' is not available"):
        get_method("nope")


# --- the CLI end to end ------------------------------------------------------------------------------


def _write_refs(folder, n=3, size=48):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(n):
        img, _ = render_state(sample_initial_state(rng), "tabletop", size=size)
        if i == 1:  # a grey ref and an RGBA ref are converted, with a warning
            cv2.imwrite(str(folder / f"ref{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        elif i == 2:
            cv2.imwrite(
                str(folder / f"ref{i}.png"),
                np.dstack([img[..., ::-1], np.full(img.shape[:2], 255, np.uint8)]),
            )
        else:
            cv2.imwrite(str(folder / f"ref{i}.png"), img[..., ::-1])
    return folder


def _write_sim(path, episodes=2, frames=3):
    rng = np.random.default_rng(5)
    w = ReplayWriter(path, attrs={"appearance": "sim", "seed": 5})
    for _ in range(episodes):
        states = [sample_initial_state(rng) for _ in range(frames)]
        rendered = [render_state(s, "sim", size=SIZE) for s in states]
        w.append_episode(
            {
                "img": np.stack([r[0] for r in rendered]),
                "mask": np.stack([r[1] for r in rendered]),
                "state": np.stack(states).astype(np.float32),
                "action": rng.uniform(0, 512, (frames, 2)).astype(np.float32),
            }
        )
    return path


TINY_RUN = [
    "train.steps=2",
    "train.frames_per_step=2",
    "train.samples_per_frame=2",
    "train.micro_batch=2",
    "train.num_inference_steps=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    f"image_size={SIZE}",
    "frame_pool=4",
    "eval_frames=1",
]


def test_cli_specialize_then_edit_end_to_end(base_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    refdir = _write_refs(tmp_path / "real")
    run = tmp_path / "bg"
    code = _cli(
        monkeypatch,
        "specialize",
        "--refs",
        refdir / "*.png",
        "--edit",
        "background",
        "--out",
        run,
        "--base",
        base_dir,
        *TINY_RUN,
    )
    assert code == 0
    info = json.loads((run / "specialist.json").read_text())
    assert info["edit"] == "background" and info["steps"] == 2 and len(info["refs"]) == 3
    assert (run / "refs" / "ref_00_mask.png").exists() and (run / "refs" / "ref_00_overlay.png").exists()
    assert (run / "unet" / "config.json").exists() and not list((run / "unet").glob("*lora*"))
    from sim2real.editing.pipeline import EditPipeline

    EditPipeline.from_pretrained(run)  # the specialist folder is an editor folder

    sim = _write_sim(tmp_path / "sim.zarr")
    edited = tmp_path / "edited.zarr"
    args = [
        "edit",
        "--in",
        str(sim),
        "--out",
        str(edited),
        "--specialist",
        str(run),
        "--specialist",
        str(run),
    ]
    args += ["--refs", str(refdir), "--batch-size", "2"]
    assert _cli(monkeypatch, *args) == 0
    src, dst = open_replay(sim), open_replay(edited)
    np.testing.assert_array_equal(src.episode_ends, dst.episode_ends)
    for key in ("mask", "state", "action"):
        np.testing.assert_array_equal(np.asarray(src.data[key]), np.asarray(dst.data[key]))
    out_img = np.asarray(dst.data["img"])
    assert out_img.shape == np.asarray(src.data["img"]).shape and not np.array_equal(
        out_img, np.asarray(src.data["img"])
    )
    edits = dst.attrs["edits"]
    assert [e["specialist"] for e in edits] == [str(run), str(run)] and len(edits[0]["refs_sha256_16"]) == 3
    assert dst.attrs["appearance"] == "sim"

    # interrupted after the first episode: the rerun finishes it and writes what one run would have
    import zarr

    root = zarr.open_group(str(edited), mode="r+")
    root["meta/episode_ends"].resize((1,))
    assert _cli(monkeypatch, *args) == 0
    np.testing.assert_array_equal(np.asarray(open_replay(edited).data["img"]), out_img)


def test_cli_bad_refs_give_one_line_errors(base_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    base = ["specialize", "--edit", "background", "--out", str(tmp_path / "x"), "--base", str(base_dir)]
    assert _cli(monkeypatch, *base, "--refs", str(tmp_path / "missing.png")) == 2
    assert "no such image file" in capsys.readouterr().err
    (tmp_path / "broken.png").write_text("not an image")
    assert _cli(monkeypatch, *base, "--refs", str(tmp_path / "broken.png")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "broken.png" in err and "\n" not in err
    (tmp_path / "empty").mkdir()
    assert _cli(monkeypatch, *base, "--refs", str(tmp_path / "empty")) == 2
    assert "no images" in capsys.readouterr().err


def test_cli_edit_rejects_a_folder_that_is_not_a_specialist(base_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    sim = _write_sim(tmp_path / "sim.zarr", episodes=1, frames=1)
    refdir = _write_refs(tmp_path / "real", n=1)
    args = [
        "edit",
        "--in",
        str(sim),
        "--out",
        str(tmp_path / "o.zarr"),
        "--specialist",
        str(base_dir),
        "--refs",
        str(refdir),
    ]
    assert _cli(monkeypatch, *args) == 2
    assert "not a specialist folder" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()
