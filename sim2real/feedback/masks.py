"""Region masks for the feedback scores.

Sim frames carry exact label maps (`data/mask` in the zarr: 0 background, 1 T-block, 2 agent, 3 goal).
Reference (real) frames get label maps from the user (`--ref-masks`, `load_ref_masks`) or from
`auto_ref_masks`: the T-block is the largest saturated, compact blob (OpenCV k-means colour
clustering + connected components, optionally steered by a colour hint), the agent the most circular
saturated blob of another colour, and the background is the frame minus both. Check automatic masks
with `write_mask_overlay` before training on them.

    labels = auto_ref_masks(refs)                       # (R, H, W) uint8
    write_mask_overlay("refs_masks.png", refs[0], labels[0])
    bg = region_mask(labels, "background")              # (R, H, W) bool
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from sim2real.errors import Sim2RealError
from sim2real.feedback._checks import as_labels, as_uint8_images, same_batch
from sim2real.utils import atomic_path

logger = logging.getLogger(__name__)

EditKind = Literal["background", "foreground"]
BACKGROUND, TBLOCK, AGENT, GOAL = 0, 1, 2, 3
# Overlay colours (RGB) per label; background is left as is.
_OVERLAY = {TBLOCK: (255, 60, 60), AGENT: (60, 120, 255), GOAL: (60, 220, 60)}


def region_mask(labels: Any, edit: EditKind, check_empty: bool = True) -> np.ndarray:
    """The region an edit repaints, bool `(B, H, W)`.

    background: everything but the T-block and the agent (the goal marker lies on the table and is
    repainted with it). foreground: the T-block. The agent is never edited.
    """
    labels = as_labels(labels)
    if edit == "background":
        m = (labels != TBLOCK) & (labels != AGENT)
    elif edit == "foreground":
        m = labels == TBLOCK
    else:
        raise Sim2RealError(f"edit must be 'background' or 'foreground'; got {edit!r}")
    if check_empty:
        empty = np.flatnonzero(~m.reshape(len(m), -1).any(axis=1))
        if len(empty):
            raise Sim2RealError(
                f"{edit} region of frame {int(empty[0])} is empty ({len(empty)} frames in all)"
            )
    return m


def load_ref_masks(paths: Sequence[str | Path], size: int = 96) -> np.ndarray:
    """User masks → uint8 label maps `(N, size, size)` (nearest-neighbour resize).

    A PNG whose values are all in 0..3 is read as a label map; any other single-channel or RGB image is
    read as binary, nonzero = T-block (the agent then counts as background).
    """
    out = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise Sim2RealError(f"cannot read mask image {p}")
        if img.ndim == 3:
            img = img[..., :3].max(axis=2)
        if img.dtype != np.uint8:
            img = (img > 0).astype(np.uint8)
        if img.max() > GOAL:
            img = (img > 127).astype(np.uint8) * TBLOCK
        out.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST))
    if not out:
        raise Sim2RealError("no mask files given")
    return np.stack(out)


def write_mask_overlay(
    path: str | Path, image: Any, labels: Any, scale: int = 4, alpha: float = 0.45
) -> Path:
    """Write a PNG for a person to check a mask: the frame, and the frame with tinted labels + outlines.

    image uint8 `(H, W, 3)` RGB, labels `(H, W)`; upscaled `scale`x (nearest) so 96 px frames are visible.
    """
    img = as_uint8_images(image, "image")
    lab = as_labels(labels, "labels")
    same_batch(img, lab, "image vs labels")
    img, lab = img[0], lab[0]
    big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    lbig = cv2.resize(lab, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    tinted = big.astype(np.float32)
    for value, colour in _OVERLAY.items():
        sel = lbig == value
        tinted[sel] = (1 - alpha) * tinted[sel] + alpha * np.asarray(colour, np.float32)
        contours, _ = cv2.findContours(sel.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        tinted = np.ascontiguousarray(tinted)
        cv2.drawContours(tinted, contours, -1, colour, 1)
    panel = np.concatenate(
        [big, np.full((big.shape[0], 4, 3), 255, np.uint8), tinted.astype(np.uint8)], axis=1
    )
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
            raise Sim2RealError(f"could not write {path}")
    return path


# --- automatic reference masks ---------------------------------------------------------------------


def _components(binary: np.ndarray) -> list[tuple[np.ndarray, dict]]:
    """Connected components (8-connected) of a bool map, with area / circularity / border stats."""
    n, lab, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    h, w = binary.shape
    out = []
    for k in range(1, n):
        comp = lab == k
        area = int(stats[k, cv2.CC_STAT_AREA])
        contours, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        perim = max(sum(cv2.arcLength(c, True) for c in contours), 1.0)
        hull = cv2.convexHull(np.concatenate(contours))
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        out.append(
            (
                comp,
                {
                    "area": area,
                    "circularity": 4 * np.pi * area / perim**2,
                    "solidity": area / max(cv2.contourArea(hull), 1.0),
                    "border": bool(x == 0 or y == 0 or x + bw == w or y + bh == h),
                    "frac": area / (h * w),
                },
            )
        )
    return out


def _fill_holes(comp: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(comp.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(comp.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled > 0


def _ring_contrast(comp: np.ndarray, lab: np.ndarray, width: int = 3) -> tuple[float, np.ndarray]:
    """ΔE76 between a component's mean Lab colour and the ring of pixels just around it."""
    k = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    ring = (cv2.dilate(comp.astype(np.uint8), k) > 0) & ~comp
    inside = lab[comp].mean(axis=0)
    if not ring.any():
        return 0.0, inside
    return float(np.linalg.norm(inside - lab[ring].mean(axis=0))), inside


