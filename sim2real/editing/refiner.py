"""`PixelRefiner`: a small full-resolution head that snaps the tiny UNet's residual to the input's outlines.

The tiny editor diffuses in an 8×8 pixel-unshuffle space (96×96×3 → 12×12×192): one latent cell
holds an 8×8 patch, and its 192 output values come from one 64-wide feature vector, so an edit
residual cannot follow an object outline that cuts through a patch. Measured on held-out pairs, every
pixel the shipped UNet wrongly changes outside the edited region lies within 2 px of an object boundary
(docs/base_editor.md). The refiner sees the predicted clean residual and the input image at full
resolution, plus the noise level, and returns a corrected residual:

    r = pixel_shuffle(r0_hat)            (B, 3, H, W)    the UNet's residual as an image
    a, d = head([r, I_in, t/T])          dilated 3×3 convs, zero-initialised output: identity at start
    r' = r · (1 + a) + d                 a = −1 switches the residual off (a protected object)
    return pixel_unshuffle(r')

With `text_dim` > 0 the refiner also reads the instruction: the token-mean of the text encoder's
hidden states FiLM-modulates every hidden layer (scale and shift per channel, zero-initialised, so a
text-aware refiner initialised from a text-blind one starts as exactly that one). The text tells it
*which* region the edit belongs to (table or T) and what colour the words name — the two things a
purely local correction cannot know.

It is part of the denoiser (`EditPipeline.model_output` / `guided_model_output` apply it after the
UNet, after guidance at inference), so samplers, log-probs and D3PO need no change. Only for the
pixel-unshuffle codec with `prediction_type="sample"` (it corrects a clean-residual estimate).
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


class PixelRefiner(ModelMixin, ConfigMixin):
    """Full-resolution residual correction; `channels` wide, one 3×3 conv per entry of `dilations`."""

    @register_to_config
    def __init__(
        self,
        factor: int = 8,
        channels: int = 32,
        dilations: tuple[int, ...] = (1, 2, 4, 1),
        num_train_timesteps: int = 1000,
        text_dim: int = 0,
    ):
        super().__init__()
        self.conv_in = nn.Conv2d(3 + 3 + 1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=d, dilation=d) for d in dilations
        )
        self.conv_out = nn.Conv2d(channels, 6, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.text_film = None
        if text_dim:
            self.text_film = nn.Linear(text_dim, 2 * channels * (1 + len(dilations)))
            nn.init.zeros_(self.text_film.weight)
            nn.init.zeros_(self.text_film.bias)

    def load_text_blind(self, other: PixelRefiner) -> None:
        """Copy a text-blind refiner's weights into this one (same sizes); the text FiLM stays zero."""
        missing, unexpected = self.load_state_dict(other.state_dict(), strict=False)
        if unexpected or any(not k.startswith("text_film.") for k in missing):
            raise ValueError(f"refiners differ beyond the text FiLM: {missing=}, {unexpected=}")

    def forward(
        self,
        residual: torch.Tensor,
        image_latents: torch.Tensor,
        t: torch.Tensor,
        text_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """residual, image_latents: (B, 3f², h, w) codec latents; t: () or (B,); text_embeds: (B, L, D)
        hidden states of the instruction (needed when `text_dim` > 0) → corrected residual."""
        f = self.config.factor
        r = F.pixel_shuffle(residual, f)  # (B, 3, H, W)
        image = F.pixel_shuffle(image_latents.to(r.dtype), f)
        b, _, h, w = r.shape
        t = torch.as_tensor(t, device=r.device, dtype=r.dtype).reshape(-1)
        level = (t / self.config.num_train_timesteps).expand(b)[:, None, None, None].expand(b, 1, h, w)
        film = [(0.0, 0.0)] * (1 + len(self.blocks))
        if self.text_film is not None:
            if text_embeds is None:
                raise ValueError("this refiner reads the instruction: pass text_embeds (B, L, D)")
            pooled = text_embeds.to(r.dtype).mean(dim=1)  # (B, D), padding tokens included
            ss = self.text_film(pooled)[:, :, None, None].chunk(2 * len(film), dim=1)
            film = list(zip(ss[0::2], ss[1::2], strict=True))  # (scale, shift) per layer, (B, C, 1, 1)
        h0 = self.conv_in(torch.cat([r, image, level], dim=1))
        x = F.silu(h0 * (1 + film[0][0]) + film[0][1])
        for conv, (scale, shift) in zip(self.blocks, film[1:], strict=True):
            x = x + F.silu(conv(x) * (1 + scale) + shift)
        gain, shift = self.conv_out(x).chunk(2, dim=1)  # (B, 3, H, W) each
        return F.pixel_unshuffle(r * (1 + gain) + shift, f)
