"""Classifier-free guidance with two or three conditions, and conditioning dropout for training.

Notation: ε(image, style, text) is the model output with each condition present or null (∅).
Null image = zero latents, null style = zero style features, null text = the embedding of "".

    three-way (SPIE):  ε = ε(∅,∅,∅) + s_in·(ε(in,∅,∅) − ε(∅,∅,∅)) + s_sty·(ε(in,sty,∅) − ε(in,∅,∅))
                           + s_T·(ε(in,sty,T) − ε(in,sty,∅))
    two-way (InstructPix2Pix):  ε = ε(∅,∅) + s_in·(ε(in,∅) − ε(∅,∅)) + s_T·(ε(in,T) − ε(in,∅))

The same formulas apply to whatever the model predicts (noise, clean sample or v).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class GuidanceScales:
    """Guidance weights (SPIE's defaults).

    Args:
        text: s_T, pull towards the instruction (InstructPix2Pix's `guidance_scale`).
        image: s_in, pull towards the input image (`image_guidance_scale`).
        style: s_sty, pull towards the visual prompt (`style_guidance_scale`); unused without style.
    """

    text: float = 7.5
    image: float = 1.5
    style: float = 3.0


def three_way_guidance(
    out_full: torch.Tensor,
    out_image: torch.Tensor,
    out_uncond: torch.Tensor,
    out_image_style: torch.Tensor,
    scales: GuidanceScales,
) -> torch.Tensor:
    """Combine ε(in,sty,T), ε(in,∅,∅), ε(∅,∅,∅), ε(in,sty,∅) with SPIE's three-way formula."""
    return (
        out_uncond
        + scales.image * (out_image - out_uncond)
        + scales.style * (out_image_style - out_image)
        + scales.text * (out_full - out_image_style)
    )


def two_way_guidance(
    out_full: torch.Tensor, out_image: torch.Tensor, out_uncond: torch.Tensor, scales: GuidanceScales
) -> torch.Tensor:
    """Combine ε(in,T), ε(in,∅), ε(∅,∅) with InstructPix2Pix's formula (`scales.style` unused)."""
    return out_uncond + scales.image * (out_image - out_uncond) + scales.text * (out_full - out_image)


@dataclass
class DroppedConditions:
    """Conditions after dropout: null image latents are zeros, null text is `uncond_embeds`.

    `style_keep` (B,) float is 1 where the style condition stays and 0 where it is dropped; the
    model multiplies the style features by it (zero features = the null style).
    """

    image_latents: torch.Tensor  # (B, C, h, w)
    text_embeds: torch.Tensor  # (B, L, D)
    style_keep: torch.Tensor  # (B,)


def conditioning_dropout(
    image_latents: torch.Tensor,
    text_embeds: torch.Tensor,
    uncond_embeds: torch.Tensor,
    p: float = 0.05,
    generator: torch.Generator | None = None,
) -> DroppedConditions:
    """InstructPix2Pix-style dropout extended to three conditions, `p` per pattern (5% each).

    One uniform draw u per example picks a pattern, so every model output the guidance needs is
    trained (u < p: drop text -> (in,sty,∅); p ≤ u < 2p: drop text and style -> (in,∅,∅);
    2p ≤ u < 3p: drop all -> (∅,∅,∅); 3p ≤ u < 4p: drop style -> (in,∅,T), the two-way branch).
    """
    if not 0.0 <= p <= 0.25:
        raise ValueError(f"p must be in [0, 0.25] (four patterns of probability p); got {p=}")
    b = image_latents.shape[0]
    u = torch.rand(b, generator=generator, device="cpu").to(image_latents.device)  # (B,)
    drop_text = u < 3 * p
    drop_style = (u >= p) & (u < 4 * p)
    drop_image = (u >= 2 * p) & (u < 3 * p)
    text = torch.where(drop_text[:, None, None], uncond_embeds, text_embeds)  # (B, L, D)
    image = image_latents * (~drop_image).to(image_latents.dtype)[:, None, None, None]  # (B, C, h, w)
    return DroppedConditions(image, text, (~drop_style).to(image_latents.dtype))
