"""The embedded semantic encoder: masked colour and texture statistics, no weights.

It stands in for DreamSim when no weights are available and is measured for that job on 2AFC
same-material / different-material triplets (`scripts/eval_encoders.py`). The embedding is a
concatenation of weighted blocks, all computed over the masked pixels only:

* colour: masked mean of CIE Lab (L/100, a/100, b/100 scaled) and log standard deviations;
* colour histogram: soft-binned joint (a, b) chroma histogram plus an L histogram (square-rooted,
  so the cosine of two histograms is their Bhattacharyya coefficient);
* texture: at three scales (1, 2, 4 px), a fixed filter bank on L (x/y derivatives, the three second
  derivatives, a centre-surround) → log energies and the normalised Gram matrix (correlations) of the
  responses — Gatys-style texture statistics without a learned network — plus chroma gradient energy.

Texture responses are taken only where the filter support lies wholly inside the mask (the mask is
eroded by the filter radius), so the outline of the T-block or the frame border does not read as
texture. Every block is centred on fixed constants and scaled to about unit range, and a constant
coordinate is appended, so that 1 − cosine between two embeddings behaves like a weighted squared
distance between the statistics (a pure cosine of all-positive statistics would see only ratios).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.feedback._checks import as_images, as_masks, same_batch

# sRGB (D65) → XYZ, then Lab against the D65 white point.
_RGB2XYZ = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]
)
_WHITE = torch.tensor([0.950456, 1.0, 1.088754])


def rgb_to_lab(x: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] `(B, 3, H, W)` → CIE Lab `(B, 3, H, W)` (L 0–100, a/b about −100..100)."""
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _RGB2XYZ.to(x), lin) / _WHITE.to(x)[None, :, None, None]
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    L = 116 * f[:, 1] - 16
    a = 500 * (f[:, 0] - f[:, 1])
    b = 200 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], dim=1)


def _filter_bank() -> torch.Tensor:
    """Six 5x5 filters `(6, 1, 5, 5)`: Gaussian derivatives (σ=1) d/dx, d/dy, d²/dx², d²/dy², d²/dxdy, DoG."""
    r = torch.arange(-2, 3, dtype=torch.float32)
    y, x = torch.meshgrid(r, r, indexing="ij")
    g = torch.exp(-(x**2 + y**2) / 2)
    g = g / g.sum()
    g2 = torch.exp(-(x**2 + y**2) / (2 * 2.0**2))
    g2 = g2 / g2.sum()
    filters = [-x * g, -y * g, (x**2 - 1) * g, (y**2 - 1) * g, x * y * g, g - g2]
    bank = torch.stack([f - f.mean() for f in filters])  # zero DC: flat regions give no response
    bank = bank / bank.abs().sum(dim=(1, 2), keepdim=True)
    return bank[:, None]


_BANK = _filter_bank()
_RADIUS = 2


@dataclass
class TextureEncoderConfig:
    """Block weights of the texture embedding (defaults tuned on the 2AFC triplets; see docs/feedback.md).

    w_colour: weight of the Lab mean/std block. w_hist: weight of the chroma/L histograms.
    w_energy: weight of the per-scale log filter energies. w_gram: weight of the filter correlations.
    scales: downsampling factors at which the filter bank runs.
    hist_bins: bins per axis of the (a, b) chroma histogram (the L histogram uses the same count).
    """

    w_colour: float = 1.0
    w_hist: float = 1.0
    w_energy: float = 1.0
    w_gram: float = 0.5
    scales: tuple[int, ...] = (1, 2, 4)
    hist_bins: int = 8

    def __post_init__(self) -> None:
        if min(self.w_colour, self.w_hist, self.w_energy, self.w_gram) < 0:
            raise ValueError("texture encoder weights must be >= 0")
        if not self.scales or min(self.scales) < 1:
            raise ValueError(f"scales must be positive downsampling factors; got {self.scales=}")
        if self.hist_bins < 2:
            raise ValueError(f"hist_bins must be >= 2; got {self.hist_bins=}")


def _masked_moments(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over masked pixels: x `(B, C, H, W)`, m `(B, 1, H, W)` float → `(B, C)` each."""
    n = m.sum(dim=(2, 3)).clamp_min(1.0)
    mean = (x * m).sum(dim=(2, 3)) / n
    var = ((x - mean[..., None, None]) ** 2 * m).sum(dim=(2, 3)) / n
    return mean, var.clamp_min(0).sqrt()


def _soft_hist(v: torch.Tensor, m: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Masked soft histogram (triangular kernel) of v `(B, H, W)` → `(B, bins)` summing to 1."""
    centres = torch.linspace(lo, hi, bins, device=v.device)
    width = (hi - lo) / (bins - 1)
    w = (1 - (v[..., None] - centres).abs() / width).clamp_min(0)  # (B, H, W, bins)
    h = (w * m[..., None]).sum(dim=(1, 2))
    return h / h.sum(dim=1, keepdim=True).clamp_min(1e-8)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-8)


