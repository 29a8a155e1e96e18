"""The visual prompt: a widened `conv_in` and the cross-attention pre-conv style module (SPIE, sec. 3.3).

InstructPix2Pix feeds `concat(z_t, E(I_in))` (2C channels) to the UNet. The specialist adds C more
channels for the style image. They do not carry `E(I_sty)` itself but the output of a small
cross-attention module run *before* the UNet:

    query  = W_q · concat(E(I_in), E(I_sty))   per latent position     (B, h·w, inner)
    key    = W_k · text_hidden_states,  value = W_v · text_hidden_states  (B, L, inner)
    style  = W_o · attention(query, key, value)  ->  (B, C, h, w)

With the new `conv_in` weights zero, a freshly widened model predicts exactly what the base model
predicts, whatever the style image: training starts from the pretrained editor.

Why `W_o` is NOT zero by default (a measured trap, see tests): if both the new `conv_in` weights
W_c and `W_o` start at zero, the UNet sees W_c·(W_o·a) and both gradients vanish
(dL/dW_c ∝ W_o·a = 0, dL/dW_o ∝ W_cᵀ·… = 0): the visual prompt can never be learned. One zero
factor is enough for the identity at initialisation; like SPIE's released code we zero W_c (the
paper's "weights on the new input channels are zero") and give `W_o` a small random init.
`zero_init_output=True` gives the doubly-zero variant (identity too, but frozen at zero).
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from torch import nn


def widen_conv_in(unet: UNet2DConditionModel, extra_channels: int) -> UNet2DConditionModel:
    """Add `extra_channels` zero-initialised input channels to `unet.conv_in`, in place.

    The pretrained weights *and bias* are copied, so the widened UNet computes the same function of
    the old channels; `unet.config.in_channels` is updated so `save_pretrained` round-trips.
    """
    if extra_channels <= 0:
        raise ValueError(f"extra_channels must be positive; got {extra_channels=}")
    old = unet.conv_in
    new = nn.Conv2d(
        old.in_channels + extra_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    ).to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        if old.bias is not None:
            new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=new.in_channels)
    return unet


class StyleModule(ModelMixin, ConfigMixin):
    """Cross-attention pre-conv: `(E(I_in), E(I_sty), text) -> style features (B, C, h, w)`.

    Args:
        latent_channels: C, channels of one codec latent (the output has C channels).
        text_dim: width of the text encoder's hidden states (key/value input).
        inner_dim: attention width (SPIE uses 320 for Stable Diffusion).
        num_heads: attention heads; `inner_dim` must be a multiple of it.
        zero_init_output: start `to_out` at zero (see the module docstring: untrainable together
            with a zeroed `conv_in`; only for ablations).
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,
        text_dim: int = 768,
        inner_dim: int = 320,
        num_heads: int = 8,
        zero_init_output: bool = False,
    ):
        super().__init__()
        if inner_dim % num_heads:
            raise ValueError(f"inner_dim must be a multiple of num_heads; got {inner_dim=}, {num_heads=}")
        self.to_q = nn.Linear(2 * latent_channels, inner_dim, bias=False)
        self.to_k = nn.Linear(text_dim, inner_dim, bias=False)
        self.to_v = nn.Linear(text_dim, inner_dim, bias=False)
        self.to_out = nn.Linear(inner_dim, latent_channels, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.to_out.weight)

    def forward(
        self, image_latents: torch.Tensor, style_latents: torch.Tensor, text_embeds: torch.Tensor
    ) -> torch.Tensor:
        b, c, h, w = image_latents.shape
        heads = self.config.num_heads
        x = torch.cat([image_latents, style_latents], dim=1)  # (B, 2C, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, h·w, 2C)
        q = self.to_q(x).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, h·w, d)
        k = self.to_k(text_embeds).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, L, d)
        v = self.to_v(text_embeds).unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, heads, L, d)
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, h·w, d)
        out = self.to_out(out.transpose(1, 2).flatten(2))  # (B, h·w, C)
        return out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, h, w)
