"""Structure scores: how much an edit changed the layout of the input. Lower = structure kept.

All scorers share one call shape, batch in and one number per image out:

    score(inp, gen, mask=None) -> (B,) float64

* `canny_score` — the paper's sim-to-real structure score (Eq. 8 with Canny edge maps instead of
  depth, because depth models fail on flat sim renders): mean |E(I_in) − E(I_gen)| over the frame,
  E = Canny of the pre-blurred RGB image (OpenCV takes the strongest gradient over the channels, so a
  colour change that keeps contrast keeps every edge).
* `chamfer_score` — symmetric chamfer distance between the two edge sets via
  `cv2.distanceTransform`; distances up to `tolerance_px` are free, so a 1–2 px shift of an edge (which
  Canny L1 punishes as two full edge lengths) costs nothing.
* `DepthStructure` — the paper's photo backend: L1 between Depth-Anything relative depth maps
  (transformers, weights from a local folder), each map normalised for scale and shift.

`mask` (optional bool `(B, H, W)`) restricts where the score is averaged, e.g. a band around the
object boundaries (see `boundary_band`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from sim2real.errors import Sim2RealError
from sim2real.feedback._checks import as_images, as_masks, as_uint8_images, same_batch

logger = logging.getLogger(__name__)


@dataclass
class CannyConfig:
    """Canny edge maps as the structure signal.

    blur_ksize: Gaussian pre-blur kernel size (odd; 0 or 1 = no blur). Blur suppresses edges from
        fine texture and sensor noise, so a realistic table texture is not read as new structure.
    blur_sigma: Gaussian sigma in pixels (0 = derived from the kernel size, as OpenCV does).
    low, high: hysteresis thresholds on the gradient magnitude (OpenCV units, L2 gradient of 0–255
        images). Raise them to ignore weaker texture edges.
    """

    blur_ksize: int = 3
    blur_sigma: float = 0.0
    low: float = 50.0
    high: float = 150.0

    def __post_init__(self) -> None:
        if self.blur_ksize < 0 or (self.blur_ksize > 1 and self.blur_ksize % 2 == 0):
            raise ValueError(f"blur_ksize must be 0, 1 or an odd size; got {self.blur_ksize=}")
        if self.blur_sigma < 0:
            raise ValueError(f"blur_sigma must be >= 0; got {self.blur_sigma=}")
        if not 0 <= self.low <= self.high:
            raise ValueError(f"need 0 <= low <= high; got {self.low=}, {self.high=}")


def canny_edges(images: Any, cfg: CannyConfig | None = None) -> np.ndarray:
    """Canny edge maps of a batch: uint8 RGB `(B, H, W, 3)` → bool `(B, H, W)`."""
    cfg = cfg or CannyConfig()
    images = as_uint8_images(images, "images")
    out = np.empty(images.shape[:3], dtype=bool)
    for i, img in enumerate(images):  # one OpenCV call per frame (~20 µs at 96x96); no per-pixel Python
        if cfg.blur_ksize > 1:
            img = cv2.GaussianBlur(img, (cfg.blur_ksize, cfg.blur_ksize), cfg.blur_sigma)
        out[i] = cv2.Canny(np.ascontiguousarray(img), cfg.low, cfg.high, L2gradient=True) > 0
    return out


def _pair(inp: Any, gen: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    a = as_uint8_images(inp, "inp")
    b = as_uint8_images(gen, "gen")
    same_batch(a, b, "inp vs gen")
    m = None
    if mask is not None:
        m = as_masks(mask, "mask")
        same_batch(a, m, "inp vs mask")
    return a, b, m


def _masked_mean(x: np.ndarray, m: np.ndarray | None) -> np.ndarray:
    """Mean of `(B, H, W)` over all pixels, or over the mask's pixels."""
    if m is None:
        return x.reshape(len(x), -1).mean(axis=1).astype(np.float64)
    return (x * m).reshape(len(x), -1).sum(axis=1) / m.reshape(len(m), -1).sum(axis=1)


def canny_score(inp: Any, gen: Any, cfg: CannyConfig | None = None, mask: Any = None) -> np.ndarray:
    """Paper structure score: mean |Canny(I_in) − Canny(I_gen)| per image, in [0, 1]. → `(B,)`."""
    a, b, m = _pair(inp, gen, mask)
    ea, eb = canny_edges(a, cfg), canny_edges(b, cfg)
    return _masked_mean((ea != eb).astype(np.float32), m)


