"""Image codecs: the map between RGB images in [-1, 1] and the latents the UNet diffuses.

Two codecs share one interface, so the pipeline never asks which one it holds:

    codec.encode(x)   (B, 3, H, W) in [-1, 1]  ->  (B, C, H/f, W/f)   deterministic (posterior mode)
    codec.decode(z)   (B, C, H/f, W/f)        ->  (B, 3, H, W)
    codec.latent_channels  C          codec.factor  f          codec.scaling_factor  s

* `PixelUnshuffleCodec(f)`: lossless space-to-depth (96x96x3 -> 24x24x48 for f=4, 12x12x192 for f=8).
  No weights, no training, exact reconstruction; the UNet's first conv does the mixing.
* `KLCodec`: a diffusers `AutoencoderKL` (the Stable Diffusion VAE for `sd15`, or a tiny one).

As in InstructPix2Pix, `encode` returns *unscaled* latents (the input-image condition is fed
unscaled); the diffused target latent is `encode(x) * scaling_factor`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from torch import nn

CODEC_CONFIG = "codec_config.json"


class PixelUnshuffleCodec(nn.Module):
    """Lossless space-to-depth codec: `encode = pixel_unshuffle(x, f)`, `decode = pixel_shuffle(z, f)`."""

    def __init__(self, factor: int = 8):
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1; got {factor=}")
        self.factor = factor
        self.latent_channels = 3 * factor * factor
        self.scaling_factor = 1.0  # pixels in [-1, 1] already have unit-ish scale

    @property
    def config(self) -> dict:
        return {"_class_name": type(self).__name__, "factor": self.factor}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_unshuffle(x, self.factor)  # (B, 3f², H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(z, self.factor)  # (B, 3, H, W)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CODEC_CONFIG).write_text(json.dumps(self.config, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> PixelUnshuffleCodec:
        cfg = json.loads((Path(folder) / CODEC_CONFIG).read_text())
        return cls(factor=int(cfg["factor"]))


class KLCodec(nn.Module):
    """A diffusers `AutoencoderKL` behind the codec interface (encode = posterior mode, unscaled)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self.scaling_factor = float(vae.config.scaling_factor)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mode()  # (B, C, H/f, W/f)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample  # (B, 3, H, W)

    def save_pretrained(self, folder: str | Path) -> None:
        self.vae.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> KLCodec:
        return cls(AutoencoderKL.from_pretrained(folder))


def tiny_autoencoder_kl(latent_channels: int = 4, factor: int = 4) -> AutoencoderKL:
    """A small `AutoencoderKL` (about 1 M parameters at f=4) for the tiny preset, untrained."""
    n_levels = {2: 2, 4: 3, 8: 4}.get(factor)
    if n_levels is None:
        raise ValueError(f"factor must be 2, 4 or 8; got {factor=}")
    widths = (32, 64, 64, 64)[:n_levels]
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n_levels,
        up_block_types=("UpDecoderBlock2D",) * n_levels,
        block_out_channels=widths,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=96,
        scaling_factor=1.0,
    )


def load_codec(folder: str | Path) -> PixelUnshuffleCodec | KLCodec:
    """Load the codec saved under `folder/codec` (pixel unshuffle) or `folder/vae` (AutoencoderKL)."""
    folder = Path(folder)
    if (folder / "codec" / CODEC_CONFIG).exists():
        return PixelUnshuffleCodec.from_pretrained(folder / "codec")
    return KLCodec.from_pretrained(folder / "vae")


def save_codec(codec: PixelUnshuffleCodec | KLCodec, folder: str | Path) -> None:
    """Write `codec` to `folder/codec` or `folder/vae` (the diffusers name for an AutoencoderKL)."""
    sub = "codec" if isinstance(codec, PixelUnshuffleCodec) else "vae"
    codec.save_pretrained(Path(folder) / sub)
