"""Rasterise a Push-T state under an `Appearance`: RGB frame + exact label map, straight at the
target size with OpenCV (no 512×512 canvas, no pygame).

Painter's order: table (+ walls, goal marker; cached per appearance and size) → drop shadow → T →
agent → lighting/vignette → blur → sensor noise. Labels use the same order on pixel centres:
0 background, 3 goal marker (only when shown), 1 T-block, 2 agent.

Coordinates: world (x, y) in [0, 512) maps to pixel coordinates x·size/512 − 0.5, because OpenCV
puts pixel centres on integers; polygons are drawn anti-aliased with `SHIFT` sub-pixel bits.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from functools import lru_cache

import cv2
import numpy as np

from envs.pusht.appearance import Appearance, load_appearance
from envs.pusht.physics import T_BOXES_LOCAL, T_OUTLINE_LOCAL, tee_world
from envs.pusht.textures import texture_image

WORLD = 512.0
AGENT_RADIUS = 15.0
HIGHLIGHT_RADIUS = 11.0  # DP draws a lighter inner disk of radius − 4
OUTLINE_WIDTH = 4.0  # DP's fat segment radius 2 around each box
WALLS = (((5, 506), (5, 5)), ((5, 5), (506, 5)), ((506, 5), (506, 506)), ((5, 506), (506, 506)))
DEFAULT_GOAL = (256.0, 256.0, math.pi / 4)
SHIFT = 4
_ONE = 1 << SHIFT

_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


def _to_px(points: np.ndarray, size: int) -> np.ndarray:
    """World points (N, 2) → int32 fixed-point pixel coordinates for cv2 drawing with SHIFT."""
    return np.round((points * (size / WORLD) - 0.5) * _ONE).astype(np.int32)


def _thickness(size: int, world_width: float) -> int:
    return max(1, int(round(world_width * size / WORLD)))


def _key(a: Appearance) -> tuple:
    return tuple(tuple(v) if type(v) is list else v for v in a.__dict__.values())


@lru_cache(maxsize=16)
def _centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float64) + 0.5) * (WORLD / size)
    return c[None, :], c[:, None]  # x (1, W), y (H, 1)


def _span(lo: float, hi: float, size: int) -> slice:
    """Pixel indices whose centres can fall in the world interval [lo, hi]."""
    k = size / WORLD
    return slice(
        min(size, max(0, int(math.floor(lo * k - 0.5)))), min(size, max(0, int(math.ceil(hi * k - 0.5)) + 1))
    )


_T_CORNERS = [tuple(map(float, v)) for v in T_OUTLINE_LOCAL]


def _paint_tee(labels: np.ndarray, pose, value: int) -> None:
    """Set labels to `value` on pixel centres inside the T at pose (union of the two boxes, exact)."""
    size = labels.shape[0]
    px, py, a = float(pose[0]), float(pose[1]), float(pose[2])
    c, s = math.cos(a), math.sin(a)
    xs = [px + u * c - v * s for u, v in _T_CORNERS]
    ys = [py + u * s + v * c for u, v in _T_CORNERS]
    rows, cols = _span(min(ys), max(ys), size), _span(min(xs), max(xs), size)
    x, y = _centres(size)
    dx, dy = x[:, cols] - px, y[rows] - py
    lx, ly = c * dx + s * dy, c * dy - s * dx  # body frame, (h, w)
    alx = np.abs(lx)
    inside = (alx < 60) & (ly > 0) & (ly < 30)
    inside |= (alx < 15) & (ly >= 30) & (ly < 120)
    labels[rows, cols][inside] = value


def _paint_disk(labels: np.ndarray, cx: float, cy: float, r: float, value: int) -> None:
    size = labels.shape[0]
    rows, cols = _span(cy - r, cy + r, size), _span(cx - r, cx + r, size)
    x, y = _centres(size)
    inside = (x[:, cols] - cx) ** 2 + (y[rows] - cy) ** 2 < r * r
    labels[rows, cols][inside] = value


@lru_cache(maxsize=16)
def _preset(name: str) -> Appearance:
    return load_appearance(name)


def _static_layers(a: Appearance, size: int, goal: tuple) -> dict:
    """Table + walls + goal (RGB), goal labels, the lighting gain map and the T's body-frame texture."""
    key = (_key(a), size, goal)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    ppw = size / WORLD
    table = texture_image(
        a.table_texture,
        a.table_color,
        a.table_color2,
        a.table_contrast,
        (size, size),
        ppw,
        a.table_scale,
        a.table_angle,
        a.texture_seed,
    )
    if a.wall_color is not None:
        t = _thickness(size, 4.0)
        for p, q in WALLS:
            pq = _to_px(np.array([p, q], float), size)
            cv2.line(table, tuple(pq[0]), tuple(pq[1]), a.wall_color, t, cv2.LINE_AA, SHIFT)
    labels = np.zeros((size, size), np.uint8)
    if a.show_goal:
        cv2.fillPoly(table, [_to_px(tee_world(goal), size)], a.goal_color, cv2.LINE_AA, SHIFT)
        _paint_tee(labels, goal, 3)
    gain = None
    if a.light_strength > 0 or a.vignette > 0:
        x, y = _centres(size)
        nx, ny = x / WORLD * 2 - 1, y / WORLD * 2 - 1  # [-1, 1]
        d = math.radians(a.light_direction)
        grad = (nx * math.cos(d) + ny * math.sin(d)) / math.sqrt(2)
        gain = 1 + a.light_strength * grad - a.vignette * (nx**2 + ny**2) / 2
        gain = np.ascontiguousarray(np.repeat(gain.astype(np.float32)[..., None], 3, axis=2))
    t_tex = None
    if a.t_texture != "none":  # texture in the T's body frame: x ∈ [-64, 64), y ∈ [-4, 124)
        n = int(math.ceil(128 * ppw)) + 2
        t_tex = texture_image(
            a.t_texture,
            a.t_color,
            a.t_color2,
            1.0,
            (n, n),
            ppw,
            a.t_texture_scale,
            0.0,
            a.texture_seed + 1 if a.t_texture_seed is None else a.t_texture_seed,
        )
    layers = {"table": table, "labels": labels, "gain": gain, "t_tex": t_tex}
    _CACHE[key] = layers
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return layers


