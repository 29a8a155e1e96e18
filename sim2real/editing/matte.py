"""`EditMatte`: where may the instruction change the picture, and what mean colour do its words name?

Measured on held-out pairs (docs/base_editor.md), the tiny editor's colour was right on ~62% of
pairs but only ~40% of pairs were edit successes: the 8×8-patch UNet bleeds the new look onto the
objects the instruction does not name (the agent disk, the goal, the T in a table edit), so the PSNR
outside the edit fails. Deciding *which pixels* an instruction is about is a segmentation problem of
the input frame — "the table", "the T-shaped block", or both — that needs neither the noise nor the
new look. So the matte is a separate small model, trained with its own loss (`sim2real pretrain-matte`:
per-pixel cross-entropy against the exact edit regions the simulator gives), applied once, after
decoding:

    α_table, α_T = sigmoid(matte(I_in, instruction))          (B, 2, H, W): the parts the words touch
    α = min(α_table + α_T, 1)
    I_out = I_in + α · (D(z) − I_in)                           α = 0 keeps the input pixel exactly

Colour calibration (optional, `calibrate=True`): guided sampling tends to over-saturate, and the mean
colour of a part is what "make the table dark blue" pins down. A small head reads the instruction and
predicts, per part, the mean CIE Lab colour of the renderings those words were said of (trained by
MSE on the pair generator's targets). Each edited part's Lab mean is moved onto it, its texture kept:

    lab += Σ_k α_k · (c_k − mean_{α_k > ½}(lab))

(the mean over the pixels that are mostly part k: with a matte that gives rim pixels their share,
the part's own pixels reach c_k and a rim pixel moves by its share).

With `colour_from_input=True` the head also reads what the input frame already looks like where the
matte says each part is (its α-weighted mean Lab and α's area per part): "make the table dark blue"
said of a table that is already bluish names a different colour than said of a white one, and the
lighting the input shows carries into the target. `sim2real pretrain-matte colour_loss=criterion`
trains it for the edit-success criterion directly (docs/base_editor.md, stage 6).

Rims (`rim_transfer=True`): a pixel on an anti-aliased rim — the agent disk's or the goal's edge, a
pixel the camera blur reaches — is share · part + (1 − share) · other, so an edit changes it by
share · (the part's change). The decode there is unreliable (the UNet sees the other object), so such
a pixel takes its share of the change of the part's own pixels nearby (`transfer_rims`).

The pipeline calibrates only when there is no visual prompt: with reference frames, their look — not
the words — says what the colour should be.

The network is diffusers' `UNet2DModel` (no attention), with the instruction — the token-mean of the
editor's text encoder hidden states, projected — added to its time embedding
(`class_embed_type="identity"`); the timestep is always 0. The matte never sees the target or the
masks at inference: only what the editor sees.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F

PARTS = ("table", "t")  # matte channels / colour-head rows; pair labels 0 and 1
LAB_SCALE = 100.0  # the colour head predicts Lab / 100
COLOUR_FEATURES = 4 * len(PARTS)  # per part: the input's α-weighted mean Lab / 100 and α's area


class EditMatte(ModelMixin, ConfigMixin):
    """Per-part edit logits (B, 2, H, W) from input images (B, 3, H, W) in [-1, 1] and text (B, L, D)."""

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = (8, 16, 32, 32),
        text_dim: int = 64,
        groups: int = 0,
        colour_from_input: bool = False,
        rim_transfer: bool = False,
    ):
        super().__init__()
        channels = tuple(channels)
        groups = groups or min(8, min(channels) // 2)  # group norm: at least 2 channels per group
        self.net = UNet2DModel(
            in_channels=3,
            out_channels=len(PARTS),
            block_out_channels=channels,
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            norm_num_groups=groups,
            class_embed_type="identity",
        )
        self.text_proj = nn.Linear(text_dim, 4 * channels[0])  # to the time-embedding width
        self.colour_head = nn.Sequential(
            nn.Linear(text_dim + (COLOUR_FEATURES if colour_from_input else 0), 128),
            nn.SiLU(),
            nn.Linear(128, 128),
            nn.SiLU(),
            nn.Linear(128, 3 * len(PARTS)),
        )

    @staticmethod
    def _pool(text_embeds: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return text_embeds.to(dtype).mean(dim=1)  # (B, D), padding tokens included

    def forward(self, image: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        b = image.shape[0]
        if text_embeds.shape[0] != b:
            raise ValueError(f"one instruction per image: got {text_embeds.shape[0]} for {b} images")
        pooled = self.text_proj(self._pool(text_embeds, image.dtype))  # (B, 4·C0)
        t = torch.zeros(b, device=image.device, dtype=torch.long)
        return self.net(image, t, class_labels=pooled, return_dict=False)[0]  # (B, 2, H, W)

    def colours(
        self,
        text_embeds: torch.Tensor,
        image: torch.Tensor | None = None,
        parts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The mean Lab colour (L in 0–100) the words name for each part → (B, 2, 3).

        With `colour_from_input`, the head also reads `image` (B, 3, H, W) in [-1, 1] where the
        per-part matte `parts` (B, 2, H, W) in [0, 1] says each part is (computed if not given).
        """
        pooled = self._pool(text_embeds, self.colour_head[0].weight.dtype)
        if self.config.colour_from_input:
            if image is None:
                raise ValueError("this colour head reads the input frame: pass image=")
            if parts is None:
                parts = torch.sigmoid(self(image, text_embeds).float())
            pooled = torch.cat([pooled, colour_features(image, parts).to(pooled.dtype)], dim=1)
        return self.colour_head(pooled).view(-1, len(PARTS), 3) * LAB_SCALE

    def composite(
        self,
        edited: torch.Tensor,
        image: torch.Tensor,
        text_embeds: torch.Tensor,
        calibrate: bool = False,
        parts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """I_in + α · (edited − I_in), then (calibrate) each part's mean colour onto the head's; all
        (B, 3, H, W) in [-1, 1]. `parts` (B, 2, H, W) in [0, 1]: per-part shares to use instead of the
        matte's own (e.g. the exact ones, for what a perfect matte would do)."""
        if parts is None:
            parts = torch.sigmoid(self(image, text_embeds).float())  # (B, 2, H, W)
        parts = parts.float()
        alpha = parts.sum(dim=1, keepdim=True).clamp(max=1.0)
        image = image.float()
        out = image + alpha * (edited.float() - image)
        if calibrate:
            lab = rgb_to_lab((out + 1) / 2)  # (B, 3, H, W)
            target = self.colours(text_embeds, image, parts).float()  # (B, 2, 3)
            for k in range(len(PARTS)):
                w = parts[:, k : k + 1]  # (B, 1, H, W)
                # the part's mean over the pixels that are mostly it (rims only partly shift)
                inner = (w > 0.5).to(w.dtype)
                inner = torch.where(inner.sum((2, 3), keepdim=True) > 0, inner, w)
                mean = (lab * inner).sum((2, 3)) / inner.sum((2, 3)).clamp(min=1e-6)  # (B, 3)
                lab = lab + w * (target[:, k] - mean)[:, :, None, None]
            out = (lab_to_rgb(lab) * 2 - 1).clamp(-1, 1)
        if self.config.rim_transfer:
            out = transfer_rims(out, image, parts)
        return out.clamp(-1, 1).to(edited.dtype)


def transfer_rims(
    out: torch.Tensor, image: torch.Tensor, parts: torch.Tensor, radius: int = 2
) -> torch.Tensor:
    """Rim pixels change by their share of each part's change nearby (all (B, ·, H, W), [-1, 1]).

    A rim pixel (no part above ½, some share) mixes an edited part with what is not edited — the
    agent disk's or the goal's anti-aliased edge, a pixel the camera blur reaches. Rendered, it is
    share · part + (1 − share) · other, so an edit changes it by share · (the part's change). The
    decode there is unreliable (the UNet sees the other object), so the part's change is read from
    its own pixels (α_k > ½) within `radius` px instead:

        out_rim = I_in + Σ_k α_k · mean_{|y−x|∞ ≤ r, α_k(y) > ½}(out(y) − I_in(y))

    A share of a part with none of its own pixels that near is a stray of the matte and moves nothing.
    """
    k = 2 * radius + 1

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (radius,) * 4, mode="replicate"), k, stride=1)

    parts = parts.float()
    inner = (parts > 0.5).float()  # (B, 2, H, W)
    change = out.float() - image.float()
    moved = torch.zeros_like(change)
    for j in range(parts.shape[1]):
        own = inner[:, j : j + 1]
        den = box(own)
        near = box(change * own) / den.clamp(min=1e-6)
        moved = moved + parts[:, j : j + 1] * torch.where(den > 0, near, torch.zeros_like(near))
    rim = (inner.sum(1, keepdim=True) == 0) & (parts.sum(1, keepdim=True) > 0.02)
    return torch.where(rim, image.float() + moved, out)