def _edge_distance(edges: np.ndarray) -> np.ndarray:
    """Per pixel, the L2 distance to the nearest edge pixel of the same frame; `(B, H, W)` float32."""
    out = np.empty(edges.shape, dtype=np.float32)
    for i, e in enumerate(edges):
        if e.any():
            out[i] = cv2.distanceTransform((~e).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        else:
            out[i] = np.inf
    return out


def chamfer_score(
    inp: Any,
    gen: Any,
    cfg: CannyConfig | None = None,
    mask: Any = None,
    tolerance_px: float = 1.5,
    max_px: float = 10.0,
) -> np.ndarray:
    """Symmetric, shift-tolerant chamfer distance between Canny edge sets, in pixels. → `(B,)`.

    For each edge pixel of one image: d = distance to the nearest edge of the other image,
    cost = clip(d − tolerance_px, 0, max_px). The score is the mean cost over the edges of `gen`
    (spurious edges) plus the mean over the edges of `inp` (missing edges), halved. A frame where
    one image has edges and the other none costs `max_px`; two edgeless frames cost 0.
    `mask` keeps only edge pixels inside it.
    """
    if tolerance_px < 0 or max_px <= 0:
        raise Sim2RealError(f"chamfer needs tolerance_px >= 0 and max_px > 0; got {tolerance_px=}, {max_px=}")
    a, b, m = _pair(inp, gen, mask)
    ea, eb = canny_edges(a, cfg), canny_edges(b, cfg)
    if m is not None:
        ea, eb = ea & m, eb & m
    da, db = _edge_distance(ea), _edge_distance(eb)

    def directed(src: np.ndarray, dist_to_other: np.ndarray) -> np.ndarray:
        cost = np.clip(np.nan_to_num(dist_to_other - tolerance_px, posinf=max_px), 0.0, max_px)
        n = src.reshape(len(src), -1).sum(axis=1)
        total = (cost * src).reshape(len(src), -1).sum(axis=1)
        return np.where(n > 0, total / np.maximum(n, 1), 0.0)

    return 0.5 * (directed(eb, da) + directed(ea, db)).astype(np.float64)


def boundary_band(labels: Any, width: int = 3) -> np.ndarray:
    """Bool `(B, H, W)`: pixels within `width` px of a label boundary (T-block, agent, goal outlines).

    Structure lives on object outlines; a band around them ignores texture edges inside the table.
    """
    from sim2real.feedback._checks import as_labels

    labels = as_labels(labels)
    k = np.ones((3, 3), np.uint8)
    out = np.empty(labels.shape, dtype=bool)
    for i, lab in enumerate(labels):
        edge = (cv2.dilate(lab, k) != cv2.erode(lab, k)).astype(np.uint8)
        out[i] = cv2.dilate(edge, k, iterations=max(width - 1, 0)) > 0 if width > 1 else edge > 0
    return out


class DepthStructure:
    """Paper structure score with a monocular depth model: mean |d(I_in) − d(I_gen)| per image.

    Depth-Anything (transformers `DepthAnythingForDepthEstimation`) predicts relative inverse depth with
    an arbitrary scale and shift per image, so each map is normalised to zero median and unit mean
    absolute deviation before the L1 (`normalize=True`). Weights come from a local folder holding
    `config.json` and `model.safetensors` (and optionally `preprocessor_config.json` for the input
    size and normalisation); nothing is downloaded.

        depth = DepthStructure.from_pretrained("~/models/depth-anything-small-hf")
        scores = depth(inp, gen)  # (B,)
    """

    def __init__(
        self,
        model: Any,
        input_size: int = 518,
        image_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
        image_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
        normalize: bool = True,
        device: str = "cpu",
    ):
        patch = int(getattr(getattr(model, "config", None), "patch_size", 14) or 14)
        if input_size % patch:
            raise Sim2RealError(
                f"depth input_size must be a multiple of the patch size {patch}; got {input_size}"
            )
        self.model = model.to(device).eval()
        self.input_size = input_size
        self.mean = np.asarray(image_mean, np.float32)
        self.std = np.asarray(image_std, np.float32)
        self.normalize = normalize
        self.device = device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", **kwargs: Any) -> DepthStructure:
        from transformers import DepthAnythingForDepthEstimation

        path = Path(path).expanduser()
        if not (path / "config.json").is_file():
            raise Sim2RealError(
                f"depth model not found: place a Depth-Anything checkpoint (config.json, model.safetensors) in {path}"
            )
        model = DepthAnythingForDepthEstimation.from_pretrained(str(path), local_files_only=True)
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            p = json.loads(pre.read_text())
            kwargs.setdefault("image_mean", tuple(p.get("image_mean", (0.485, 0.456, 0.406))))
            kwargs.setdefault("image_std", tuple(p.get("image_std", (0.229, 0.224, 0.225))))
            size = p.get("size", {})
            if isinstance(size, dict) and "height" in size:
                kwargs.setdefault("input_size", int(size["height"]))
        return cls(model, device=device, **kwargs)

    def depth(self, images: Any) -> np.ndarray:
        """Relative depth maps `(B, H, W)` float32 at the image's own size."""
        import torch
        import torch.nn.functional as F

        x = as_images(images, "images")  # (B, H, W, 3) in [0, 1]
        h, w = x.shape[1:3]
        t = torch.from_numpy((x - self.mean) / self.std).permute(0, 3, 1, 2).to(self.device)  # (B, 3, H, W)
        t = F.interpolate(t, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            d = self.model(pixel_values=t).predicted_depth[:, None]  # (B, 1, S, S)
        d = F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
        d = d.float().cpu().numpy()
        if self.normalize:
            flat = d.reshape(len(d), -1)
            med = np.median(flat, axis=1, keepdims=True)
            mad = np.abs(flat - med).mean(axis=1, keepdims=True)
            d = ((flat - med) / (mad + 1e-6)).reshape(d.shape)
        return d

    def __call__(self, inp: Any, gen: Any, mask: Any = None) -> np.ndarray:
        a = as_images(inp, "inp")
        b = as_images(gen, "gen")
        same_batch(a, b, "inp vs gen")
        m = None if mask is None else as_masks(mask, "mask")
        if m is not None:
            same_batch(a, m, "inp vs mask")
        return _masked_mean(np.abs(self.depth(a) - self.depth(b)), m)
