"""The editor: shapes, zero-init identity, one-call guidance, diffusers parity, save/load, errors."""

import copy

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline
from PIL import Image
from torch import nn

from sim2real.editing import EditorConfig, GuidanceScales, build_editor, conditioning_dropout
from sim2real.editing.pipeline import EditPipeline, combine_refs
from sim2real.errors import Sim2RealError

PROMPT = "make the table dark wood"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core box two threads under load are ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_config(**kw) -> EditorConfig:
    base = dict(resolution=32, codec_factor=4, unet_channels=[32, 64], text_dim=32, style_inner_dim=32)
    return EditorConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pipe() -> EditPipeline:
    return build_editor(small_config())


def images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def perturb_style_path(p: EditPipeline) -> None:
    """Make the visual prompt matter (a fresh model ignores it by construction)."""
    torch.manual_seed(1)
    with torch.no_grad():
        c = p.codec.latent_channels
        p.unet.conv_in.weight[:, 2 * c :] = 0.1 * torch.randn_like(p.unet.conv_in.weight[:, 2 * c :])


def narrowed_base_unet(p: EditPipeline) -> nn.Module:
    """The InstructPix2Pix UNet the widened one came from (old conv_in channels only)."""
    base = copy.deepcopy(p.unet)
    c = p.codec.latent_channels
    old = base.conv_in
    conv = nn.Conv2d(2 * c, old.out_channels, old.kernel_size, padding=old.padding)
    with torch.no_grad():
        conv.weight.copy_(old.weight[:, : 2 * c])
        conv.bias.copy_(old.bias)
    base.conv_in = conv
    base.register_to_config(in_channels=2 * c)
    return base


def test_call_shapes_and_trajectory(pipe):
    out = pipe(
        images(2), PROMPT, style_images=images(3, 1), num_inference_steps=3, eta=1.0, return_trajectory=True
    )
    c, h = pipe.codec.latent_channels, 32 // pipe.codec.factor
    assert out.images.shape == (2, 32, 32, 3) and out.images.dtype == np.uint8
    assert out.latents.shape == (2, 4, c, h, h)
    assert out.log_probs.shape == (2, 3) and torch.isfinite(out.log_probs).all()
    assert (out.log_probs != 0).all()  # eta=1: every step stochastic
    assert out.timesteps.shape == (3,)
    one = pipe(images(1)[0], PROMPT, num_inference_steps=2, output_type="pt")
    assert one.images.shape == (1, 3, 32, 32) and one.latents is None
    assert one.images.min() >= -1 and one.images.max() <= 1


def test_fresh_widened_model_predicts_as_the_base_whatever_the_style(pipe):
    torch.manual_seed(0)
    c, h = pipe.codec.latent_channels, 32 // pipe.codec.factor
    z, img = torch.randn(2, c, h, h), torch.randn(2, c, h, h)
    text = pipe.encode_prompt([PROMPT] * 2)
    base = narrowed_base_unet(pipe)
    with torch.no_grad():
        expected = base(torch.cat([z, img], 1), 500, encoder_hidden_states=text).sample
        for seed in (1, 2):
            sty = torch.randn(2, c, h, h, generator=torch.Generator().manual_seed(seed))
            feats = pipe.style_features(img, sty, text)
            assert feats.abs().max() > 1e-3  # the style does reach the UNet's input...
            got = pipe.model_output(z, 500, img, sty, text)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # ...and changes nothing


def test_doubly_zero_visual_prompt_cannot_learn_but_ours_can():
    def grads(zero_out: bool) -> tuple[float, float]:
        p = build_editor(small_config())
        if zero_out:
            nn.init.zeros_(p.style_module.to_out.weight)
        c, h = p.codec.latent_channels, 32 // p.codec.factor
        torch.manual_seed(0)
        z, img, sty = (torch.randn(2, c, h, h) for _ in range(3))
        out = p.model_output(z, 500, img, sty, p.encode_prompt([PROMPT] * 2))
        out.square().mean().backward()
        conv_grad = p.unet.conv_in.weight.grad[:, 2 * c :].abs().max().item()
        return conv_grad, p.style_module.to_out.weight.grad.abs().max().item()

    assert grads(zero_out=True) == (0.0, 0.0)  # W_conv·(W_out·a) with both zero: a dead saddle
    conv_grad, _ = grads(zero_out=False)
    assert conv_grad > 0


