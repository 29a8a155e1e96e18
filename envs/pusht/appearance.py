"""The look of a Push-T frame as data: `Appearance`, presets in `configs/appearance/`, seeded sampling.

* `load_appearance("sim")` — Diffusion Policy's look; `load_appearance("tabletop")` — a
  photographic-looking STAND-IN for a real camera (no real Push-T frames are available here).
* `sample_appearance(rng, kinds)` — the broad training family of the base editor. It never returns a
  look inside the held-out band around `tabletop` (`in_held_out_band`), so the specialist's target
  look is never seen while pretraining:
    - background band: a wood table whose base colour is within ΔE76 < `HELD_OUT_DELTA_E` of
      tabletop's wood colour;
    - foreground band: a T colour within ΔE76 < `HELD_OUT_DELTA_E` of tabletop's orange.
* `describe_appearance(a)` — plain words ("dark wood", "orange") for edit instructions.
"""

from __future__ import annotations

import colorsys
import copy
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml

from sim2real.errors import Sim2RealError

TableTexture = Literal["flat", "wood", "marble", "fabric", "noise"]
TEXTURES: tuple[str, ...] = ("flat", "wood", "marble", "fabric", "noise")
HELD_OUT_DELTA_E = 25.0  # CIE76 distance (Lab units) of the held-out band around tabletop's colours

Color = list[int]


def _rgb(v: Sequence[float] | None) -> Color | None:
    return None if v is None else [int(round(float(c))) for c in v]