def _bbox(px: np.ndarray, size: int, pad: float) -> tuple[int, int, int, int]:
    """Integer pixel box (x0, y0, x1, y1) around fixed-point points, padded, clipped to the frame."""
    lo = px.min(0) / _ONE - pad
    hi = px.max(0) / _ONE + pad
    x0, y0 = max(0, int(math.floor(lo[0]))), max(0, int(math.floor(lo[1])))
    x1, y1 = min(size, int(math.ceil(hi[0])) + 1), min(size, int(math.ceil(hi[1])) + 1)
    return x0, y0, x1, y1


def _draw_shadow(img: np.ndarray, a: Appearance, block_pose, agent_xy, size: int) -> None:
    """Darken the table under the T and the agent shifted by shadow_offset and blurred (in place;
    only the box the shadow can reach is touched)."""
    off = np.asarray(a.shadow_offset, float)
    t_px = _to_px(tee_world(block_pose) + off, size)
    c = _to_px(np.asarray(agent_xy, float)[None] + off, size)[0]
    r = int(round(AGENT_RADIUS * size / WORLD * _ONE))
    sigma = a.shadow_blur * size / WORLD
    pts = np.vstack([t_px, c - r, c + r])
    x0, y0, x1, y1 = _bbox(pts, size, 3 * sigma + 2)
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([x0, y0]) * _ONE
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [t_px - shift], 255, cv2.LINE_AA, SHIFT)
    cx, cy = c - shift
    cv2.circle(mask, (int(cx), int(cy)), r, 255, -1, cv2.LINE_AA, SHIFT)
    m = mask.astype(np.float32) * (a.shadow_strength / 255.0)
    if sigma > 0.3:
        m = cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
    patch = img[y0:y1, x0:x1]
    patch[:] = np.clip(patch * (1 - m[..., None]) + 0.5, 0, 255).astype(np.uint8)


_T_ALL_LOCAL = np.vstack([T_OUTLINE_LOCAL, *T_BOXES_LOCAL])  # outline (8) + bar (4) + stem (4)


