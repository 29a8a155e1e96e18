"""The embedded semantic encoder: masked colour and texture statistics, no weights.

It stands in for DreamSim when no weights are available and is measured for that job on 2AFC
same-material / different-material triplets (`scripts/eval_encoders.py`). The embedding is a
concatenation of weighted blocks, all computed over the masked pixels only:

* colour: masked mean of CIE Lab (L/100, a/100, b/100 scaled) and log standard deviations;
* colour histogram: soft-binned joint (a, b) chroma histogram plus an L histogram (square-rooted,
  so the cosine of two histograms is their Bhattacharyya coefficient); colour statistics are taken
  at half resolution after dividing out a smooth illumination field (see `remove_illumination`);
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


def _lab(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's float sRGB → Lab per frame (one C++ call each; several times faster than `rgb_to_lab`)."""
    import cv2

    arr = x.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2Lab) for f in arr])
    return torch.from_numpy(out).permute(0, 3, 1, 2)


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
_LAB_SCALE = torch.tensor([50.0, 30.0, 30.0])
_LAB_CENTRE = torch.tensor([1.0, 0.0, 0.0])
_IU = torch.triu_indices(6, 6, offset=1)
_RADIUS = 2


@dataclass
class TextureEncoderConfig:
    """Block weights of the texture embedding (defaults picked on 2AFC triplets of seed 1 — 400 triplets,
    a grid over the five weights — and reported on seed 0; see docs/feedback.md).

    w_colour: weight of the Lab mean/std block. w_hist: weight of the chroma/L histograms.
    w_energy: weight of the per-scale log filter energies. w_gram: weight of the filter correlations.
    w_coherence: weight of the per-scale orientation coherence (stripes vs blotches).
    scales: downsampling factors at which the filter bank runs.
    hist_bins: bins per axis of the (a, b) chroma histogram (the L histogram uses the same count).
    delight: divide out a smooth illumination field (a quadratic fit to log-brightness over the
        masked pixels, its mean kept) before the statistics, so a lighting gradient or vignette is not
        read as colour spread.
    """

    w_colour: float = 1.0
    w_hist: float = 1.0
    w_energy: float = 2.0
    w_gram: float = 0.5
    w_coherence: float = 2.0
    scales: tuple[int, ...] = (1, 2, 4)
    hist_bins: int = 8
    delight: bool = True

    def __post_init__(self) -> None:
        self.scales = tuple(int(v) for v in self.scales)  # YAML gives a list
        if min(self.w_colour, self.w_hist, self.w_energy, self.w_gram, self.w_coherence) < 0:
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


def _soft_weights(v: torch.Tensor, lo: float, hi: float, bins: int) -> torch.Tensor:
    """Triangular-kernel bin weights of v `(B, P)` → `(B, P, bins)` (each pixel's weights sum to 1)."""
    centres = torch.linspace(lo, hi, bins)
    width = (hi - lo) / (bins - 1)
    return (1 - (v.clamp(lo, hi)[..., None] - centres).abs() / width).clamp_min(0)


def _histograms(lab: torch.Tensor, m: torch.Tensor, bins: int) -> torch.Tensor:
    """Masked joint (a, b) chroma histogram and L histogram, square-rooted → `(B, bins² + bins)`.

    lab `(B, 3, H, W)`, m `(B, 1, H, W)` (fractional weights allowed).
    """
    b = lab.shape[0]
    flat = lab.reshape(b, 3, -1)  # (B, 3, P)
    wm = m.reshape(b, -1, 1)  # (B, P, 1)
    wa = _soft_weights(flat[:, 1], -60, 60, bins) * wm  # (B, P, bins)
    wb = _soft_weights(flat[:, 2], -60, 60, bins)
    joint = (wa.transpose(1, 2) @ wb).flatten(1)  # (B, bins²): soft joint counts
    hl = (_soft_weights(flat[:, 0], 0, 100, bins) * wm).sum(dim=1)  # (B, bins)
    n = wm.sum(dim=1).clamp_min(1e-8)  # (B, 1)
    return torch.cat([(joint / n).sqrt(), (hl / n).sqrt()], dim=1)


def _quadratic_basis(h: int, w: int) -> torch.Tensor:
    v, u = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack([torch.ones_like(u), u, v, u * u, v * v, u * v]).reshape(6, -1).T  # (HW, 6)


