"""Procedural textures (wood, marble, fabric, noise) drawn at the target resolution.

Patterns are defined in world pixels, so a table looks the same at 96×96 and 512×512; they are
drawn at 2× and area-downsampled to avoid aliasing of fine grain.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def value_noise(
    rng: np.random.Generator, shape: tuple[int, int], cell: float, octaves: int = 3
) -> np.ndarray:
    """Smooth fractal noise in [0, 1] of `shape` (H, W) with features of `cell` pixels."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    total = 0.0
    for o in range(octaves):
        c = max(cell / 2**o, 1.0)
        gh, gw = int(math.ceil(h / c)) + 2, int(math.ceil(w / c)) + 2
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(gw * c), int(gh * c)), interpolation=cv2.INTER_CUBIC)[:h, :w]
        out += up * 0.5**o
        total += 0.5**o
    return np.clip(out / total, 0, 1)


def _aniso_noise(
    rng: np.random.Generator, shape: tuple[int, int], angle: float, cell_u: float, cell_v: float
) -> np.ndarray:
    """Value noise stretched along direction `angle` (radians): features cell_u long, cell_v wide."""
    h, w = shape
    n = int(math.ceil(math.hypot(h, w))) + 2
    grid = rng.random((int(math.ceil(n / cell_v)) + 2, int(math.ceil(n / cell_u)) + 2), dtype=np.float32)
    up = cv2.resize(
        grid, (int(grid.shape[1] * cell_u), int(grid.shape[0] * cell_v)), interpolation=cv2.INTER_CUBIC
    )[:n, :n]
    rot = cv2.getRotationMatrix2D((n / 2, n / 2), -math.degrees(angle), 1.0)
    rot[:, 2] += (w - n) / 2, (h - n) / 2
    return np.clip(
        cv2.warpAffine(up, rot, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), 0, 1
    )


def pattern(
    kind: str, shape: tuple[int, int], px_per_world: float, scale: float, angle_deg: float, seed: int
) -> np.ndarray:
    """Pattern field in [0, 1] (1 = full secondary colour) of `shape` pixels."""
    rng = np.random.default_rng(seed)
    h, w = shape
    s = scale * px_per_world  # feature size in pixels
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = math.radians(angle_deg)
    u = xx * math.cos(a) + yy * math.sin(a)  # along the grain / veins
    v = -xx * math.sin(a) + yy * math.cos(a)  # across
    if kind == "noise":
        return value_noise(rng, shape, s, octaves=4)
    if kind == "wood":  # long grain lines along u, slowly wavy, with fine streaks
        warp = _aniso_noise(rng, shape, a, s * 24, s * 3)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * (v / s + 3.0 * warp))
        streak = _aniso_noise(rng, shape, a, s * 10, max(s / 4, 1.0))
        return np.clip(0.75 * rings**2 + 0.45 * streak - 0.1, 0, 1)
    if kind == "marble":
        turb = value_noise(rng, shape, s * 2, octaves=5)
        veins = 1 - np.abs(np.sin(2 * np.pi * (u / (6 * s) + 2.0 * turb)))
        cloud = value_noise(rng, shape, s * 3, octaves=3)
        return np.clip(veins**8 + 0.25 * cloud, 0, 1)
    if kind == "fabric":
        p = max(s / 4, 1.5)
        warp = 0.5 + 0.5 * np.sin(2 * np.pi * u / p)
        weft = 0.5 + 0.5 * np.sin(2 * np.pi * v / p)
        checker = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
        threads = checker * warp + (1 - checker) * weft
        return np.clip(0.7 * threads + 0.3 * value_noise(rng, shape, s, octaves=2), 0, 1)
    if kind == "flat":
        return np.zeros(shape, np.float32)
    raise ValueError(f"unknown texture kind {kind!r}")


def texture_image(
    kind: str,
    color: list[int],
    color2: list[int],
    contrast: float,
    shape: tuple[int, int],
    px_per_world: float,
    scale: float,
    angle_deg: float,
    seed: int,
) -> np.ndarray:
    """uint8 (H, W, 3) RGB texture: color blended towards color2 by contrast × pattern."""
    if kind == "flat":
        return np.broadcast_to(np.asarray(color, np.uint8), (*shape, 3)).copy()
    ss = 2  # supersample, then area-downsample
    f = pattern(kind, (shape[0] * ss, shape[1] * ss), px_per_world * ss, scale, angle_deg, seed)
    f = cv2.resize(f, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)[..., None] * contrast
    c1, c2 = np.asarray(color, np.float32), np.asarray(color2, np.float32)
    return np.clip(c1 * (1 - f) + c2 * f + 0.5, 0, 255).astype(np.uint8)
