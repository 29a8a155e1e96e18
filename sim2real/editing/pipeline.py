"""`EditPipeline`: InstructPix2Pix with a visual prompt, three-way guidance and log-prob trajectories.

    pipe = build_editor(EditorConfig())                        # or EditPipeline.from_pretrained(dir)
    out = pipe(images, "make the table dark wood", style_images=refs, eta=1.0, return_trajectory=True)
    out.images      uint8 (B, H, W, 3)
    out.latents     (B, S+1, C, h, w)   z_T … z_0 of the diffused variable
    out.log_probs   (B, S)              log p(z_{t-1} | z_t), mean over latent dims

Trainers use the pieces: `prepare_conditions` (encode once), `guided_model_output` (all guidance
terms in ONE batched UNet call), `model_output` (one unguided call with dropout masks),
`to_diffusion_space` / `from_diffusion_space` and the steps in `samplers.py`.

Condition variants stacked on the batch axis (order fixed, SPIE's):
    three-way: [(in,sty,T), (in,∅,∅), (∅,∅,∅), (in,sty,∅)]     two-way: [(in,T), (in,∅), (∅,∅)]
As in SPIE, the style features are computed once from the instruction's text encoding and reused
in the (in,sty,∅) branch; the null style is zero features.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor
from transformers import AutoTokenizer, CLIPTextModel

from sim2real.editing.codec import KLCodec, PixelUnshuffleCodec, load_codec, save_codec
from sim2real.editing.guidance import GuidanceScales, three_way_guidance, two_way_guidance
from sim2real.editing.images import ImageInput, to_model_images, to_uint8
from sim2real.editing.matte import EditMatte
from sim2real.editing.model import EditorConfig
from sim2real.editing.refiner import PixelRefiner
from sim2real.editing.samplers import scale_model_input, step_log_prob
from sim2real.editing.visual_prompt import StyleModule
from sim2real.errors import Sim2RealError
from sim2real.utils import atomic_path, tqdm

log = logging.getLogger(__name__)

CONFIG_NAME = "editor_config.json"


@dataclass
class Conditions:
    """Encoded conditions of a batch (see `EditPipeline.prepare_conditions`)."""

    image_latents: torch.Tensor  # (B, C, h, w) E(I_in), unscaled as InstructPix2Pix feeds it
    text_embeds: torch.Tensor  # (B, L, D) text encoder hidden states of the instruction
    uncond_embeds: torch.Tensor  # (B, L, D) hidden states of "" (the null text)
    style_latents: torch.Tensor | None  # (B, C, h, w) E(I_sty) after combining refs, or None


@dataclass
class EditPipelineOutput:
    """`images`: uint8 (B, H, W, 3) ("np") or float (B, 3, H, W) in [-1, 1] ("pt").

    With `return_trajectory`: `latents` (B, S+1, C, h, w) from the initial noise to the last step,
    `log_probs` (B, S) of each step (0 for deterministic steps), `timesteps` (S,).
    """

    images: np.ndarray | torch.Tensor
    latents: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    timesteps: torch.Tensor | None = None


class EditPipeline:
    """The editor: components + config; see the module docstring for the call pattern."""

    def __init__(
        self,
        config: EditorConfig,
        unet: UNet2DConditionModel,
        codec: PixelUnshuffleCodec | KLCodec,
        text_encoder: CLIPTextModel,
        tokenizer,
        scheduler: DDIMScheduler | EulerAncestralDiscreteScheduler,
        style_module: StyleModule,
        refiner: PixelRefiner | None = None,
        matte: EditMatte | None = None,
    ):
        self.config = config
        self.unet = unet
        self.codec = codec
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self.style_module = style_module
        self.refiner = refiner  # full-resolution residual correction after the UNet (refiner.py)
        self.matte = matte  # where the instruction may change the frame, after decoding (matte.py)
        c = codec.latent_channels
        if unet.config.in_channels != 3 * c or unet.config.out_channels != c:
            raise ValueError(
                f"unet must take 3×{c} channels (z_t, image, style) and give {c}; got "
                f"{unet.config.in_channels=}, {unet.config.out_channels=}"
            )

    # ------------------------------------------------------------------ components
    @property
    def device(self) -> torch.device:
        return self.unet.conv_in.weight.device  # ModelMixin.device walks every parameter

    @property
    def modules(self) -> dict[str, torch.nn.Module]:
        modules = {
            "unet": self.unet,
            "codec": self.codec,
            "text_encoder": self.text_encoder,
            "style_module": self.style_module,
        }
        if self.refiner is not None:
            modules["refiner"] = self.refiner
        if self.matte is not None:
            modules["matte"] = self.matte
        return modules

    def to(self, device: str | torch.device) -> EditPipeline:
        for m in self.modules.values():
            m.to(device)
        return self

    @property
    def downsample(self) -> int:
        """Image sides must be a multiple of this (codec factor × UNet downsampling)."""
        return self.codec.factor * 2 ** (len(self.unet.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ encoding
    def encode_prompt(self, prompt: list[str]) -> torch.Tensor:
        """Text encoder hidden states (B, L, D), padded to the tokenizer's max length as diffusers."""
        ids = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder(ids.to(self.device))[0]  # (B, L, D)

    def encode_image(self, images: ImageInput, name: str = "image") -> torch.Tensor:
        """E(I): codec latents (B, C, h, w), unscaled; checks RGB and size."""
        x = to_model_images(images, name).to(self.device, dtype=self.unet.dtype)  # (B, 3, H, W)
        h, w = x.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise Sim2RealError(
                f"{name}: height and width must be multiples of {self.downsample}; got {h}×{w}"
            )
        return self.codec.encode(x)

    def prepare_conditions(
        self,
        image: ImageInput,
        prompt: str | list[str],
        style_images: ImageInput | None = None,
        generator: torch.Generator | None = None,
    ) -> Conditions:
        """Encode a batch's input images, instructions and (optionally) shared reference images.

        `style_images` are K refs shared by the batch, combined by `config.style_combine`
        (`sample`: one drawn per example with `generator`; `mean`: mean latent; `batch`: i mod K).
        """
        image_latents = self.encode_image(image, "image")
        b = image_latents.shape[0]
        prompts = _check_prompts(prompt, b)
        text = self.encode_prompt(prompts)
        uncond = self.encode_prompt([""] * b)
        style = None
        if style_images is not None:
            refs = self.encode_image(style_images, "style_images")  # (K, C, h, w)
            if refs.shape[-2:] != image_latents.shape[-2:]:
                raise Sim2RealError(
                    f"style_images must have the input images' size; got latents {tuple(refs.shape[-2:])} "
                    f"vs {tuple(image_latents.shape[-2:])} (resize the refs, e.g. sim2real.data.images.load_images)"
                )
            style = combine_refs(refs, b, self.config.style_combine, generator)
        return Conditions(image_latents, text, uncond, style)

    # ------------------------------------------------------------------ model calls
    def style_features(
        self, image_latents: torch.Tensor, style_latents: torch.Tensor, text_embeds: torch.Tensor
    ) -> torch.Tensor:
        """Output of the cross-attention pre-conv: what fills the UNet's third C channels."""
        return self.style_module(image_latents, style_latents, text_embeds)  # (B, C, h, w)

    def _unet(self, x, t, image_latents, style_feats, text_embeds) -> torch.Tensor:
        inp = torch.cat([x, image_latents, style_feats], dim=1)  # (N, 3C, h, w)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return self.unet(inp, t, encoder_hidden_states=text_embeds, return_dict=False)[0]  # (N, C, h, w)

    def refine(
        self,
        out: torch.Tensor,
        image_latents: torch.Tensor,
        t: int | torch.Tensor,
        text_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The refiner's correction of a (guided) clean-residual estimate; identity without a refiner.

        `text_embeds`: the instruction's hidden states (B, L, D), read by a text-aware refiner.
        """
        return out if self.refiner is None else self.refiner(out, image_latents, t, text_embeds)

    def model_output(
        self,
        latents: torch.Tensor,
        t: int | torch.Tensor,
        image_latents: torch.Tensor,
        style_latents: torch.Tensor | None,
        text_embeds: torch.Tensor,
        style_keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One unguided UNet call (training loss). `style_keep` (B,) zeroes dropped style features."""
        x = scale_model_input(self.scheduler, latents, t)
        if style_latents is None:
            feats = torch.zeros_like(image_latents)
        else:
            feats = self.style_features(image_latents, style_latents, text_embeds)
            if style_keep is not None:
                feats = feats * style_keep.to(feats.dtype)[:, None, None, None]
        return self.refine(self._unet(x, t, image_latents, feats, text_embeds), image_latents, t, text_embeds)

    def guided_model_output(
        self,
        latents: torch.Tensor,
        t: int | torch.Tensor,
        image_latents: torch.Tensor,
        style_latents: torch.Tensor | None,
        text_embeds: torch.Tensor,
        uncond_embeds: torch.Tensor,
        scales: GuidanceScales,
    ) -> torch.Tensor:
        """The guided model output (B, C, h, w) from ONE batched UNet call over all condition variants.

        Three-way guidance with `style_latents`, InstructPix2Pix two-way guidance without.
        `latents` is the diffused variable (unscaled for Euler; scaled here). Keeps gradients.
        """
        b = latents.shape[0]
        x = scale_model_input(self.scheduler, latents, t)
        zeros = torch.zeros_like(image_latents)
        t_all = torch.as_tensor(t, device=latents.device)
        if style_latents is None:
            feats = zeros.repeat(3, 1, 1, 1)
            images = torch.cat([image_latents, image_latents, zeros])
            texts = torch.cat([text_embeds, uncond_embeds, uncond_embeds])
            n = 3
        else:
            f = self.style_features(image_latents, style_latents, text_embeds)
            feats = torch.cat([f, zeros, zeros, f])
            images = torch.cat([image_latents, image_latents, zeros, image_latents])
            texts = torch.cat([text_embeds, uncond_embeds, uncond_embeds, uncond_embeds])
            n = 4
        if t_all.ndim == 1:
            t_all = t_all.repeat(n)
        out = self._unet(x.repeat(n, 1, 1, 1), t_all, images, feats, texts).split(b)
        if n == 3:
            guided = two_way_guidance(out[0], out[1], out[2], scales)
        else:
            guided = three_way_guidance(out[0], out[1], out[2], out[3], scales)
        return self.refine(guided, image_latents, t, text_embeds)  # after guidance: the instruction

    # ------------------------------------------------------------------ diffused variable <-> latents
    def to_diffusion_space(self, target_latents: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
        """The variable the model diffuses, from E(I_target) and E(I_in) (both unscaled)."""
        if self.config.parameterization == "residual":
            return (target_latents - image_latents) * self.config.residual_scale
        return target_latents * self.codec.scaling_factor

    def from_diffusion_space(self, x0: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
        """Codec latents (unscaled) of the edited image from a clean diffused variable."""
        if self.config.parameterization == "residual":
            return image_latents + x0 / self.config.residual_scale
        return x0 / self.codec.scaling_factor

    def decode(
        self,
        x0: torch.Tensor,
        image_latents: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
        calibrate_colour: bool = False,
    ) -> torch.Tensor:
        """Edited images (B, 3, H, W) in [-1, 1] from a clean diffused variable.

        With an edit matte and the instruction's hidden states `text_embeds` (B, L, D), the decoded
        edit is composited over the input frame where the matte says the instruction applies, and
        with `calibrate_colour` each edited part's mean colour is set to the one its words name
        (matte.py; the pipeline does so when there is no visual prompt).
        """
        images = self.codec.decode(self.from_diffusion_space(x0, image_latents)).clamp(-1, 1)
        if self.matte is None or text_embeds is None:
            return images
        inputs = self.codec.decode(image_latents).clamp(-1, 1)
        return self.matte.composite(images, inputs.to(images.dtype), text_embeds, calibrate_colour)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def __call__(
        self,
        image: ImageInput,
        prompt: str | list[str],
        style_images: ImageInput | None = None,
        num_inference_steps: int = 10,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        style_guidance_scale: float = 3.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        return_trajectory: bool = False,
        progress: bool = True,
        output_type: Literal["np", "pt"] = "np",
        latents: torch.Tensor | None = None,
        calibrate_colour: bool | None = None,
        composite: bool = True,
    ) -> EditPipelineOutput:
        """Edit `image` by `prompt`, with the visual prompt `style_images` (K refs) if given.

        eta: DDIM stochasticity; 1.0 for D3PO trajectories (log-probs are 0 for η = 0 steps).
        latents: optional initial noise (B, C, h, w) instead of drawing it from `generator`.
        calibrate_colour: with an edit matte, set each edited part's mean colour to the one the
            words name (default: only without a visual prompt; matte.py).
        composite: False returns the decoded edit as it is, without the matte's composite over the
            input (what `sim2real pretrain-matte composite_weight=…` learns to composite).
        """
        if output_type not in ("np", "pt"):
            raise ValueError(f"output_type must be 'np' or 'pt'; got {output_type!r}")
        if num_inference_steps < 1:
            raise Sim2RealError(f"num_inference_steps must be >= 1; got {num_inference_steps}")
        if return_trajectory and eta == 0 and isinstance(self.scheduler, DDIMScheduler):
            log.warning("eta=0 makes every DDIM step deterministic: trajectory log-probs are all 0")
        scales = GuidanceScales(text=guidance_scale, image=image_guidance_scale, style=style_guidance_scale)
        single = generator if isinstance(generator, torch.Generator) or generator is None else None

        # 1. encode the input images, the instructions and the visual prompt
        cond = self.prepare_conditions(image, prompt, style_images, generator=single)
        b, c, h, w = cond.image_latents.shape

        # 2. timesteps and initial noise (drawn as diffusers' pipelines draw it)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self.scheduler.timesteps
        if latents is None:
            latents = randn_tensor(
                (b, c, h, w), generator=generator, device=self.device, dtype=cond.image_latents.dtype
            )
        latents = latents.to(self.device) * self.scheduler.init_noise_sigma

        # 3. denoise: one batched UNet call per step, then a step that reports its log-prob
        trajectory, log_probs = [latents], []
        bar = {} if progress else {"disable": True}  # else SIM2REAL_PROGRESS decides
        for t in tqdm(timesteps, desc="edit", leave=False, **bar):
            out = self.guided_model_output(
                latents,
                t,
                cond.image_latents,
                cond.style_latents,
                cond.text_embeds,
                cond.uncond_embeds,
                scales,
            )
            latents, log_prob = step_log_prob(self.scheduler, out, t, latents, eta=eta, generator=generator)
            trajectory.append(latents)
            log_probs.append(log_prob)

        # 4. decode
        calibrate = style_images is None if calibrate_colour is None else calibrate_colour
        text = cond.text_embeds if composite else None
        images = self.decode(latents, cond.image_latents, text, calibrate)  # (B, 3, H, W)
        result = EditPipelineOutput(images=to_uint8(images) if output_type == "np" else images)
        if return_trajectory:
            result.latents = torch.stack(trajectory, dim=1)  # (B, S+1, C, h, w)
            result.log_probs = torch.stack(log_probs, dim=1)  # (B, S)
            result.timesteps = timesteps.clone()
        return result

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write diffusers-style subfolders + `style_module/` + `editor_config.json` (safetensors), atomically."""
        folder = Path(folder)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            self.unet.save_pretrained(tmp / "unet")
            save_codec(self.codec, tmp)
            self.text_encoder.save_pretrained(tmp / "text_encoder")
            self.tokenizer.save_pretrained(tmp / "tokenizer")
            self.scheduler.save_pretrained(tmp / "scheduler")
            self.style_module.save_pretrained(tmp / "style_module")
            if self.refiner is not None:
                self.refiner.save_pretrained(tmp / "refiner")
            if self.matte is not None:
                self.matte.save_pretrained(tmp / "matte")
            (tmp / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(self.config), indent=2) + "\n")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu") -> EditPipeline:
        """Load what `save_pretrained` wrote."""
        folder = Path(folder)
        if not (folder / CONFIG_NAME).exists():
            raise Sim2RealError(f"{folder} is not an editor folder (no {CONFIG_NAME})")
        try:
            config = EditorConfig(**json.loads((folder / CONFIG_NAME).read_text()))
        except (TypeError, ValueError) as e:
            raise Sim2RealError(f"{folder / CONFIG_NAME}: {e}") from e
        sched_cls = DDIMScheduler if config.scheduler == "ddim" else EulerAncestralDiscreteScheduler
        try:
            pipe = cls(
                config=config,
                unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
                codec=load_codec(folder),
                text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder"),
                tokenizer=AutoTokenizer.from_pretrained(folder / "tokenizer"),
                scheduler=sched_cls.from_pretrained(folder / "scheduler"),
                style_module=StyleModule.from_pretrained(folder / "style_module"),
                refiner=PixelRefiner.from_pretrained(folder / "refiner") if config.refiner_channels else None,
                matte=EditMatte.from_pretrained(folder / "matte") if config.matte_channels else None,
            )
        except OSError as e:  # a component folder missing or unreadable (half-copied editor)
            raise Sim2RealError(f"{folder}: incomplete editor folder: {e}") from e
        for m in pipe.modules.values():
            m.eval()
        return pipe.to(device)


def combine_refs(
    refs: torch.Tensor,
    batch: int,
    how: Literal["sample", "mean", "batch"],
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """K reference latents (K, C, h, w) -> one visual prompt per example (B, C, h, w)."""
    k = refs.shape[0]
    if how == "mean":
        return refs.mean(dim=0, keepdim=True).expand(batch, -1, -1, -1)
    if how == "sample":
        index = torch.randint(k, (batch,), generator=generator)
    elif how == "batch":
        index = torch.arange(batch) % k
    else:
        raise ValueError(f"style_combine must be sample, mean or batch; got {how!r}")
    return refs[index.to(refs.device)]


def _check_prompts(prompt: str | list[str], batch: int) -> list[str]:
    if isinstance(prompt, str):
        return [prompt] * batch
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
        raise Sim2RealError(f"prompt must be a string or a list of strings; got {type(prompt).__name__}")
    if len(prompt) != batch:
        raise Sim2RealError(f"got {len(prompt)} prompts for {batch} images; give one prompt or one per image")
    return list(prompt)