@pytest.mark.parametrize("with_style", [True, False])
def test_guidance_is_one_batched_call_and_matches_separate_calls(with_style):
    p = build_editor(small_config())
    perturb_style_path(p)
    c, h = p.codec.latent_channels, 32 // p.codec.factor
    torch.manual_seed(0)
    z, img, sty = (torch.randn(2, c, h, h) for _ in range(3))
    text, uncond = p.encode_prompt([PROMPT, "paint the block red"]), p.encode_prompt(["", ""])
    scales = GuidanceScales(text=7.5, image=1.5, style=3.0)
    calls = []
    hook = p.unet.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        got = p.guided_model_output(z, 400, img, sty if with_style else None, text, uncond, scales)
    hook.remove()
    assert len(calls) == 1

    drop = torch.zeros(2)
    zero = torch.zeros_like(img)
    with torch.no_grad():
        if with_style:  # SPIE's formula written out with four calls
            full = p.model_output(z, 400, img, sty, text)
            e_in = p.model_output(z, 400, img, sty, uncond, style_keep=drop)
            e_un = p.model_output(z, 400, zero, sty, uncond, style_keep=drop)
            # the style features come from the instruction's encoding in every branch (SPIE)
            feats = p.style_features(img, sty, text)
            e_in_sty = p._unet(z, 400, img, feats, uncond)
            expected = e_un + 1.5 * (e_in - e_un) + 3.0 * (e_in_sty - e_in) + 7.5 * (full - e_in_sty)
            assert (e_in_sty - e_in).abs().max() > 1e-4  # the style term is not trivially zero
        else:
            full = p.model_output(z, 400, img, None, text)
            e_in = p.model_output(z, 400, img, None, uncond)
            e_un = p.model_output(z, 400, zero, None, uncond)
            expected = e_un + 1.5 * (e_in - e_un) + 7.5 * (full - e_in)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scheduler, eta", [("ddim", 0.0), ("ddim", 1.0), ("euler_ancestral", 0.0)])