def _local_mean(values: np.ndarray, where: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` (H, W, C) over the `where` pixels in a `window`² box around each pixel, and
    whether the box held any (a masked box filter: shadows and lighting make colours vary locally)."""
    w = where.astype(np.float32)
    num = cv2.boxFilter(values * w[..., None], -1, (window, window), normalize=False)
    den = cv2.boxFilter(w, -1, (window, window), normalize=False)
    return num / np.maximum(den, 1e-6)[..., None], den > 0.5


def _coverage(comp: np.ndarray, rgb: np.ndarray, width: int = 2, window: int = 9) -> np.ndarray:
    """How much of each pixel near a blob the blob covers, float `(H, W)`: 0 at the local table colour,
    1 at the blob's, NaN away from the blob.

    Edge pixels are linear mixes of the two colours in RGB (anti-aliasing, optical blur and the
    camera's pixel area all average RGB), so each pixel's colour is projected onto the segment from
    the local background colour (ring `width`+1..`width`+3 px outside the blob) to the local blob
    colour (its interior after a 1 px erosion); "local" = mean over a `window`² box, falling back to
    the median over the whole ring / interior where the box holds none.
    """
    k = np.ones((3, 3), np.uint8)
    c8 = comp.astype(np.uint8)
    near = cv2.dilate(c8, k, iterations=width) > 0
    core = cv2.erode(c8, k, iterations=1) > 0
    ring = (cv2.dilate(c8, k, iterations=width + 3) > 0) & ~near
    if not core.any():
        core = comp
    if not ring.any():
        return np.where(comp, 1.0, np.nan).astype(np.float32)
    in_col, has_in = _local_mean(rgb, core, window)
    out_col, has_out = _local_mean(rgb, ring, window)
    in_col[~has_in] = np.median(rgb[core], axis=0)
    out_col[~has_out] = np.median(rgb[ring], axis=0)
    axis = in_col - out_col  # (H, W, 3)
    frac = ((rgb - out_col) * axis).sum(-1) / np.maximum((axis * axis).sum(-1), 1e-6)
    return np.where(near, frac, np.nan).astype(np.float32)


def _split_boundary(comp: np.ndarray, rgb: np.ndarray, min_coverage: float) -> np.ndarray:
    """Refine a blob's edge by coverage: the pixels near it that it covers at least `min_coverage`."""
    with np.errstate(invalid="ignore"):
        keep = _coverage(comp, rgb) >= min_coverage  # NaN (away from the blob) compares False
    return _fill_holes(keep) if keep.any() else _fill_holes(comp)


def _segment_one(
    img: np.ndarray, hint_lab: np.ndarray | None, k: int, min_chroma: float, seed: int, min_coverage: float
) -> np.ndarray:
    """Label map of one frame: colour clusters → connected components → the T and the agent."""
    h, w = img.shape[:2]
    blur = cv2.GaussianBlur(img, (3, 3), 0)
    lab = cv2.cvtColor(blur.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)  # L 0–100, a/b ±100
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    # 1. k-means colour clusters on (a, b, L/2): chroma separates a painted block from a table,
    #    lightness is down-weighted so lighting gradients do not split objects
    feats = np.stack([lab[..., 1], lab[..., 2], lab[..., 0] * 0.5], axis=-1).reshape(-1, 3)
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, assign, _ = cv2.kmeans(np.ascontiguousarray(feats), k, None, crit, 3, cv2.KMEANS_PP_CENTERS)
    assign = assign.reshape(h, w)
    # 2. components of each cluster that stand out from their surroundings (table fragments do not)
    candidates = []
    for c in range(k):
        cl = cv2.morphologyEx((assign == c).astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)) > 0
        for comp, st in _components(cl):
            if not 0.002 <= st["frac"] <= 0.25:
                continue  # specks, or the table itself
            contrast, colour = _ring_contrast(comp, lab)
            if contrast < 12.0:
                continue
            st.update(contrast=contrast, chroma=float(chroma[comp].mean()), colour=colour)
            candidates.append((comp, st))
    labels = np.zeros((h, w), np.uint8)
    # 3. T-block: the largest compact saturated candidate (or the one closest to the colour hint)
    # with a colour hint the block may be unsaturated (grey, white): the hint picks it, not the chroma
    t_cands = [
        (comp, st)
        for comp, st in candidates
        if (hint_lab is not None or st["chroma"] >= min_chroma) and st["solidity"] > 0.4
    ]
    if not t_cands:
        return labels
    if hint_lab is not None:
        t_comp, t_st = min(
            t_cands, key=lambda cs: np.linalg.norm(cs[1]["colour"] - hint_lab) - 0.05 * cs[1]["area"]
        )
    else:
        t_comp, t_st = max(t_cands, key=lambda cs: cs[1]["area"] * (0.5 if cs[1]["border"] else 1.0))
    # boundary by coverage: near the blob, a pixel is T where its colour lies at least `min_coverage`
    # of the way from the local table colour to the local T colour (sub-pixel: anti-aliasing and blur
    # mix the two colours linearly)
    rgb = img.astype(np.float32)
    t_mask = _split_boundary(t_comp, rgb, min_coverage)
    labels[t_mask] = TBLOCK
    # 4. agent: the most circular small candidate that is not part of the T
    agents = [
        (st["circularity"] * min(st["contrast"], 40.0), comp)
        for comp, st in candidates
        if st["circularity"] > 0.6 and st["frac"] < 0.03 and not (comp & t_mask).any()
    ]
    if agents:
        a_comp = max(agents, key=lambda a: a[0])[1]
        a_mask = _split_boundary(a_comp | _fill_holes(a_comp), rgb, min_coverage)
        labels[a_mask & ~t_mask] = AGENT
    return labels


def auto_ref_masks(
    images: Any,
    t_color_hint: tuple[int, int, int] | None = None,
    n_clusters: int = 6,
    min_chroma: float = 20.0,
    seed: int = 0,
    min_coverage: float = 0.75,
) -> np.ndarray:
    """Automatic label maps for reference frames: uint8 `(B, H, W)` with 0 bg, 1 T-block, 2 agent.

    images: uint8 RGB `(B, H, W, 3)`. t_color_hint: RGB of the T-block if known (e.g. (230, 120, 40)
    for an orange block; any colour, grey included); without it, the largest compact saturated blob (mean chroma >= `min_chroma`
    Lab units) that stands out from its surroundings is taken. `n_clusters`: k of the k-means. A frame where no
    T-block is found gets an all-background map and a warning (check the overlay).

    min_coverage: a pixel at the edge of the T (or agent) is kept where the object covers at least
    this fraction of it, read from its colour between the local table and object colours. 0.5 is the
    even split (right for a camera, whose pixels average the scene over their area); the default 0.75
    matches the simulator's label maps (a pixel is T when its centre is inside the outline), because
    the renderer's anti-aliased fill paints ~0.5 px beyond the outline (IoU vs exact labels on
    `tabletop` renders: 0.83 at 0.5, 0.90 at 0.75; see docs/feedback.md).
    """
    if not 0.0 < min_coverage < 1.0:
        raise Sim2RealError(f"min_coverage must be in (0, 1); got {min_coverage=}")
    imgs = as_uint8_images(images, "images")
    hint_lab = None
    if t_color_hint is not None:
        if len(t_color_hint) != 3:
            raise Sim2RealError(f"t_color_hint must be an RGB triple; got {t_color_hint!r}")
        px = np.asarray(t_color_hint, np.float32).reshape(1, 1, 3) / 255.0
        hint_lab = cv2.cvtColor(px, cv2.COLOR_RGB2Lab).reshape(3)
    out = np.stack([_segment_one(img, hint_lab, n_clusters, min_chroma, seed, min_coverage) for img in imgs])
    missing = np.flatnonzero(~(out == TBLOCK).reshape(len(out), -1).any(axis=1))
    if len(missing):
        logger.warning(
            "auto_ref_masks: no T-block found in %d of %d frames (first: %d)",
            len(missing),
            len(out),
            missing[0],
        )
    return out


def iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-frame IoU of two bool `(B, H, W)` masks (1.0 where both are empty)."""
    inter = (pred & true).reshape(len(pred), -1).sum(axis=1)
    union = (pred | true).reshape(len(pred), -1).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