def _draw_t(img: np.ndarray, a: Appearance, pose, size: int, t_tex) -> None:
    px = _to_px(tee_world(pose, _T_ALL_LOCAL), size)
    outline = px[:8]
    if t_tex is None:
        cv2.fillPoly(img, [outline], a.t_color, cv2.LINE_AA, SHIFT)
    else:  # warp the body-frame texture into the T's box and blend it through an anti-aliased mask
        x0, y0, x1, y1 = _bbox(outline, size, 2)
        if x1 > x0 and y1 > y0:
            ppw = size / WORLD
            c, s = math.cos(pose[2]), math.sin(pose[2])
            # texture pixel (j, i) ↔ body point ((j + 0.5)/ppw − 64, (i + 0.5)/ppw − 4) → world → pixel
            lin = np.array([[c, -s], [s, c]])
            off = lin @ np.array([0.5 / ppw - 64, 0.5 / ppw - 4]) + np.array(pose[:2])
            m = np.hstack([lin, (off * ppw - 0.5 - np.array([x0, y0]))[:, None]])
            w, h = x1 - x0, y1 - y0
            tex = cv2.warpAffine(t_tex, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            alpha = np.zeros((h, w), np.uint8)
            cv2.fillPoly(alpha, [outline - np.array([x0, y0]) * _ONE], 255, cv2.LINE_AA, SHIFT)
            al = alpha.astype(np.float32)[..., None] / 255.0
            patch = img[y0:y1, x0:x1]
            patch[:] = (patch * (1 - al) + tex * al + 0.5).astype(np.uint8)
    if a.t_outline_color is not None:  # DP edges each box separately: the bar/stem seam shows
        cv2.polylines(
            img,
            [px[8:12], px[12:16]],
            True,
            a.t_outline_color,
            _thickness(size, OUTLINE_WIDTH),
            cv2.LINE_AA,
            SHIFT,
        )


def _draw_agent(img: np.ndarray, a: Appearance, xy, size: int) -> None:
    c = _to_px(np.asarray(xy, float)[None], size)[0]
    centre = (int(c[0]), int(c[1]))
    cv2.circle(
        img, centre, int(round(AGENT_RADIUS * size / WORLD * _ONE)), a.agent_color, -1, cv2.LINE_AA, SHIFT
    )
    if a.agent_highlight_color is not None:
        r = int(round(HIGHLIGHT_RADIUS * size / WORLD * _ONE))
        cv2.circle(img, centre, r, a.agent_highlight_color, -1, cv2.LINE_AA, SHIFT)


def _noise_rng(state: np.ndarray) -> np.random.Generator:
    """Without an rng, noise is a deterministic function of the state (same state → same frame)."""
    return np.random.default_rng(zlib.crc32(np.round(state, 3).astype(np.float64).tobytes()))


def render_state(
    state,
    appearance: Appearance | str,
    size: int = 96,
    rng: np.random.Generator | None = None,
    goal_pose=DEFAULT_GOAL,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw state (agent x, y, block x, y, angle) → (rgb uint8 (size, size, 3), labels uint8 (size, size)).

    Sensor noise is drawn from `rng` when given, else from a generator seeded by the state.
    """
    a = _preset(appearance) if isinstance(appearance, str) else appearance
    state = np.asarray(state, dtype=np.float64)
    layers = _static_layers(a, size, tuple(float(v) for v in goal_pose))
    labels = layers["labels"].copy()  # painter's order: goal (cached) < T < agent
    _paint_tee(labels, state[2:5], 1)
    _paint_disk(labels, state[0], state[1], AGENT_RADIUS, 2)
    return _render_rgb(state, a, size, rng, layers), labels


def render_rgb(
    state,
    appearance: Appearance | str,
    size: int = 96,
    rng: np.random.Generator | None = None,
    goal_pose=DEFAULT_GOAL,
) -> np.ndarray:
    """`render_state` without the label map (the env's pixel observations)."""
    a = _preset(appearance) if isinstance(appearance, str) else appearance
    state = np.asarray(state, dtype=np.float64)
    return _render_rgb(state, a, size, rng, _static_layers(a, size, tuple(float(v) for v in goal_pose)))


def _render_rgb(state: np.ndarray, a: Appearance, size: int, rng, layers: dict) -> np.ndarray:
    agent_xy, block_pose = state[:2], state[2:5]
    # 1. table (+ shadow), T, agent
    img = layers["table"].copy()
    if a.shadow_strength > 0:
        _draw_shadow(img, a, block_pose, agent_xy, size)
    _draw_t(img, a, block_pose, size, layers["t_tex"])
    _draw_agent(img, a, agent_xy, size)

    # 2. camera: lighting, blur, noise
    if layers["gain"] is None and a.blur_sigma == 0 and a.noise_sigma == 0:
        return img
    f = img.astype(np.float32)
    if layers["gain"] is not None:
        cv2.multiply(f, layers["gain"], dst=f)
    if a.blur_sigma > 0:
        f = cv2.GaussianBlur(f, (0, 0), a.blur_sigma * size / 96.0)
    if a.noise_sigma > 0:
        rng = rng if rng is not None else _noise_rng(state)
        cv2.scaleAdd(_sensor_noise(rng, size), float(a.noise_sigma), f, dst=f)
    f += 0.5
    return np.clip(f, 0, 255, out=f).astype(np.uint8)


@lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    return np.random.default_rng(0x5EED).standard_normal((3 * size, 3 * size, 3), dtype=np.float32)


def _sensor_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unit Gaussian noise (size, size, 3): a window of a fixed 3×-size bank at an offset and flip
    drawn from `rng` (~100× cheaper than fresh normals; 4·(2·size)² distinct windows)."""
    oy, ox, flip = (int(v) for v in rng.integers(0, (2 * size, 2 * size, 4)))
    win = _noise_bank(size)[oy : oy + size, ox : ox + size]
    if flip & 1:
        win = win[::-1]
    if flip & 2:
        win = win[:, ::-1]
    return np.ascontiguousarray(win)