def test_parity_with_diffusers_instruct_pix2pix(scheduler, eta):
    cfg = small_config(
        codec="kl",
        parameterization="standard",
        prediction_type="epsilon",
        scheduler=scheduler,
        beta_schedule="scaled_linear",
    )
    ours = build_editor(cfg)
    ref = StableDiffusionInstructPix2PixPipeline(
        vae=ours.codec.vae,
        text_encoder=ours.text_encoder,
        tokenizer=ours.tokenizer,
        unet=narrowed_base_unet(ours),
        scheduler=type(ours.scheduler).from_config(ours.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    ref.set_progress_bar_config(disable=True)
    inp = [Image.fromarray(a) for a in images(2)]
    kw = dict(num_inference_steps=3, guidance_scale=7.5, image_guidance_scale=1.5, eta=eta)
    expected = ref(
        prompt=[PROMPT] * 2, image=inp, generator=torch.Generator().manual_seed(0), output_type="pt", **kw
    )
    got = ours(
        inp,
        PROMPT,
        style_images=images(1, 5),
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        progress=False,
        **kw,
    )
    # tolerance: float32 summation order differs (12- vs 8-channel conv_in, 4- vs 3-way batch)
    torch.testing.assert_close((got.images + 1) / 2, expected.images, rtol=0, atol=1e-4)
    assert expected.images.std() > 0.01


def test_save_load_round_trip_is_exact(tmp_path, pipe):
    pipe.save_pretrained(tmp_path / "ed")
    for sub in (
        "unet",
        "codec",
        "text_encoder",
        "tokenizer",
        "scheduler",
        "style_module",
        "editor_config.json",
    ):
        assert (tmp_path / "ed" / sub).exists(), sub
    loaded = EditPipeline.from_pretrained(tmp_path / "ed")
    assert loaded.config == pipe.config
    for name, module in pipe.modules.items():
        for (k, a), (_, b) in zip(
            module.state_dict().items(), loaded.modules[name].state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), f"{name}.{k}"
    kw = dict(style_images=images(2, 3), num_inference_steps=2, eta=1.0, progress=False)
    a = pipe(images(2), PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    b = loaded(images(2), PROMPT, generator=torch.Generator().manual_seed(0), **kw).images
    assert np.array_equal(a, b)


def test_sd15_loads_a_diffusers_layout_checkpoint_and_widens_it(tmp_path):
    src = build_editor(small_config(codec="kl", parameterization="standard", prediction_type="epsilon"))
    base = narrowed_base_unet(src)
    ckpt = tmp_path / "ip2p"
    base.save_pretrained(ckpt / "unet")
    src.codec.vae.save_pretrained(ckpt / "vae")
    src.text_encoder.save_pretrained(ckpt / "text_encoder")
    src.tokenizer.save_pretrained(ckpt / "tokenizer")
    src.scheduler.save_pretrained(ckpt / "scheduler")
    cfg = EditorConfig(
        preset="sd15",
        pretrained=str(ckpt),
        parameterization="standard",
        prediction_type="epsilon",
        style_inner_dim=32,
    )
    pipe = build_editor(cfg)
    c = pipe.codec.latent_channels
    assert pipe.unet.config.in_channels == 3 * c
    assert torch.equal(pipe.unet.conv_in.weight[:, : 2 * c], base.conv_in.weight)
    assert torch.equal(pipe.unet.conv_in.bias, base.conv_in.bias)
    assert pipe.unet.conv_in.weight[:, 2 * c :].abs().max() == 0
    out = pipe(images(1), PROMPT, style_images=images(1, 2), num_inference_steps=2, progress=False)
    assert out.images.shape == (1, 32, 32, 3)
    with pytest.raises(Sim2RealError, match="cannot load"):
        build_editor(
            EditorConfig(preset="sd15", pretrained=str(tmp_path / "missing"), parameterization="standard")
        )


def test_residual_parameterization_round_trips_the_target(pipe):
    inp, target = images(2, 0), images(2, 1)
    il, tl = pipe.encode_image(inp), pipe.encode_image(target)
    x0 = pipe.to_diffusion_space(tl, il)
    assert pipe.config.parameterization == "residual"
    assert torch.allclose(x0, (tl - il) * 0.5)
    got = pipe.decode(x0, il)  # lossless unshuffle codec: exact up to float rounding
    torch.testing.assert_close(
        got, torch.from_numpy(target).permute(0, 3, 1, 2).float() / 127.5 - 1, atol=1e-5, rtol=0
    )


def test_clear_errors_for_bad_inputs(pipe):
    kw = dict(num_inference_steps=1, progress=False)
    with pytest.raises(Sim2RealError, match="style_images must have the input images' size"):
        pipe(images(1), PROMPT, style_images=images(1, size=64), **kw)
    with pytest.raises(Sim2RealError, match="got 0 prompts for 2 images"):
        pipe(images(2), [], **kw)
    with pytest.raises(Sim2RealError, match="got 3 prompts for 2 images"):
        pipe(images(2), [PROMPT] * 3, **kw)
    with pytest.raises(Sim2RealError, match="RGB"):
        pipe(images(1)[..., 0], PROMPT, **kw)  # grey (B, H, W)
    with pytest.raises(Sim2RealError, match="RGB"):
        pipe(np.zeros((1, 32, 32, 4), np.uint8), PROMPT, **kw)
    with pytest.raises(Sim2RealError, match="PIL mode 'L'"):
        pipe(Image.new("L", (32, 32)), PROMPT, **kw)
    with pytest.raises(Sim2RealError, match="uint8"):
        pipe(images(1).astype(np.float32), PROMPT, **kw)
    with pytest.raises(Sim2RealError, match="multiples of"):
        pipe(images(1, size=36), PROMPT, **kw)


def test_config_checks_name_the_fields():
    with pytest.raises(ValueError, match="cross_attention_levels"):
        EditorConfig(cross_attention_levels=[True])
    with pytest.raises(ValueError, match="resolution"):
        EditorConfig(resolution=100)
    with pytest.raises(ValueError, match="parameterization"):
        EditorConfig(preset="sd15", pretrained="x", parameterization="residual")


def test_conditioning_dropout_patterns_and_rates():
    n = 20000
    img = torch.ones(n, 1, 1, 1)
    text, uncond = torch.ones(n, 1, 1), torch.zeros(n, 1, 1)
    d = conditioning_dropout(img, text, uncond, p=0.05, generator=torch.Generator().manual_seed(0))
    has_img, has_text, has_sty = d.image_latents.flatten() > 0, d.text_embeds.flatten() > 0, d.style_keep > 0
    patterns = {
        "in,sty,T": has_img & has_sty & has_text,
        "in,sty,-": has_img & has_sty & ~has_text,
        "in,-,-": has_img & ~has_sty & ~has_text,
        "-,-,-": ~has_img & ~has_sty & ~has_text,
        "in,-,T": has_img & ~has_sty & has_text,
    }
    rates = {k: v.float().mean().item() for k, v in patterns.items()}
    assert sum(v.sum().item() for v in patterns.values()) == n  # no other pattern occurs
    for k in ("in,sty,-", "in,-,-", "-,-,-", "in,-,T"):
        assert abs(rates[k] - 0.05) < 0.01, rates
    assert abs(rates["in,sty,T"] - 0.80) < 0.015


def test_combine_refs():
    refs = torch.arange(3.0).view(3, 1, 1, 1)
    assert combine_refs(refs, 2, "mean").flatten().tolist() == [1.0, 1.0]
    assert combine_refs(refs, 5, "batch").flatten().tolist() == [0, 1, 2, 0, 1]
    drawn = combine_refs(refs, 200, "sample", torch.Generator().manual_seed(0)).flatten()
    assert set(drawn.tolist()) == {0.0, 1.0, 2.0}


def test_tokenizer_covers_the_edit_pair_instructions():
    pairs = pytest.importorskip("sim2real.data.pairs")
    from sim2real.editing.text import build_word_tokenizer

    tok = build_word_tokenizer()
    text = " ".join(pairs.instruction_vocabulary()) + " change the T-shaped block to grey-blue"
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids
    assert tok("zebra")["input_ids"][1] == tok.unk_token_id


def test_editor_presets_compose_into_the_schema():
    from sim2real.config import compose

    assert compose("editor/tiny", [], EditorConfig) == EditorConfig()
    sd = compose("editor/sd15", ["pretrained=/some/ip2p"], EditorConfig)
    assert (sd.preset, sd.codec, sd.parameterization, sd.prediction_type) == (
        "sd15",
        "kl",
        "standard",
        "epsilon",
    )
    with pytest.raises(Sim2RealError, match="pretrained"):
        compose("editor/sd15", [], EditorConfig)
