"""The editor's configuration and its two presets, built from the real diffusers/transformers classes.

    tiny   UNet2DConditionModel + codec (pixel unshuffle, or a tiny AutoencoderKL) + 2-layer
           CLIPTextModel + offline word-level tokenizer, sized for 96×96 images on two CPU cores.
    sd15   an InstructPix2Pix checkpoint in diffusers layout (unet/, vae/, text_encoder/,
           tokenizer/, scheduler/) from a local folder (or a hub id where one has access).

Both get the visual prompt: `conv_in` widened from 2C to 3C channels and a style module.

Paper-to-code glossary: E(·) = `codec.encode`; z_t = the diffused variable (`latents`);
C = `codec.latent_channels`; h×w = latent size = resolution / codec factor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, UNet2DConditionModel

from sim2real.editing.codec import KLCodec, PixelUnshuffleCodec, tiny_autoencoder_kl
from sim2real.editing.matte import EditMatte
from sim2real.editing.refiner import PixelRefiner
from sim2real.editing.text import build_word_tokenizer, tiny_text_encoder
from sim2real.editing.visual_prompt import StyleModule, widen_conv_in
from sim2real.errors import Sim2RealError

if TYPE_CHECKING:
    from sim2real.editing.pipeline import EditPipeline

log = logging.getLogger(__name__)


@dataclass
class EditorConfig:
    """How the editor is built. Fields you will change are marked (*).

    Args:
        preset (*): `tiny` (built from the fields below) or `sd15` (loaded from `pretrained`).
        pretrained (*): sd15 only: a diffusers-layout InstructPix2Pix folder (or hub id).
        resolution: image side in pixels the tiny UNet is sized for (96 for Push-T).
        codec (*): `unshuffle` (lossless pixel unshuffle, no weights) or `kl` (tiny AutoencoderKL).
        codec_factor: downsampling of the codec (unshuffle: 4 -> 24×24×48, 8 -> 12×12×192).
        kl_latent_channels: latent channels of the tiny AutoencoderKL.
        parameterization (*): `standard` = InstructPix2Pix, diffuse E(I_target)·scaling_factor;
            `residual` = diffuse r = (E(I_target) − E(I_in))·residual_scale, output
            decode(E(I_in) + r0 / residual_scale): layout is kept from the first minutes of training.
        residual_scale: scale of the residual (0.5 keeps a [-1, 1] pixel difference in [-1, 1]).
        prediction_type (*): what the UNet predicts: `epsilon`, `sample` (the clean diffused
            variable) or `v_prediction`. sd15 checkpoints are `epsilon`.
        scheduler (*): `ddim` or `euler_ancestral` (both give log-probs, see samplers.py).
        beta_schedule: tiny preset's noise schedule (diffusers name).
        unet_channels, layers_per_block: tiny UNet widths per level and resnets per level.
        cross_attention_levels: per level, whether the tiny UNet cross-attends to the text.
            Only the coarse level by default: ~3× faster on CPU than attending at every level.
        attention_head_dim: passed to diffusers under that name, which (a legacy quirk) makes it the
            number of attention heads of the tiny UNet, not their width.
        text_dim, text_layers, max_text_length: tiny CLIP text encoder width, depth, tokens.
        style_inner_dim, style_heads: style-module attention width and heads (None: 64/4 for
            tiny, SPIE's 320/8 for sd15).
        style_combine (*): how several reference images make one visual prompt per example:
            `sample` one ref drawn per example (training), `mean` of the refs' latents
            (inference default), `batch` example i uses ref i mod K.
        refiner_channels (*): width of the full-resolution `PixelRefiner` applied after the UNet
            (0 = none). Tiny preset, unshuffle codec and `prediction_type="sample"` only.
        refiner_dilations: one 3×3 conv per entry, with that dilation (receptive field).
        refiner_text: the refiner also reads the instruction (FiLM from the text encoder's hidden
            states); with `init=` of an editor whose refiner is text-blind, that refiner's weights
            are kept and only the text path is new.
        matte_channels (*): level widths of the `EditMatte` (matte.py) composited over the decoded
            edit: where the instruction may change the frame ([] = none; tiny preset only). Trained
            separately by `sim2real pretrain-matte`.
        seed: seed of the random initialisation of everything not loaded.
    """

    preset: Literal["tiny", "sd15"] = "tiny"
    pretrained: str | None = None
    resolution: int = 96
    codec: Literal["unshuffle", "kl"] = "unshuffle"
    codec_factor: int = 8
    kl_latent_channels: int = 4
    parameterization: Literal["standard", "residual"] = "residual"
    residual_scale: float = 0.5
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "sample"
    scheduler: Literal["ddim", "euler_ancestral"] = "ddim"
    beta_schedule: str = "squaredcos_cap_v2"
    unet_channels: list[int] = field(default_factory=lambda: [64, 128])
    layers_per_block: int = 1
    cross_attention_levels: list[bool] = field(default_factory=lambda: [False, True])
    attention_head_dim: int = 8
    text_dim: int = 64
    text_layers: int = 2
    max_text_length: int = 24
    style_inner_dim: int | None = None
    style_heads: int | None = None
    style_combine: Literal["sample", "mean", "batch"] = "mean"
    refiner_channels: int = 0
    refiner_dilations: list[int] = field(default_factory=lambda: [1, 2, 4, 1])
    refiner_text: bool = False
    matte_channels: list[int] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.preset == "sd15" and not self.pretrained:
            raise ValueError(
                "preset sd15 needs pretrained (a diffusers InstructPix2Pix folder); got pretrained=None"
            )
        if self.preset == "sd15" and self.parameterization != "standard":
            raise ValueError(
                "a pretrained InstructPix2Pix diffuses the target latent: use parameterization=standard "
                f"with preset sd15; got {self.parameterization=}"
            )
        if len(self.cross_attention_levels) != len(self.unet_channels):
            raise ValueError(
                "cross_attention_levels needs one entry per unet_channels level; got "
                f"{self.cross_attention_levels=}, {self.unet_channels=}"
            )
        down = self.codec_factor * 2 ** (len(self.unet_channels) - 1)
        if self.preset == "tiny" and self.resolution % down:
            raise ValueError(
                f"resolution must be a multiple of codec_factor * 2**(len(unet_channels)-1) = {down}; "
                f"got {self.resolution=}"
            )
        if self.residual_scale <= 0:
            raise ValueError(f"residual_scale must be positive; got {self.residual_scale=}")
        if self.refiner_channels < 0:
            raise ValueError(f"refiner_channels must be >= 0; got {self.refiner_channels=}")
        if self.refiner_text and not self.refiner_channels:
            raise ValueError("refiner_text needs a refiner: set refiner_channels > 0 too")
        if self.matte_channels and (self.preset != "tiny" or min(self.matte_channels) < 8):
            raise ValueError(
                "the edit matte reads the tiny text encoder and needs level widths >= 8 (group norm); "
                f"got {self.preset=}, {self.matte_channels=}"
            )
        if self.refiner_channels and (
            self.preset != "tiny" or self.codec != "unshuffle" or self.prediction_type != "sample"
        ):
            raise ValueError(
                "the pixel refiner corrects a clean-residual estimate in pixel-unshuffle space: it needs "
                f"preset=tiny, codec=unshuffle, prediction_type=sample; got {self.preset=}, "
                f"{self.codec=}, {self.prediction_type=}"
            )


def build_editor(cfg: EditorConfig, device: str | torch.device = "cpu") -> EditPipeline:
    """Build the editor pipeline of `cfg` (tiny: random initialisation; sd15: load and widen)."""
    from sim2real.editing.pipeline import EditPipeline

    parts = _build_tiny(cfg) if cfg.preset == "tiny" else _load_sd15(cfg)
    return EditPipeline(config=cfg, **parts).to(device)


def make_scheduler(
    cfg: EditorConfig, base_config: dict | None = None
) -> DDIMScheduler | EulerAncestralDiscreteScheduler:
    """A diffusers scheduler for `cfg`; `base_config` (e.g. a checkpoint's) supplies the table."""
    if base_config is None:
        base_config = {
            "num_train_timesteps": 1000,
            "beta_schedule": cfg.beta_schedule,
            # alpha_prev = alphas_cumprod[0] < 1 at the last DDIM step keeps that step stochastic
            "set_alpha_to_one": False,
            "clip_sample": False,
        }
        if cfg.prediction_type == "epsilon":
            # under squaredcos alphas_cumprod[999] = 2e-9: x0 = (x - ε)/sqrt(ᾱ) would amplify ε errors
            # 2·10⁴×, so an ε-model starts one step in (diffusers' SD default spacing)
            base_config.update(timestep_spacing="leading", steps_offset=1)
        else:
            # x0 / v models can start from t=999, i.e. from pure noise, as sampling from noise needs
            base_config.update(timestep_spacing="trailing")
    base_config = {**base_config, "prediction_type": cfg.prediction_type}
    cls = DDIMScheduler if cfg.scheduler == "ddim" else EulerAncestralDiscreteScheduler
    return cls.from_config(base_config)


def _make_codec(cfg: EditorConfig) -> PixelUnshuffleCodec | KLCodec:
    if cfg.codec == "unshuffle":
        return PixelUnshuffleCodec(cfg.codec_factor)
    return KLCodec(tiny_autoencoder_kl(cfg.kl_latent_channels, cfg.codec_factor))


def _build_tiny(cfg: EditorConfig) -> dict:
    torch.manual_seed(cfg.seed)
    codec = _make_codec(cfg)
    c = codec.latent_channels
    tokenizer = build_word_tokenizer(max_length=cfg.max_text_length)
    torch.manual_seed(cfg.seed)
    text_encoder = tiny_text_encoder(tokenizer, hidden_size=cfg.text_dim, layers=cfg.text_layers)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.cross_attention_levels))
    torch.manual_seed(cfg.seed)
    unet = UNet2DConditionModel(
        sample_size=cfg.resolution // cfg.codec_factor,
        in_channels=2 * c,  # InstructPix2Pix's input: (z_t, E(I_in)); widened below
        out_channels=c,
        block_out_channels=tuple(cfg.unet_channels),
        layers_per_block=cfg.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        cross_attention_dim=cfg.text_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=min(32, min(cfg.unet_channels)),
    )
    widen_conv_in(unet, c)
    torch.manual_seed(cfg.seed)
    style = StyleModule(c, cfg.text_dim, cfg.style_inner_dim or 64, cfg.style_heads or 4)
    return dict(
        unet=unet,
        codec=codec,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=make_scheduler(cfg),
        style_module=style,
        refiner=make_refiner(cfg),
        matte=make_matte(cfg),
    )