class TextureEncoder:
    """`embed(images, masks) -> (B, D)` float32 NumPy; masked statistics only, no weights."""

    name = "texture"

    def __init__(self, cfg: TextureEncoderConfig | None = None):
        self.cfg = cfg or TextureEncoderConfig()

    @torch.no_grad()
    def embed(self, images, masks) -> np.ndarray:
        x = as_images(images, "images")
        m = as_masks(masks, "masks")
        same_batch(x, m, "images vs masks")
        xt = torch.from_numpy(x).permute(0, 3, 1, 2)  # (B, 3, H, W) in [0, 1]
        mt = torch.from_numpy(m)[:, None].float()  # (B, 1, H, W)
        return self.embed_tensor(xt, mt).numpy()

    def embed_tensor(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x `(B, 3, H, W)` in [0, 1], m `(B, 1, H, W)` float {0, 1} → `(B, D)`."""
        cfg = self.cfg
        lab = rgb_to_lab(x)  # (B, 3, H, W)
        mean, std = _masked_moments(lab, m)
        colour = torch.cat(
            [mean / torch.tensor([50.0, 30.0, 30.0]) - torch.tensor([1.0, 0, 0]), torch.log(std + 1.0) - 1.5],
            dim=1,
        )

        bins = cfg.hist_bins
        hab = (
            _soft_hist(lab[:, 1], m[:, 0], -60, 60, bins)[:, :, None]
            * _soft_hist(lab[:, 2], m[:, 0], -60, 60, bins)[:, None]
        )
        hl = _soft_hist(lab[:, 0], m[:, 0], 0, 100, bins)
        hist = torch.cat([hab.flatten(1).sqrt(), hl.sqrt()], dim=1)
        hist = hist - hist.mean(dim=1, keepdim=True)  # centre so that cosine sees shape, not mass

        energies, grams = [], []
        lum = lab[:, :1] / 100.0  # (B, 1, H, W)
        chroma = lab[:, 1:] / 100.0  # (B, 2, H, W)
        for s in cfg.scales:
            ls, cs, ms = lum, chroma, m
            if s > 1:
                ls, cs = F.avg_pool2d(lum, s), F.avg_pool2d(chroma, s)
                ms = -F.max_pool2d(-m, s)  # a coarse pixel counts only if wholly inside the mask
            inner = -F.max_pool2d(
                -ms, 2 * _RADIUS + 1, stride=1, padding=_RADIUS
            )  # eroded by the filter radius
            if (inner.sum(dim=(1, 2, 3)) < 4).any():  # region too thin at this scale: fall back to the mask
                inner = torch.where(inner.sum(dim=(1, 2, 3), keepdim=True) < 4, ms, inner)
            r = F.conv2d(ls, _BANK.to(ls), padding=_RADIUS)  # (B, 6, h, w)
            n = inner.sum(dim=(2, 3)).clamp_min(1.0)  # (B, 1)
            gram = torch.einsum("bihw,bjhw->bij", r * inner, r) / n[..., None]  # (B, 6, 6)
            diag = torch.diagonal(gram, dim1=1, dim2=2).clamp_min(1e-10)  # (B, 6)
            corr = gram / (diag[:, :, None] * diag[:, None, :]).sqrt()
            iu = torch.triu_indices(6, 6, offset=1)
            grams.append(corr[:, iu[0], iu[1]])
            cg = F.conv2d(cs.reshape(-1, 1, *cs.shape[2:]), _BANK[:2].to(cs), padding=_RADIUS)
            cg = (cg**2).reshape(len(cs), 4, *cs.shape[2:])  # (B, 4, h, w): d/dx, d/dy of a and b
            cen = (cg * inner).sum(dim=(2, 3)) / n  # (B, 4)
            energies.append(0.5 * torch.log(diag + 1e-8) + 6.0)
            energies.append(0.5 * torch.log(cen.reshape(-1, 2, 2).sum(dim=2) + 1e-8) + 6.0)
        energy = torch.cat(energies, dim=1) / 4.0
        gram = torch.cat(grams, dim=1)

        bias = torch.ones(len(x), 1)
        blocks = [
            cfg.w_colour * colour,
            cfg.w_hist * _unit(hist),
            cfg.w_energy * energy,
            cfg.w_gram * gram,
            bias,
        ]
        return torch.cat(blocks, dim=1).float()