def remove_illumination(x: torch.Tensor, m: torch.Tensor, fit_size: int = 24) -> torch.Tensor:
    """Divide out a smooth multiplicative light field: x `(B, 3, H, W)` in [0, 1], m `(B, 1, H, W)`.

    Fits log(mean RGB) ≈ quadratic in (u, v) over the masked pixels (weighted least squares on a
    `fit_size` grid: the field is smooth) and divides the image by exp(fit − its masked mean):
    gradients and vignetting go, the mean brightness stays.
    """
    b, _, h, w = x.shape
    xs = F.adaptive_avg_pool2d(x.mean(dim=1, keepdim=True), fit_size)  # (B, 1, s, s)
    ms = F.adaptive_avg_pool2d(m, fit_size)
    inside = ms > 0.99  # coarse cells wholly inside the mask
    wgt = torch.where(
        inside.reshape(b, -1).sum(dim=1, keepdim=True) >= 8, inside.reshape(b, -1).float(), ms.reshape(b, -1)
    )
    basis = _quadratic_basis(fit_size, fit_size)
    y = torch.log(xs.reshape(b, -1).clamp_min(1e-3))  # (B, s²)
    a = basis[None] * wgt[..., None]  # (B, s², 6)
    ata = a.transpose(1, 2) @ basis[None] + 1e-3 * torch.eye(6)  # (B, 6, 6); ridge keeps thin masks stable
    coef = torch.linalg.solve(ata, (a * y[..., None]).sum(dim=1))  # (B, 6)
    coef[:, 0] = 0  # keep the overall level; only the shape of the field is removed
    field = (_quadratic_basis(h, w) @ coef.T).T.reshape(b, 1, h, w)  # (B, 1, H, W) log gain
    field = field - (field * m).sum(dim=(2, 3), keepdim=True) / m.sum(dim=(2, 3), keepdim=True).clamp_min(1)
    return (x * torch.exp(-field)).clamp(0, 1)


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
        if cfg.delight:
            x = remove_illumination(x, m)
        lab = _lab(x)  # (B, 3, H, W)
        # colour statistics at half resolution (4x fewer pixels, same statistics of a smooth colour field)
        lab2, m2 = F.avg_pool2d(lab, 2, ceil_mode=True), F.avg_pool2d(m, 2, ceil_mode=True)
        m2 = torch.where(m2.sum(dim=(1, 2, 3), keepdim=True) >= 1, (m2 > 0.99).float(), m2)
        m2 = torch.where(m2.sum(dim=(1, 2, 3), keepdim=True) >= 1, m2, F.avg_pool2d(m, 2, ceil_mode=True))
        mean, std = _masked_moments(lab2, m2)
        colour = torch.cat([mean / _LAB_SCALE - _LAB_CENTRE, torch.log(std + 1.0) - 1.5], dim=1)

        hist = _histograms(lab2, m2, cfg.hist_bins)
        hist = hist - hist.mean(dim=1, keepdim=True)  # centre so that cosine sees shape, not mass

        energies, grams, cohs = [], [], []
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
            grams.append(corr[:, _IU[0], _IU[1]])
            cg = F.conv2d(cs.reshape(-1, 1, *cs.shape[2:]), _BANK[:2].to(cs), padding=_RADIUS)
            cg = (cg**2).reshape(len(cs), 4, *cs.shape[2:])  # (B, 4, h, w): d/dx, d/dy of a and b
            cen = (cg * inner).sum(dim=(2, 3)) / n  # (B, 4)
            # orientation coherence of the gradient structure tensor: 1 for stripes (wood grain, weave),
            # 0 for isotropic blotches (noise, marble clouds); invariant to the pattern's angle
            exx, eyy, exy = gram[:, 0, 0], gram[:, 1, 1], gram[:, 0, 1]
            coherence = ((exx - eyy) ** 2 + 4 * exy**2).sqrt() / (exx + eyy).clamp_min(1e-10)
            cohs.append(coherence[:, None] * 2 - 1)
            energies.append(0.5 * torch.log(diag + 1e-8) + 6.0)
            energies.append(0.5 * torch.log(cen.reshape(-1, 2, 2).sum(dim=2) + 1e-8) + 6.0)
        energy = torch.cat(energies, dim=1) / 4.0
        coh = torch.cat(cohs, dim=1)
        gram = torch.cat(grams, dim=1)

        bias = torch.ones(len(x), 1)
        blocks = [
            cfg.w_colour * colour,
            cfg.w_hist * _unit(hist),
            cfg.w_energy * energy,
            cfg.w_gram * gram,
            cfg.w_coherence * coh,
            bias,
        ]
        return torch.cat(blocks, dim=1).float()
