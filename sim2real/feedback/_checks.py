"""Input checks shared by the feedback scores: one-line `Sim2RealError`s for the mistakes people make.

Images crossing the feedback boundary are uint8 `(B, H, W, 3)` RGB (a single `(H, W, 3)` image is
promoted to a batch of one). Float arrays in [0, 1] are accepted too (an editor's output before
quantisation); they are checked for NaN/inf and range. Region masks are bool `(B, H, W)`; label maps
are uint8 `(B, H, W)` with values 0..3.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim2real.errors import Sim2RealError

N_LABELS = 4  # 0 background, 1 T-block, 2 agent, 3 goal marker


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise Sim2RealError(f"{name} must be a NumPy array (or torch tensor); got {type(x).__name__}")
    return x


def as_images(x: Any, name: str = "images") -> np.ndarray:
    """Validate images and return float32 `(B, H, W, 3)` in [0, 1]."""
    x = _to_numpy(x, name)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise Sim2RealError(f"{name} must be RGB (B, H, W, 3) channels-last; got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise Sim2RealError(f"{name} is empty; got shape {tuple(x.shape)}")
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise Sim2RealError(f"{name} contains NaN or inf values")
        if x.min() < -1e-3 or x.max() > 1 + 1e-3:
            raise Sim2RealError(
                f"float {name} must lie in [0, 1]; got range [{x.min():.3g}, {x.max():.3g}] "
                "(pass uint8 RGB, or map [-1, 1] model output with (x + 1) / 2)"
            )
        return np.clip(x, 0.0, 1.0).astype(np.float32)
    raise Sim2RealError(f"{name} must be uint8 RGB or float in [0, 1]; got dtype {x.dtype}")


def as_uint8_images(x: Any, name: str = "images") -> np.ndarray:
    """Validate images and return uint8 `(B, H, W, 3)` (OpenCV wants 8-bit input)."""
    raw = _to_numpy(x, name)
    if raw.dtype == np.uint8:
        as_images(raw, name)  # shape checks only; cheap
        return raw if raw.ndim == 4 else raw[None]
    return np.round(as_images(raw, name) * 255.0).astype(np.uint8)


def as_masks(m: Any, name: str = "masks", allow_empty: bool = False) -> np.ndarray:
    """Validate region masks and return bool `(B, H, W)`; an empty mask is an error by default."""
    m = _to_numpy(m, name)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise Sim2RealError(f"{name} must be (B, H, W); got shape {tuple(m.shape)}")
    if m.dtype != np.bool_:
        if np.issubdtype(m.dtype, np.floating) and not np.isfinite(m).all():
            raise Sim2RealError(f"{name} contains NaN or inf values")
        values = np.unique(m)
        if not np.isin(values, (0, 1)).all():
            raise Sim2RealError(
                f"{name} must be bool (or 0/1); got values {values[:6].tolist()} — "
                "for label maps use sim2real.feedback.masks.region_mask(labels, edit)"
            )
        m = m.astype(bool)
    if not allow_empty:
        empty = np.flatnonzero(~m.reshape(len(m), -1).any(axis=1))
        if len(empty):
            raise Sim2RealError(
                f"{name}: mask {int(empty[0])} is empty (no pixel selected); {len(empty)} empty in all"
            )
    return m


def as_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Validate label maps and return uint8 `(B, H, W)` with values in 0..3."""
    labels = _to_numpy(labels, name)
    if labels.ndim == 2:
        labels = labels[None]
    if labels.ndim != 3:
        raise Sim2RealError(f"{name} must be a label map (B, H, W); got shape {tuple(labels.shape)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise Sim2RealError(f"{name} must be an integer label map (uint8); got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= N_LABELS):
        raise Sim2RealError(
            f"{name} values must be 0 bg, 1 T-block, 2 agent, 3 goal; got range [{labels.min()}, {labels.max()}]"
        )
    return labels.astype(np.uint8, copy=False)


def same_batch(a: np.ndarray, b: np.ndarray, names: str, spatial_only: bool = False) -> None:
    """Raise unless `a` and `b` agree in batch size and (H, W)."""
    if a.shape[1:3] != b.shape[1:3]:
        raise Sim2RealError(f"{names}: image sizes differ, {tuple(a.shape[1:3])} vs {tuple(b.shape[1:3])}")
    if not spatial_only and a.shape[0] != b.shape[0]:
        raise Sim2RealError(f"{names}: batch sizes differ, {a.shape[0]} vs {b.shape[0]}")
