"""Image I/O at the editor's boundary: uint8 NumPy / PIL in, model tensors (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sim2real.errors import Sim2RealError

ImageInput = (
    Any  # np.ndarray (B,H,W,3)/(H,W,3) uint8 | PIL.Image | list[PIL.Image | np.ndarray] | torch.Tensor
)


def to_model_images(images: ImageInput, name: str = "image") -> torch.Tensor:
    """Convert `images` to a float tensor (B, 3, H, W) in [-1, 1].

    Accepts uint8 RGB NumPy arrays (B, H, W, 3) or (H, W, 3), a PIL image or a list of them, or a
    float tensor (B, 3, H, W) already in [-1, 1] (what trainers hold). Anything else, including
    grey or RGBA images, raises `Sim2RealError` naming `name`.
    """
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise Sim2RealError(
                f"{name}: a tensor must be float (B, 3, H, W) in [-1, 1]; got {tuple(images.shape)}"
            )
        return images
    if isinstance(images, (list, tuple)):
        if not images:
            raise Sim2RealError(f"{name}: got an empty list of images")
        arrays = [_one_array(im, f"{name}[{i}]") for i, im in enumerate(images)]
        if len({a.shape for a in arrays}) > 1:
            raise Sim2RealError(f"{name}: images differ in size: {sorted({a.shape for a in arrays})}")
        array = np.stack(arrays)
    else:
        array = _one_array(images, name, allow_batch=True)
        if array.ndim == 3:
            array = array[None]
    x = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return x / 127.5 - 1.0


def _one_array(image: Any, name: str, allow_batch: bool = False) -> np.ndarray:
    if hasattr(image, "mode") and hasattr(image, "size"):  # PIL.Image
        if image.mode != "RGB":
            raise Sim2RealError(
                f"{name}: expected an RGB image; got PIL mode {image.mode!r} (convert('RGB') it)"
            )
        return np.asarray(image)
    if not isinstance(image, np.ndarray):
        raise Sim2RealError(f"{name}: expected uint8 NumPy arrays or PIL images; got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise Sim2RealError(f"{name}: expected dtype uint8 (0-255); got {image.dtype}")
    ok = image.ndim == 3 or (allow_batch and image.ndim == 4)
    if not ok or image.shape[-1] != 3:
        raise Sim2RealError(f"{name}: expected RGB (…, H, W, 3); got shape {image.shape}")
    return image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 NumPy (B, H, W, 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