def colour_features(image: torch.Tensor, parts: torch.Tensor) -> torch.Tensor:
    """What the input looks like per part: the `parts`-weighted (B, 2, H, W) mean Lab / 100 of
    `image` (B, 3, H, W) in [-1, 1] and each part's mean α → (B, 4·2)."""
    lab = rgb_to_lab((image.float() + 1) / 2) / LAB_SCALE  # (B, 3, H, W)
    w = parts.float()
    mass = w.sum((2, 3))  # (B, 2)
    mean = torch.einsum("bkhw,bchw->bkc", w, lab) / mass.clamp(min=1e-6)[..., None]  # (B, 2, 3)
    return torch.cat([mean.flatten(1), w.mean((2, 3))], dim=1)


# ------------------------------------------------------------------------------ sRGB <-> CIE Lab (D65)
_M = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])  # OpenCV's D65 white: Lab matches cv2.COLOR_RGB2LAB


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] (B, 3, H, W) → Lab (L 0–100, a/b about ±128), as OpenCV's float conversion."""
    rgb = rgb.clamp(0, 1)
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _M.to(rgb), lin) / _WHITE.to(rgb)[None, :, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp(min=1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab (B, 3, H, W) → sRGB in [0, 1] (out-of-gamut colours clipped)."""
    fy = (lab[:, 0] + 16) / 116
    f = torch.stack([fy + lab[:, 1] / 500, fy, fy - lab[:, 2] / 200], dim=1)
    xyz = torch.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787) * _WHITE.to(lab)[None, :, None, None]
    lin = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_M).to(lab), xyz).clamp(0, 1)
    return torch.where(lin > 0.0031308, 1.055 * lin.clamp(min=1e-12) ** (1 / 2.4) - 0.055, 12.92 * lin)