@dataclass
class Appearance:
    """How a Push-T state is drawn. Colours are RGB 0–255; lengths are world pixels (512 = frame).

    table_texture: flat | wood | marble | fabric | noise.
    table_color / table_color2: base colour and pattern colour (grain, veins, weave, blotches).
    table_scale: pattern size in world px (grain spacing, vein width, weave period, blotch size).
    table_contrast: 0–1, how strongly table_color2 shows.
    table_angle: pattern direction in degrees.
    texture_seed: seed of the procedural texture (same seed → same table).
    wall_color: colour of Diffusion Policy's wall segments, or None to hide them.
    t_color / t_outline_color: T fill and edge colour (None = no edge line).
    t_texture / t_color2 / t_texture_scale: optional pattern on the T (same kinds as the table).
    t_texture_seed: seed of the T's pattern (None: texture_seed + 1, so a new table seed also redraws it).
    agent_color / agent_highlight_color: agent disk and its inner disk (None = plain disk).
    goal_color / show_goal: goal marker colour and whether it is drawn (and labelled 3).
    light_direction / light_strength: linear lighting gradient, brighter towards `light_direction`
      (degrees, 0 = +x, 90 = +y i.e. down) by ±strength.
    vignette: 0–1 darkening of the corners.
    shadow_offset / shadow_blur / shadow_strength: drop shadow of T and agent (world px, 0–1).
    noise_sigma: Gaussian sensor noise, std in 0–255 units.
    blur_sigma: Gaussian blur, std in pixels of a 96×96 frame (scaled with the frame size).
    """

    name: str = "custom"
    table_texture: TableTexture = "flat"
    table_color: Color = field(default_factory=lambda: [255, 255, 255])
    table_color2: Color = field(default_factory=lambda: [200, 200, 200])
    table_scale: float = 40.0
    table_contrast: float = 0.5
    table_angle: float = 0.0
    texture_seed: int = 0
    wall_color: Color | None = None
    t_color: Color = field(default_factory=lambda: [142, 163, 183])
    t_outline_color: Color | None = None
    t_texture: Literal["none", "wood", "marble", "fabric", "noise"] = "none"
    t_color2: Color = field(default_factory=lambda: [100, 100, 100])
    t_texture_scale: float = 20.0
    t_texture_seed: int | None = None
    agent_color: Color = field(default_factory=lambda: [65, 105, 225])
    agent_highlight_color: Color | None = None
    goal_color: Color = field(default_factory=lambda: [144, 238, 144])
    show_goal: bool = True
    light_direction: float = 0.0
    light_strength: float = 0.0
    vignette: float = 0.0
    shadow_offset: list[float] = field(default_factory=lambda: [0.0, 0.0])
    shadow_blur: float = 0.0
    shadow_strength: float = 0.0
    noise_sigma: float = 0.0
    blur_sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.table_texture not in TEXTURES:
            raise ValueError(f"table_texture must be one of {TEXTURES}; got {self.table_texture=}")
        if self.t_texture not in ("none",) + TEXTURES[1:]:
            raise ValueError(f"t_texture must be none or one of {TEXTURES[1:]}; got {self.t_texture=}")
        for name in ("table_color", "table_color2", "t_color", "t_color2", "agent_color", "goal_color"):
            self._check_color(name, getattr(self, name))
        for name in ("wall_color", "t_outline_color", "agent_highlight_color"):
            if getattr(self, name) is not None:
                self._check_color(name, getattr(self, name))
        for name in ("table_contrast", "light_strength", "vignette", "shadow_strength"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]; got {getattr(self, name)}")
        for name in ("table_scale", "t_texture_scale"):
            if float(getattr(self, name)) <= 0:
                raise ValueError(f"{name} must be > 0; got {getattr(self, name)}")
        for name in ("shadow_blur", "noise_sigma", "blur_sigma"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0; got {getattr(self, name)}")
        if len(self.shadow_offset) != 2:
            raise ValueError(f"shadow_offset must be (dx, dy); got {self.shadow_offset=}")

    @staticmethod
    def _check_color(name: str, value) -> None:
        if len(value) != 3 or not all(0 <= float(c) <= 255 for c in value):
            raise ValueError(f"{name} must be RGB in 0..255; got {value}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Appearance:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise Sim2RealError(f"unknown appearance fields {sorted(unknown)}")
        return cls(**d)

    def key(self) -> tuple:
        """Hashable identity used by the renderer's caches."""
        return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in self.to_dict().items())


# ---- presets ------------------------------------------------------------------------------------
def appearance_dir() -> Path:
    root = os.environ.get("SIM2REAL_CONFIG_DIR", Path(__file__).resolve().parents[2] / "configs")
    return Path(root) / "appearance"


def available_appearances() -> list[str]:
    return sorted(p.stem for p in appearance_dir().glob("*.yaml"))


def load_appearance(name: str | os.PathLike) -> Appearance:
    """A preset from `configs/appearance/<name>.yaml`, or a path to such a YAML file."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = appearance_dir() / f"{name}.yaml"
    if not path.is_file():
        raise Sim2RealError(
            f"unknown appearance {str(name)!r}; available: {', '.join(available_appearances())}"
        )
    d = yaml.safe_load(path.read_text()) or {}
    d.setdefault("name", path.stem)
    try:
        return Appearance.from_dict(d)
    except (TypeError, ValueError) as e:
        raise Sim2RealError(f"appearance {path}: {e}") from e


@lru_cache(maxsize=16)
def _cached_preset(name: str) -> Appearance:
    return load_appearance(name)


def _tabletop() -> Appearance:
    return _cached_preset("tabletop")


# ---- colour helpers -----------------------------------------------------------------------------
def rgb_to_lab(rgb: Sequence[float]) -> np.ndarray:
    px = np.asarray(rgb, np.float32).reshape(1, 1, 3) / 255.0
    return cv2.cvtColor(px, cv2.COLOR_RGB2Lab).reshape(3).astype(np.float64)


def delta_e(a: Sequence[float], b: Sequence[float]) -> float:
    """CIE76 colour distance (Euclidean in Lab)."""
    return float(np.linalg.norm(rgb_to_lab(a) - rgb_to_lab(b)))


def color_name(rgb: Sequence[float], detail: str = "coarse") -> str:
    """Plain words for a colour: "light blue", "dark green", "grey", "orange", "brown", …

    detail="fine" says more of the same colour: lightness in five steps ("very dark" … "very light")
    and, for chromatic hues, saturation ("muted", "bright"): "very light muted blue", "dark bright red".
    """
    if detail == "fine":
        return _fine_color_name(rgb)
    if detail != "coarse":
        raise ValueError(f"detail must be 'coarse' or 'fine'; got {detail!r}")
    r, g, b = (float(c) / 255 for c in rgb)
    h, light, s = colorsys.rgb_to_hls(r, g, b)
    hue = h * 360
    if s < 0.15 or (max(r, g, b) - min(r, g, b)) < 0.08:
        if light > 0.9:
            return "white"
        if light < 0.12:
            return "black"
        return "light grey" if light > 0.65 else ("dark grey" if light < 0.35 else "grey")
    if hue < 15 or hue >= 345:
        base = "red"
    elif hue < 45:  # orange only when saturated; dull oranges read as beige or brown
        base = "brown" if light < 0.45 or (s < 0.6 and light <= 0.55) else ("beige" if s < 0.6 else "orange")
    elif hue < 70:
        base = "yellow" if light >= 0.4 else "olive"
    elif hue < 160:
        base = "green"
    elif hue < 195:
        base = "teal"
    elif hue < 255:
        base = "blue"
    elif hue < 290:
        base = "purple"
    else:
        base = "pink"
    if base == "beige" or (base == "yellow" and s < 0.45 and light > 0.6):
        return "beige"
    if s < 0.3 and base in ("blue", "teal", "green", "purple"):
        base = f"grey-{base}"  # Diffusion Policy's LightSlateGray T reads as "grey-blue"
    if light > 0.72:
        return f"light {base}"
    if light < 0.3 and base not in ("brown", "olive"):
        return f"dark {base}"
    return base


def _fine_color_name(rgb: Sequence[float]) -> str:
    coarse = color_name(rgb)
    hue = coarse.split()[-1]
    if hue in ("white", "black", "grey"):
        return coarse
    r, g, b = (float(c) / 255 for c in rgb)
    _, light, s = colorsys.rgb_to_hls(r, g, b)
    steps = ((0.2, "very dark"), (0.38, "dark"), (0.62, ""), (0.8, "light"))
    tone = next((word for top, word in steps if light < top), "very light")
    sat = ""
    if not hue.startswith("grey-") and hue != "beige":
        sat = "muted" if s < 0.45 else ("bright" if s > 0.8 else "")
    return " ".join(w for w in (tone, sat, hue) if w)


def describe_appearance(a: Appearance, detail: str = "coarse") -> dict:
    """Plain words for the table and the T, e.g. {"table": "dark wood", "t": "orange"}.

    detail="fine" names each colour more closely (`color_name`'s fine words) and always says a wood's
    hue: {"table": "dark muted brown wood", "t": "bright orange"}.
    """
    w = a.table_contrast / 2  # how much of table_color2 the eye averages in
    mix = np.asarray(a.table_color, float) * (1 - w) + np.asarray(a.table_color2, float) * w
    colour = color_name(mix, detail)
    if a.table_texture == "flat":
        table = colour
    elif a.table_texture == "wood" and detail == "fine":
        table = f"{colour} wood"
    elif a.table_texture == "wood":
        lightness = rgb_to_lab(mix)[0]
        tone = "light" if lightness > 65 else ("dark" if lightness < 35 else "")
        hue = colour.split()[-1]
        if hue not in ("brown", "orange", "beige", "red", "olive", "yellow"):
            tone = f"{tone} {hue}"  # stained wood: "dark blue wood"
        table = f"{tone} wood".strip()
    elif a.table_texture == "noise":
        table = f"mottled {colour}"
    else:
        table = f"{colour} {a.table_texture}"  # "white marble", "grey fabric"
    t_colour = color_name(a.t_color, detail)
    t = t_colour if a.t_texture == "none" else f"{t_colour} {a.t_texture}"
    return {
        "table": table,
        "table_color": colour,
        "table_material": a.table_texture,
        "t": t,
        "t_color": t_colour,
    }


# ---- held-out band and sampling ---------------------------------------------------------------------
def in_held_out_band(a: Appearance, kinds: Sequence[str] = ("background", "foreground")) -> bool:
    """True when `a` is inside the band around tabletop's look that the training family excludes."""
    ref = _tabletop()
    if (
        "background" in kinds
        and a.table_texture == "wood"
        and delta_e(a.table_color, ref.table_color) < HELD_OUT_DELTA_E
    ):
        return True
    return "foreground" in kinds and delta_e(a.t_color, ref.t_color) < HELD_OUT_DELTA_E


def _random_color(rng: np.random.Generator, sat=(0.0, 1.0), light=(0.1, 0.95)) -> Color:
    h = rng.uniform(0, 1)
    s = rng.uniform(*sat)
    light_ = rng.uniform(*light)
    return _rgb(np.array(colorsys.hls_to_rgb(h, light_, s)) * 255)


def _shade(rgb: Color, factor: float) -> Color:
    return _rgb(np.clip(np.asarray(rgb, float) * factor, 0, 255))


def _sample_background(rng: np.random.Generator, a: Appearance) -> None:
    a.table_texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    if a.table_texture == "wood" and rng.uniform() < 0.6:  # natural woods, light to dark, plus stains
        a.table_color = _rgb(
            np.array(
                colorsys.hls_to_rgb(rng.uniform(0.03, 0.12), rng.uniform(0.15, 0.75), rng.uniform(0.25, 0.7))
            )
            * 255
        )
    elif a.table_texture == "marble":
        a.table_color = _random_color(rng, sat=(0.0, 0.3), light=(0.2, 0.95))
    else:
        a.table_color = _random_color(rng)
    a.table_color2 = (
        _shade(a.table_color, rng.uniform(0.5, 0.85)) if rng.uniform() < 0.8 else _random_color(rng)
    )
    a.table_scale = float(rng.uniform(10, 60))
    a.table_contrast = float(rng.uniform(0.2, 0.9))
    a.table_angle = float(rng.uniform(0, 180))
    a.texture_seed = int(rng.integers(2**31))
    a.wall_color = _random_color(rng) if rng.uniform() < 0.3 else None
    a.agent_color = _random_color(rng, sat=(0.2, 1.0))
    a.agent_highlight_color = None
    a.show_goal = bool(rng.uniform() < 0.5)
    a.goal_color = _random_color(rng, sat=(0.3, 1.0), light=(0.3, 0.85))
    a.light_direction = float(rng.uniform(0, 360))
    a.light_strength = float(rng.uniform(0, 0.35))
    a.vignette = float(rng.uniform(0, 0.4))
    a.shadow_offset = [float(rng.uniform(-12, 12)), float(rng.uniform(-12, 12))]
    a.shadow_blur = float(rng.uniform(0, 16))
    a.shadow_strength = float(rng.uniform(0, 0.5))
    a.noise_sigma = float(rng.choice([0.0, rng.uniform(0, 8)]))
    a.blur_sigma = float(rng.choice([0.0, rng.uniform(0, 1.0)]))


def _sample_foreground(rng: np.random.Generator, a: Appearance) -> None:
    a.t_color = _random_color(rng, sat=(0.0, 1.0), light=(0.15, 0.85))
    a.t_outline_color = _shade(a.t_color, 0.8) if rng.uniform() < 0.3 else None
    a.t_texture = (
        "none" if rng.uniform() < 0.7 else ("wood", "marble", "fabric", "noise")[int(rng.integers(4))]
    )
    a.t_color2 = _shade(a.t_color, rng.uniform(0.5, 0.85))
    a.t_texture_scale = float(rng.uniform(8, 30))


def sample_appearance(
    rng: np.random.Generator,
    kinds: Sequence[str] = ("background", "foreground"),
    held_out: bool = True,
    base: Appearance | str | None = None,
) -> Appearance:
    """A random appearance from the training family: `kinds` chooses what is randomised
    ("background": table, walls, agent, goal, lighting, shadow, noise, blur; "foreground": the T);
    the rest is copied from `base` (default `sim`). With `held_out`, looks inside the band around
    `tabletop` (for the randomised kinds) are redrawn."""
    bad = set(kinds) - {"background", "foreground"}
    if bad:
        raise ValueError(f"kinds must be background and/or foreground; got {sorted(bad)}")
    base = copy.deepcopy(_cached_preset(base or "sim")) if not isinstance(base, Appearance) else base
    for _ in range(1000):
        a = dataclasses.replace(base, name="sampled")
        if "background" in kinds:
            _sample_background(rng, a)
        if "foreground" in kinds:
            _sample_foreground(rng, a)
        a.__post_init__()
        if not (held_out and in_held_out_band(a, kinds)):
            return a
    raise RuntimeError("sample_appearance: could not leave the held-out band in 1000 draws")
