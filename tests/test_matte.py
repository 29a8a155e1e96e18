"""The edit matte: where an instruction may change the frame (sim2real.editing.matte, training.matte)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sim2real.editing.matte import EditMatte, lab_to_rgb, rgb_to_lab, transfer_rims
from sim2real.editing.model import EditorConfig, build_editor
from sim2real.editing.pipeline import EditPipeline
from sim2real.errors import Sim2RealError
from sim2real.training.matte import (
    DecodeStream,
    MatteStream,
    PretrainMatteConfig,
    matte_loss,
    run_pretrain_matte,
)

SMALL = dict(resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32)


def _set_alpha(matte: EditMatte, table: float, t: float = -40.0) -> None:
    """Make the matte say the same per-part logits everywhere."""
    out = matte.net.conv_out
    torch.nn.init.zeros_(out.weight)
    with torch.no_grad():
        out.bias.copy_(torch.tensor([table, t]))


def test_matte_composites_the_edit_over_the_input():
    matte = EditMatte((8, 8), text_dim=16)
    image, edited = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    text = torch.randn(2, 5, 16)
    _set_alpha(matte, -40.0)
    torch.testing.assert_close(matte.composite(edited, image, text), image)  # nothing may change
    _set_alpha(matte, 40.0)
    torch.testing.assert_close(matte.composite(edited, image, text), edited)  # everything may
    _set_alpha(matte, -40.0, 40.0)
    torch.testing.assert_close(matte.composite(edited, image, text), edited)  # either part's α counts
    _set_alpha(matte, 0.0)
    torch.testing.assert_close(matte.composite(edited, image, text), (image + edited) / 2)
    with pytest.raises(ValueError, match="one instruction per image"):
        matte(image, text[:1])


def test_rim_pixels_take_their_share_of_the_part_change_nearby():
    image = torch.zeros(1, 3, 12, 12)
    parts = torch.zeros(1, 2, 12, 12)
    parts[0, 0, :, :6] = 1.0  # the table's own pixels: the left half
    parts[0, 0, :, 6] = 0.3  # a rim pixel column: 30 % table
    parts[0, 1, 0, 11] = 0.2  # a stray share of the T, far from any T pixel
    out = torch.zeros(1, 3, 12, 12)
    out[:, :, :, :6] = 0.5  # the table changed by +0.5 everywhere
    out[:, :, :, 6] = 0.9  # the decode on the rim: wrong (it sees the other object)
    out[:, :, 0, 11] = -0.7  # …and where the stray share is
    moved = transfer_rims(out, image, parts)
    torch.testing.assert_close(moved[:, :, :, :6], out[:, :, :, :6])  # a part's own pixels keep `out`
    torch.testing.assert_close(moved[:, :, :, 6], torch.full((1, 3, 12), 0.15))  # 0.3 × the +0.5 change
    torch.testing.assert_close(moved[:, :, 0, 11], torch.zeros(1, 3))  # a stray share moves nothing
    torch.testing.assert_close(moved[:, :, 1:, 7:], out[:, :, 1:, 7:])  # no share: `out` as it is

    matte = EditMatte((8, 8), text_dim=16, rim_transfer=True)
    _set_alpha(matte, 0.0)  # α = ½ everywhere: no part's own pixels anywhere, so no rim moves
    image, edited = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    text = torch.randn(2, 5, 16)
    torch.testing.assert_close(matte.composite(edited, image, text), image)
    _set_alpha(matte, 40.0)  # every pixel the table's own: the plain composite
    torch.testing.assert_close(matte.composite(edited, image, text), edited)


def test_lab_conversion_matches_opencv_and_round_trips():
    import cv2

    rgb = np.random.default_rng(0).random((2, 8, 8, 3)).astype(np.float32)
    t = torch.from_numpy(rgb).permute(0, 3, 1, 2)
    lab = rgb_to_lab(t)
    ref = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2LAB) for im in rgb])
    assert np.abs(lab.permute(0, 2, 3, 1).numpy() - ref).max() < 0.5
    torch.testing.assert_close(lab_to_rgb(lab), t, atol=1e-4, rtol=0)


def test_colour_calibration_moves_the_part_mean_onto_the_words_colour():
    matte = EditMatte((8, 8), text_dim=16)
    _set_alpha(matte, 40.0)  # the whole frame is "table"
    last = matte.colour_head[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():  # the words name Lab (40, 20, -30) for the table
        last.bias.copy_(torch.tensor([40.0, 20.0, -30.0, 0.0, 0.0, 0.0]) / 100)
    rng = torch.Generator().manual_seed(0)
    edited = torch.rand(1, 3, 16, 16, generator=rng) * 0.4  # a textured edit, in [0, 0.4] → [-1, -0.2]
    edited = edited * 2 - 1 + 0.6
    image, text = torch.zeros(1, 3, 16, 16), torch.randn(1, 5, 16)
    plain = matte.composite(edited, image, text)
    calibrated = matte.composite(edited, image, text, calibrate=True)
    mean = rgb_to_lab((calibrated + 1) / 2).mean((2, 3))[0]
    torch.testing.assert_close(mean, torch.tensor([40.0, 20.0, -30.0]), atol=1.0, rtol=0)
    # the texture is kept: the pixels still differ from each other as the edit's did
    assert rgb_to_lab((calibrated + 1) / 2)[0, 0].std() > 0.5 * rgb_to_lab((plain + 1) / 2)[0, 0].std()


def test_calibration_sets_the_parts_own_pixels_and_moves_a_rim_by_its_share(monkeypatch):
    matte = EditMatte((8, 8), text_dim=16)
    last = matte.colour_head[-1]
    torch.nn.init.zeros_(last.weight)
    with torch.no_grad():  # the words name Lab (40, 20, -30) for the table
        last.bias.copy_(torch.tensor([40.0, 20.0, -30.0, 0.0, 0.0, 0.0]) / 100)
    logits = torch.full((1, 2, 16, 16), -40.0)
    logits[0, 0, :, :8] = 40.0  # the table: the left half
    logits[0, 0, :, 8] = 0.0  # a rim column, half table (α = ½)
    monkeypatch.setattr(matte, "forward", lambda image, text: logits)
    image, text = torch.full((1, 3, 16, 16), 0.2), torch.randn(1, 5, 16)
    edited = image.clone()
    edited[..., 8] = -0.8  # the decode darkens the rim: it must not pull the part's mean
    before = rgb_to_lab((matte.composite(edited, image, text) + 1) / 2)[0]
    lab = rgb_to_lab((matte.composite(edited, image, text, calibrate=True) + 1) / 2)[0]
    want = torch.tensor([40.0, 20.0, -30.0])
    torch.testing.assert_close(lab[:, :, :8].mean((1, 2)), want, atol=1.0, rtol=0)  # the part itself
    shift = want - before[:, :, :8].mean((1, 2))
    torch.testing.assert_close(lab[:, :, 8].mean(1), before[:, :, 8].mean(1) + shift / 2, atol=1.0, rtol=0)
    torch.testing.assert_close(lab[:, :, 9:], before[:, :, 9:], atol=0.5, rtol=0)  # untouched


def test_pipeline_decodes_through_the_matte_only_with_the_instruction(tmp_path):
    pipe = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8]))
    assert pipe.matte is not None and "matte" in pipe.modules
    frames = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    cond = pipe.prepare_conditions(frames, "make the table grey")
    x0 = torch.randn_like(cond.image_latents)
    plain = pipe.decode(x0, cond.image_latents)
    _set_alpha(pipe.matte, -40.0)
    kept = pipe.decode(x0, cond.image_latents, cond.text_embeds)
    torch.testing.assert_close(kept, pipe.codec.decode(cond.image_latents).clamp(-1, 1))  # the input
    assert not torch.allclose(plain, kept)
    out = pipe(frames, "make the table grey", num_inference_steps=2, progress=False).images
    np.testing.assert_array_equal(out, frames)  # α ≈ 0: the pipeline returns the input frames

    # colour calibration: by default only without a visual prompt (the refs say the colour then)
    _set_alpha(pipe.matte, 40.0)

    def run(**kw):
        gen = torch.Generator().manual_seed(0)
        return pipe(
            frames, "make the table grey", num_inference_steps=2, progress=False, generator=gen, **kw
        ).images

    np.testing.assert_array_equal(run(), run(calibrate_colour=True))
    assert not np.array_equal(run(), run(calibrate_colour=False))
    np.testing.assert_array_equal(
        run(style_images=frames[:1]), run(style_images=frames[:1], calibrate_colour=False)
    )

    loaded = EditPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "ed"))
    assert loaded.config.matte_channels == [8, 8]
    for k, v in pipe.matte.state_dict().items():
        torch.testing.assert_close(loaded.matte.state_dict()[k], v)


def test_matte_is_for_the_tiny_preset_only():
    with pytest.raises(ValueError, match="edit matte"):
        EditorConfig(preset="sd15", pretrained="x", parameterization="standard", matte_channels=[8])
    with pytest.raises(ValueError, match="edit matte"):
        EditorConfig(**SMALL, matte_channels=[4, 8])


def test_matte_stream_masks_follow_the_views():
    cfg = PretrainMatteConfig(out="x", views_per_pair=2, tail_prob=1.0)
    items = [x for _, x in zip(range(4), MatteStream(cfg, 32), strict=False)]
    for item in items:
        assert item["input"].shape == (3, 32, 32) and item["parts"].shape == (2, 32, 32)
        assert set(np.unique(item["parts"].numpy())) <= {0.0, 1.0}
        assert item["edited"].tolist() == item["parts"].flatten(1).any(1).tolist()
        assert item["colours"].shape == (2, 3)
        assert "," in item["instruction"] or " with " in item["instruction"]  # a tail was added
    # two views of one pair: the same masks up to a rotation / flip
    a, b = items[0]["parts"].numpy().any(0), items[1]["parts"].numpy().any(0)
    views = [np.rot90(a, k) for k in range(4)] + [np.rot90(a, k)[:, ::-1] for k in range(4)]
    assert any(np.array_equal(v, b) for v in views)


def test_protect_weight_weighs_the_agent_and_goal_pixels(monkeypatch, tmp_path):
    cfg = PretrainMatteConfig(out="x", views_per_pair=2, tail_prob=0.0, kind_probs=[0, 0, 1])
    items = [x for _, x in zip(range(2), MatteStream(cfg, 32), strict=False)]
    a, b = items[0]["protect"][0].numpy(), items[1]["protect"][0].numpy()  # two views of one pair
    views = [np.rot90(a, k) for k in range(4)] + [np.rot90(a, k)[:, ::-1] for k in range(4)]
    assert a.sum() > 0 and any(np.array_equal(v, b) for v in views)
    assert not (items[0]["parts"].numpy().any(0) & (a > 0)).any()  # no edit covers the agent or goal
    batch = {
        k: torch.stack([i[k] for i in items]) if k != "instruction" else [i[k] for i in items]
        for k in items[0]
    }
    base = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8])).save_pretrained(tmp_path / "base")
    pipe = EditPipeline.from_pretrained(base)
    grads = {}
    for w in (1.0, 10.0):
        logits = torch.zeros(2, 2, 32, 32, requires_grad=True)  # α = ½ everywhere
        monkeypatch.setattr(pipe.matte, "forward", lambda image, text, z=logits: z)
        matte_loss(pipe, batch, PretrainMatteConfig(out="x", protect_weight=w, colour_weight=0.0)).backward()
        g = logits.grad.abs()
        outside = ~batch["parts"].bool()  # pixels the target says 0: equal errors before weighting
        protect = batch["protect"].expand_as(g).bool()
        grads[w] = g[protect & outside].mean() / g[~protect & outside].mean()
    assert grads[1.0] == pytest.approx(1.0) and grads[10.0] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="protect_weight"):
        PretrainMatteConfig(out="x", protect_weight=0)


def test_coverage_targets_are_the_edit_region_with_fractional_rims():
    hard = PretrainMatteConfig(out="x", views_per_pair=1, seed=5)
    soft = PretrainMatteConfig(out="x", views_per_pair=1, seed=5, coverage_targets=True)
    for h, c in zip(
        [x for _, x in zip(range(3), MatteStream(hard, 96), strict=False)],
        [x for _, x in zip(range(3), MatteStream(soft, 96), strict=False)],
        strict=True,
    ):
        np.testing.assert_array_equal(h["input"], c["input"])  # the same pairs and views
        assert torch.equal(h["edited"], c["edited"])
        # the colour targets become share-weighted part means: close to the 0/1 region's
        assert (h["colours"] - c["colours"]).abs().max() < 0.1 and (
            h["counts"] - c["counts"]
        ).abs().max() < 200
        frac = (c["parts"] > 0.02) & (c["parts"] < 0.98)
        assert frac.sum() > 20 and set(np.unique(h["parts"].numpy())) <= {0.0, 1.0}
        assert ((c["parts"] > 0.5) == (h["parts"] > 0.5)).float().mean() > 0.9


def test_matte_training_lowers_the_loss_exports_and_resumes(tmp_path):
    base = build_editor(EditorConfig(**SMALL)).save_pretrained(tmp_path / "base")
    (base / "TRAINING.json").write_text(
        json.dumps({"history": [{"stage": 1, "what": "unet"}], "total_steps": 5})
    )
    cfg = PretrainMatteConfig(
        out=str(tmp_path / "run"), init=str(base), channels=[8, 8], steps=2, batch_size=4,
        num_workers=0, eval_every=2, eval_pairs=2, checkpoint_every=1, log_every=1, lr=1e-2,
        rim_transfer=True,
    )  # fmt: skip
    folder = run_pretrain_matte(cfg)
    pipe = EditPipeline.from_pretrained(folder)
    assert pipe.matte is not None and pipe.matte.config.rim_transfer
    info = json.loads((folder / "TRAINING.json").read_text())
    history = info["history"]
    assert [h["stage"] for h in history] == [1, 2] and history[-1]["what"].startswith("edit matte")
    assert "rim transfer" in history[-1]["what"] and info["total_steps"] == 5 + 2
    assert history[-1]["last_eval"]["eval_iou"] >= 0

    # a fixed batch: a few more steps of the same objective lower its loss
    batch = next(iter(torch.utils.data.DataLoader(MatteStream(cfg, 32), batch_size=8)))
    opt = torch.optim.AdamW(pipe.matte.parameters(), lr=1e-2)
    with torch.no_grad():
        before = matte_loss(pipe, batch).item()
    for _ in range(5):
        loss = matte_loss(pipe, batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        assert matte_loss(pipe, batch).item() < before

    # resume: the checkpoint is at step 2; asking for 3 trains one more step, not three
    cfg.steps = 3
    run_pretrain_matte(cfg)
    steps = [
        r["step"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
    ]
    assert max(steps) == 3 and steps.count(3) >= 1 and steps.count(1) == 1


def test_composite_training_decodes_once_and_its_term_penalises_the_decode_outside(tmp_path):
    base = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8])).save_pretrained(tmp_path / "base")
    cfg = PretrainMatteConfig(
        out=str(tmp_path / "run"), init=str(base), steps=2, batch_size=4, num_workers=0, eval_every=2,
        eval_pairs=2, checkpoint_every=1, log_every=1, coverage_targets=True, composite_weight=1.0,
        composite_pairs=6, composite_sampler=[2, 1.5, 1.5],
    )  # fmt: skip
    run_pretrain_matte(cfg)
    chunks = sorted((tmp_path / "run" / "decodes").glob("chunk_*.pt"))
    assert len(chunks) == 1
    cached = torch.load(chunks[0], weights_only=False)
    assert cached["decoded"].shape == (6, 32, 32, 3) and cached["coverage"].shape == (6, 2, 32, 32)
    stamp = chunks[0].stat().st_mtime_ns
    cfg.steps = 3  # resuming reuses the decodes
    run_pretrain_matte(cfg)
    assert chunks[0].stat().st_mtime_ns == stamp

    # the composite term: a matte that lets the (untrained, noisy) decode in everywhere is
    # penalised for the outside, one that keeps the input there is not
    pipe = EditPipeline.from_pretrained(tmp_path / "run" / "model")
    stream = DecodeStream(cfg, tmp_path / "run" / "decodes")
    batch = next(iter(torch.utils.data.DataLoader(stream, batch_size=6)))
    assert batch["decoded"].shape == (6, 3, 32, 32) and batch["outside"].shape == (6, 1, 32, 32)
    with_term = PretrainMatteConfig(out="x", composite_weight=1.0, colour_weight=0.0)
    without = PretrainMatteConfig(out="x", composite_weight=0.0, colour_weight=0.0)
    _set_alpha(pipe.matte, 40.0, 40.0)
    with torch.no_grad():
        assert matte_loss(pipe, batch, with_term) > matte_loss(pipe, batch, without) + 0.1
    _set_alpha(pipe.matte, -40.0, -40.0)
    with torch.no_grad():  # keeping the input outside: the composite term is the input-vs-target gap
        gap = matte_loss(pipe, batch, with_term) - matte_loss(pipe, batch, without)
    assert 0 <= gap < 0.5


def test_matte_training_on_a_missing_or_contradicting_editor_is_a_clear_error(tmp_path):
    with pytest.raises(Sim2RealError, match="no base editor"):
        run_pretrain_matte(PretrainMatteConfig(out=str(tmp_path / "run"), init=str(tmp_path / "nope")))
    init = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8])).save_pretrained(tmp_path / "ed")
    with pytest.raises(Sim2RealError, match=r"already has a matte of widths \[8, 8\]"):
        run_pretrain_matte(PretrainMatteConfig(out=str(tmp_path / "run2"), init=str(init), channels=[8, 16]))
    bare = build_editor(EditorConfig(**SMALL)).save_pretrained(tmp_path / "bare")
    with pytest.raises(Sim2RealError, match="has none"):
        run_pretrain_matte(PretrainMatteConfig(out=str(tmp_path / "run3"), init=str(bare), train_matte=False))


def test_shipped_editor_matte_finds_the_edit_region():
    from sim2real.data.pairs import EditPairGenerator
    from sim2real.training.base_editor import load_base_editor
    from sim2real.training.matte import evaluate

    pipe = load_base_editor()
    assert pipe.matte is not None
    scores = evaluate(pipe, 8, pipe.config.resolution)
    # trained on each pixel's share of the parts, so scored against the shares (eval_iou_share); against
    # the 0/1 pixel-centre regions (eval_iou) it scores lower (0.83 on these 8 pairs)
    assert scores["eval_iou_share"] > 0.9 and scores["eval_iou"] > 0.8 and scores["eval_outside_kept"] > 0.9
    assert scores["eval_colour_delta_e"] < 20
    # the same frame, two instructions: the table, then the T
    pair = EditPairGenerator(seed=5, kinds=("background",)).sample()
    x = torch.from_numpy(pair.input).permute(2, 0, 1)[None].float() / 127.5 - 1
    masks = {}
    for words in ("make the table dark wood", "turn the t-shaped block orange"):
        with torch.no_grad():
            masks[words] = torch.sigmoid(pipe.matte(x, pipe.encode_prompt([words])))[0].sum(0).numpy() > 0.5
    table, t = masks["make the table dark wood"], masks["turn the t-shaped block orange"]
    assert (table == (pair.labels == 0)).mean() > 0.95
    assert (t == (pair.labels == 1)).mean() > 0.95
    # Diffusion Policy's walls are drawn on the table: a table edit of a `sim` frame covers them
    import dataclasses

    from envs.pusht.appearance import load_appearance
    from envs.pusht.physics import sample_initial_state
    from envs.pusht.render import render_state

    sim = load_appearance("sim")
    state = sample_initial_state(np.random.default_rng(0))
    frame, labels = render_state(state, sim, 96)
    bare, _ = render_state(state, dataclasses.replace(sim, wall_color=None), 96)
    walls = (np.abs(frame.astype(int) - bare.astype(int)).max(-1) > 20) & (labels == 0)
    assert walls.sum() > 200
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        alpha = torch.sigmoid(pipe.matte(x, pipe.encode_prompt(["make the table dark wood"])))[0, 0]
    assert alpha.numpy()[walls].mean() > 0.9


def test_colour_features_are_the_inputs_part_means():
    import cv2

    from sim2real.editing.matte import colour_features

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    table = np.zeros((8, 8), bool)
    table[:, :3] = True
    parts = torch.from_numpy(np.stack([table, ~table]).astype(np.float32))[None]
    image = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 127.5 - 1
    feats = colour_features(image, parts)[0].numpy()
    lab = cv2.cvtColor(rgb[0].astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    np.testing.assert_allclose(feats[:3] * 100, lab[table].mean(0), atol=0.5)
    np.testing.assert_allclose(feats[3:6] * 100, lab[~table].mean(0), atol=0.5)
    np.testing.assert_allclose(feats[6:], [3 / 8, 5 / 8])


def test_colour_head_that_reads_the_input_starts_from_the_text_heads_predictions(tmp_path):
    from sim2real.training.matte import _with_colour_inputs

    matte = EditMatte((8, 8), text_dim=16)
    image, text = torch.rand(2, 3, 16, 16) * 2 - 1, torch.randn(2, 5, 16)
    reading = _with_colour_inputs(matte, True)
    assert reading.config.colour_from_input
    with torch.no_grad():
        torch.testing.assert_close(reading.colours(text, image), matte.colours(text))
        torch.testing.assert_close(reading(image, text), matte(image, text))  # the matte is kept
        with pytest.raises(ValueError, match="reads the input frame"):
            reading.colours(text)
        torch.nn.init.normal_(reading.colour_head[0].weight)  # now the input's colour matters
        assert not torch.allclose(reading.colours(text, image), reading.colours(text, -image))
    reading.save_pretrained(tmp_path / "m")
    loaded = EditMatte.from_pretrained(tmp_path / "m")
    assert loaded.config.colour_from_input
    with torch.no_grad():
        torch.testing.assert_close(loaded.colours(text, image), reading.colours(text, image))


def test_criterion_colour_training_moves_only_the_head_and_lowers_the_smooth_criterion(tmp_path):
    base = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8])).save_pretrained(tmp_path / "base")
    cfg = PretrainMatteConfig(
        out=str(tmp_path / "run"), init=str(base), steps=1, batch_size=4, num_workers=0,
        eval_every=1, eval_pairs=2, colour_from_input=True, colour_loss="criterion", train_matte=False,
        rim_transfer=True,
    )  # fmt: skip
    pipe = EditPipeline.from_pretrained(run_pretrain_matte(cfg))
    before = EditPipeline.from_pretrained(base)
    assert pipe.matte.config.colour_from_input and pipe.matte.config.rim_transfer
    assert not before.matte.config.rim_transfer
    for name, value in before.matte.net.state_dict().items():  # the matte itself is frozen
        torch.testing.assert_close(pipe.matte.net.state_dict()[name], value)
    history = json.loads((tmp_path / "run" / "model" / "TRAINING.json").read_text())["history"]
    assert "only" in history[-1]["what"] and 0 <= history[-1]["last_eval"]["eval_colour_ok"] <= 1

    # a fixed batch: the smooth criterion falls as the head learns, the matte gets no gradient
    batch = next(iter(torch.utils.data.DataLoader(MatteStream(cfg, 32), batch_size=16)))
    pipe.matte.requires_grad_(True)
    opt = torch.optim.AdamW(pipe.matte.colour_head.parameters(), lr=3e-3)  # 1e-2 and up oscillate
    with torch.no_grad():
        first = matte_loss(pipe, batch, cfg=cfg).item()
    for _ in range(30):
        matte_loss(pipe, batch, cfg=cfg).backward()
        assert all(p.grad is None for p in pipe.matte.net.parameters())
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        assert matte_loss(pipe, batch, cfg=cfg).item() < 0.8 * first
    with pytest.raises(ValueError, match="colour_loss"):
        PretrainMatteConfig(out="x", colour_loss="l1")
    with pytest.raises(ValueError, match="composite_weight trains the matte"):
        PretrainMatteConfig(out="x", composite_weight=1.0, train_matte=False)
    with pytest.raises(ValueError, match="boundary_weight"):
        PretrainMatteConfig(out="x", boundary_weight=0)


def test_train_words_moves_only_those_words_embeddings_and_they_reach_the_colour_head(tmp_path):
    base = build_editor(EditorConfig(**SMALL, matte_channels=[8, 8])).save_pretrained(tmp_path / "base")
    cfg = PretrainMatteConfig(
        out=str(tmp_path / "run"), init=str(base), steps=3, batch_size=4, num_workers=0, lr=1e-2,
        eval_every=3, eval_pairs=2, colour_loss="criterion", train_matte=False, weight_decay=0.1,
        train_words=["very", "muted", "bright"],
    )  # fmt: skip
    before = EditPipeline.from_pretrained(base)
    pipe = EditPipeline.from_pretrained(run_pretrain_matte(cfg))
    old = before.text_encoder.get_input_embeddings().weight
    new = pipe.text_encoder.get_input_embeddings().weight
    rows = [before.tokenizer.convert_tokens_to_ids(w) for w in cfg.train_words]
    changed = set((new != old).any(1).nonzero()[:, 0].tolist())
    assert changed and changed <= set(rows)  # the words the stream said; weight decay spares the others
    for name, value in before.text_encoder.state_dict().items():  # the encoder's layers are frozen
        if "token_embedding" not in name:
            torch.testing.assert_close(pipe.text_encoder.state_dict()[name], value)
    history = json.loads((tmp_path / "run" / "model" / "TRAINING.json").read_text())["history"]
    assert "very, muted, bright" in history[-1]["what"]
    # a rerun of the finished run restores the trained rows from its checkpoint (not the init's)
    again = EditPipeline.from_pretrained(run_pretrain_matte(cfg))
    torch.testing.assert_close(again.text_encoder.get_input_embeddings().weight, new)
    bad = PretrainMatteConfig(out=str(tmp_path / "bad"), init=str(base), train_words=["zebra"])
    with pytest.raises(Sim2RealError, match="'zebra' is not one token"):
        run_pretrain_matte(bad)


def test_outline_marks_both_sides_of_a_parts_edge():
    from sim2real.training.matte import outline

    m = torch.zeros(1, 1, 8, 8)
    m[..., 2:6, 2:6] = 1
    ring = outline(m)[0, 0]
    assert ring[2, 2] == 1 and ring[1, 3] == 1 and ring[3, 3] == 0 and ring[0, 0] == 0
    assert ring.sum() == 8 * 8 - 2 * 2 - (8 * 8 - 6 * 6)  # the 6x6 square minus the 2x2 core
    assert outline(torch.ones(1, 1, 4, 4)).sum() == 0