def make_refiner(cfg: EditorConfig) -> PixelRefiner | None:
    """The `PixelRefiner` of `cfg` (identity at initialisation), or None if `refiner_channels` is 0."""
    if not cfg.refiner_channels:
        return None
    torch.manual_seed(cfg.seed)
    return PixelRefiner(
        cfg.codec_factor,
        cfg.refiner_channels,
        tuple(cfg.refiner_dilations),
        text_dim=cfg.text_dim if cfg.refiner_text else 0,
    )


def make_matte(cfg: EditorConfig) -> EditMatte | None:
    """The `EditMatte` of `cfg` (random initialisation), or None if `matte_channels` is empty."""
    if not cfg.matte_channels:
        return None
    torch.manual_seed(cfg.seed)
    return EditMatte(tuple(cfg.matte_channels), text_dim=cfg.text_dim)


def _load_sd15(cfg: EditorConfig) -> dict:
    from transformers import AutoTokenizer, CLIPTextModel

    from sim2real.editing.codec import KLCodec as _KL

    src = cfg.pretrained
    local = Path(src).is_dir()
    if not local and Path(src).exists():
        raise Sim2RealError(f"pretrained must be a folder in diffusers layout; got file {src}")
    try:
        kw = {} if local else {"local_files_only": False}
        root = str(src)
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kw)
        from diffusers import AutoencoderKL

        codec = _KL(AutoencoderKL.from_pretrained(root, subfolder="vae", **kw))
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", **kw)
        tokenizer = AutoTokenizer.from_pretrained(root, subfolder="tokenizer", **kw)
        sched_cfg = DDIMScheduler.load_config(root, subfolder="scheduler", **kw)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Sim2RealError(
            f"cannot load an InstructPix2Pix checkpoint from {src!r} (needs unet/, vae/, text_encoder/, "
            f"tokenizer/, scheduler/; nothing here downloads weights): {first}"
        ) from e
    c = codec.latent_channels
    if unet.config.in_channels != 2 * c:
        raise Sim2RealError(
            f"{src}: unet takes {unet.config.in_channels} input channels; an InstructPix2Pix UNet takes "
            f"2 × {c} (noisy latent + input image)"
        )
    widen_conv_in(unet, c)
    text_dim = text_encoder.config.hidden_size
    torch.manual_seed(cfg.seed)
    style = StyleModule(c, text_dim, cfg.style_inner_dim or 320, cfg.style_heads or 8)
    sched_cfg = {k: v for k, v in dict(sched_cfg).items() if not k.startswith("_")}
    return dict(
        unet=unet,
        codec=codec,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=make_scheduler(cfg, sched_cfg),
        style_module=style,
    )
