"""`EditMatte`: where may the instruction change the picture? A full-resolution soft mask from the input
frame and the instruction, composited over the editor's output.

Measured on held-out pairs (docs/base_editor.md), the tiny editor's colour was right on ~62% of
pairs but only ~40% of pairs were edit successes: the 8×8-patch UNet bleeds the new look onto the
objects the instruction does not name (the agent disk, the goal, the T in a table edit), so the PSNR
outside the edit fails. Deciding *which pixels* an instruction is about is a segmentation problem of
the input frame — "the table", "the T-shaped block", or both — that needs neither the noise nor the
new look. So the matte is a separate small model, trained with its own loss (per-pixel cross-entropy
against the exact edit region the simulator gives, `sim2real pretrain-matte`), and applied once,
after decoding:

    α = sigmoid(matte(I_in, instruction))       (B, 1, H, W)
    I_out = I_in + α · (D(z) − I_in)             α = 0 keeps the input pixel exactly

The network is diffusers' `UNet2DModel` (no attention, a few levels), with the instruction — the
token-mean of the editor's text encoder hidden states, projected — added to its time embedding
(`class_embed_type="identity"`); the timestep is always 0. The matte never sees the target, the
masks or the new look at inference: only what the editor sees.

It is part of decoding (`EditPipeline.decode(..., text_embeds=...)`), so `sim2real edit`, D3PO's
rewards and the specialists see composited frames; the diffusion chain and its log-probs are
unchanged. Without a matte (`matte_channels=[]`), decoding is what it was.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class EditMatte(ModelMixin, ConfigMixin):
    """Edit-region logits (B, 1, H, W) from input images (B, 3, H, W) in [-1, 1] and text (B, L, D)."""

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (8, 16, 32, 32), text_dim: int = 64, groups: int = 0):
        super().__init__()
        channels = tuple(channels)
        groups = groups or min(8, min(channels) // 2)  # group norm: at least 2 channels per group
        self.net = UNet2DModel(
            in_channels=3,
            out_channels=1,
            block_out_channels=channels,
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            norm_num_groups=groups,
            class_embed_type="identity",
        )
        self.text_proj = nn.Linear(text_dim, 4 * channels[0])  # to the time-embedding width

    def forward(self, image: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        if text_embeds.shape[0] != b:
            raise ValueError(f"one instruction per image: got {text_embeds.shape[0]} for {b} images")
        pooled = self.text_proj(text_embeds.to(image.dtype).mean(dim=1))  # (B, 4·C0)
        t = torch.zeros(b, device=image.device, dtype=torch.long)
        return self.net(image, t, class_labels=pooled, return_dict=False)[0]  # (B, 1, H, W)

    def composite(self, edited: torch.Tensor, image: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """I_in + α · (edited − I_in), all (B, 3, H, W) in [-1, 1]."""
        alpha = torch.sigmoid(self(image, text_embeds).float()).to(edited.dtype)
        return image + alpha * (edited - image)
