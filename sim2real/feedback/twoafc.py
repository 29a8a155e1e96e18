"""2AFC triplets from the renderer, to measure a semantic encoder the way DreamSim is measured.

Each triplet is (reference, positive, negative), scored on the masked background (table) region:

* reference: a table material under state s1 and lighting l1;
* positive: the SAME material under another state s2 and lighting l2 (lighting = gradient direction
  and strength, vignette, drop shadow, sensor noise, blur);
* negative: a DIFFERENT material under the same state s1 and lighting l1 — so a measure that just
  compares pixels or the mask shape prefers the negative. Negative kinds:
    - `random`: an independent table from the training family (`sample_appearance`);
    - `colour`: same texture kind, scale, contrast, grain and seed; both table colours moved by a
      CIE76 ΔE in [`min_delta_e`, 60] (hard negative);
    - `texture`: same colours, another texture kind, scale and contrast (hard negative), kept only
      when at least one of the two patterns is visible (std of L* >= `min_visibility`).

Lighting (gradient, vignette, drop shadow) changes between reference and positive; the camera
(sensor noise, blur) is one per triplet.

An encoder is correct on a triplet when D(ref, pos) < D(ref, neg), D = 1 − cosine of embeddings of
the masked regions. `evaluate(encoders, triplets)` returns accuracy per negative kind.

    python scripts/eval_encoders.py --n 1200 --out runs/eval_encoders
"""

from __future__ import annotations

import colorsys
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from sim2real.feedback.masks import region_mask
from sim2real.feedback.semantic import Encoder, cosine_distance
from sim2real.utils import tqdm

logger = logging.getLogger(__name__)

NEGATIVE_KINDS = ("random", "colour", "texture")
_TEXTURE_KINDS = ("flat", "wood", "marble", "fabric", "noise")


@dataclass
class Triplets:
    """Arrays of N triplets: images uint8 `(N, H, W, 3)`, background masks bool `(N, H, W)`."""

    ref: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    ref_mask: np.ndarray
    pos_mask: np.ndarray
    neg_mask: np.ndarray
    kind: np.ndarray  # (N,) str: random | colour | texture
    delta_e: np.ndarray  # (N,) ΔE76 between ref and neg table colours (nan for texture negatives)

    def __len__(self) -> int:
        return len(self.ref)


def _random_state(rng: np.random.Generator) -> np.ndarray:
    """Agent x, y and block x, y, angle spread over the frame (world px 0–512)."""
    return np.array(
        [
            rng.uniform(40, 472),
            rng.uniform(40, 472),
            rng.uniform(120, 392),
            rng.uniform(120, 392),
            rng.uniform(-np.pi, np.pi),
        ]
    )


_LIGHT_FIELDS = (
    "light_direction",
    "light_strength",
    "vignette",
    "shadow_offset",
    "shadow_blur",
    "shadow_strength",
)


def _with_lighting(a: Any, rng: np.random.Generator) -> Any:
    """Another lighting of the same scene (the camera's noise and blur stay: one camera per triplet)."""
    return dataclasses.replace(
        a,
        light_direction=float(rng.uniform(0, 360)),
        light_strength=float(rng.uniform(0, 0.35)),
        vignette=float(rng.uniform(0, 0.4)),
        shadow_offset=[float(rng.uniform(-12, 12)), float(rng.uniform(-12, 12))],
        shadow_blur=float(rng.uniform(0, 16)),
        shadow_strength=float(rng.uniform(0, 0.5)),
    )


def _with_camera(a: Any, rng: np.random.Generator) -> Any:
    return dataclasses.replace(a, noise_sigma=float(rng.uniform(0, 6)), blur_sigma=float(rng.uniform(0, 0.8)))


def pattern_visibility(a: Any, size: int = 96) -> float:
    """Std of L* (CIE Lab) over the bare table as the camera sees it: ~0 for a flat or invisible pattern."""
    import cv2

    from envs.pusht.textures import texture_image

    tex = texture_image(
        a.table_texture,
        a.table_color,
        a.table_color2,
        a.table_contrast,
        (size, size),
        size / 512.0,
        a.table_scale,
        a.table_angle,
        a.texture_seed,
    )
    if a.blur_sigma > 0:
        tex = cv2.GaussianBlur(tex, (0, 0), a.blur_sigma * size / 96.0)
    return float(cv2.cvtColor(tex.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)[..., 0].std())


_TABLE_FIELDS = (
    "table_texture",
    "table_color",
    "table_color2",
    "table_scale",
    "table_contrast",
    "table_angle",
    "texture_seed",
)


def _recolour(
    a: Any,
    rng: np.random.Generator,
    min_delta_e: float,
    max_delta_e: float = 60.0,
    fields: tuple[str, ...] = ("table_color", "table_color2"),
) -> tuple[Any, float]:
    """Same pattern, the colours in `fields` moved by one HLS transform; ΔE76 of the first in [min, max]."""
    from envs.pusht.appearance import delta_e

    for _ in range(200):
        dh, dl, ds = rng.uniform(-0.5, 0.5), rng.uniform(-0.3, 0.3), rng.uniform(-0.4, 0.4)

        def move(c: list[int], dh: float = dh, dl: float = dl, ds: float = ds) -> list[int]:
            h, light, s = colorsys.rgb_to_hls(*(np.asarray(c) / 255.0))
            rgb = colorsys.hls_to_rgb(
                (h + dh) % 1.0, float(np.clip(light + dl, 0.08, 0.95)), float(np.clip(s + ds, 0, 1))
            )
            return [int(round(v * 255)) for v in rgb]

        moved = {f: move(getattr(a, f)) for f in fields if getattr(a, f) is not None}
        d = delta_e(getattr(a, fields[0]), moved[fields[0]])
        if min_delta_e <= d <= max_delta_e:
            return dataclasses.replace(a, **moved), d
    raise RuntimeError("could not find a recolouring in the ΔE range")


def _retexture(a: Any, rng: np.random.Generator, min_visibility: float, size: int) -> Any:
    """Same colours, another texture kind; redrawn until at least one of the two patterns is visible
    (std of L* >= min_visibility), so the negative differs in a way a person could see."""
    v_ref = pattern_visibility(a, size)
    kinds = [k for k in _TEXTURE_KINDS if k != a.table_texture]
    for _ in range(100):
        b = dataclasses.replace(
            a,
            table_texture=str(rng.choice(kinds)),
            table_scale=float(rng.uniform(10, 60)),
            table_contrast=float(rng.uniform(0.3, 0.9)),
        )
        if max(v_ref, pattern_visibility(b, size)) >= min_visibility:
            return b
    return None


def _material(rng: np.random.Generator) -> Any:
    from envs.pusht.appearance import load_appearance, sample_appearance

    if rng.uniform() < 0.1:  # the target look itself now and then
        return dataclasses.replace(load_appearance("tabletop"), texture_seed=int(rng.integers(2**31)))
    return sample_appearance(rng, kinds=("background",), held_out=False)


def _table_negative(
    base: Any, kind: str, rng: np.random.Generator, min_delta_e: float, min_visibility: float, size: int
) -> tuple[Any, float]:
    """Another table material for the background triplets (None when a texture pair is invisible)."""
    from envs.pusht.appearance import delta_e

    if kind == "texture":
        return _retexture(base, rng, min_visibility, size), float("nan")
    if kind == "random":
        other = _material(rng)
        neg = dataclasses.replace(base, **{f: getattr(other, f) for f in _TABLE_FIELDS})
        return neg, delta_e(base.table_color, neg.table_color)
    return _recolour(base, rng, min_delta_e)


_T_FIELDS = ("t_color", "t_color2", "t_texture", "t_texture_scale", "t_outline_color")


def _t_material(rng: np.random.Generator) -> Any:
    """A whole random look whose T-block is the material (20 % of them with tabletop's T)."""
    from envs.pusht.appearance import load_appearance, sample_appearance

    a = sample_appearance(rng, held_out=False)
    if rng.uniform() < 0.2:
        tab = load_appearance("tabletop")
        a = dataclasses.replace(a, **{f: getattr(tab, f) for f in _T_FIELDS})
    return a


def _t_negative(base: Any, kind: str, rng: np.random.Generator, min_delta_e: float) -> tuple[Any, float]:
    """Another T material for the foreground triplets: random / recoloured / other paint texture."""
    from envs.pusht.appearance import delta_e, sample_appearance

    if kind == "random":
        other = sample_appearance(rng, kinds=("foreground",), held_out=False)
        neg = dataclasses.replace(base, **{f: getattr(other, f) for f in _T_FIELDS})
        return neg, delta_e(base.t_color, neg.t_color)
    if kind == "colour":
        return _recolour(base, rng, min_delta_e, fields=("t_color", "t_color2", "t_outline_color"))
    kinds = [k for k in ("none", "wood", "marble", "fabric", "noise") if k != base.t_texture]
    shade = float(rng.uniform(0.5, 0.75))  # a second paint colour dark enough for the pattern to show
    return dataclasses.replace(
        base,
        t_texture=str(rng.choice(kinds)),
        t_color2=[int(round(c * shade)) for c in base.t_color],
        t_texture_scale=float(rng.uniform(8, 30)),
    ), float("nan")


def make_triplets(
    n: int = 1200,
    seed: int = 0,
    size: int = 96,
    kind_weights: tuple[float, float, float] = (0.4, 0.3, 0.3),
    min_delta_e: float = 15.0,
    min_visibility: float = 3.0,
    region: Literal["background", "foreground"] = "background",
) -> Triplets:
    """Render `n` triplets (seeded); negatives drawn by `kind_weights` over `NEGATIVE_KINDS`.

    region: `background` varies the table (the measurement of issue 4); `foreground` varies the
    T-block's paint (colour, or pattern kind with a visible second colour) and scores the T region.
    """
    from envs.pusht.render import render_state

    rng = np.random.default_rng(seed)
    out: dict[str, list] = {
        k: [] for k in ("ref", "pos", "neg", "ref_lab", "pos_lab", "neg_lab", "kind", "de")
    }
    p = np.asarray(kind_weights, float) / np.sum(kind_weights)
    pbar = tqdm(total=n, desc="2AFC triplets")
    while len(out["kind"]) < n:
        if region == "foreground":
            base = _with_camera(_t_material(rng), rng)
            kind = NEGATIVE_KINDS[int(rng.choice(3, p=p))]
            neg_mat, de = _t_negative(base, kind, rng, min_delta_e)
        else:
            base = _with_camera(_material(rng), rng)
            kind = NEGATIVE_KINDS[int(rng.choice(3, p=p))]
            neg_mat, de = _table_negative(base, kind, rng, min_delta_e, min_visibility, size)
            if neg_mat is None:  # two patterns nobody could tell apart: draw another triplet
                continue
        s1, s2 = _random_state(rng), _random_state(rng)
        light1 = _with_lighting(base, rng)
        light2 = _with_lighting(base, rng)
        neg_light = dataclasses.replace(neg_mat, **{f: getattr(light1, f) for f in _LIGHT_FIELDS})
        noise_seed = int(rng.integers(2**31))
        for i, (key, st, app) in enumerate(
            (("ref", s1, light1), ("pos", s2, light2), ("neg", s1, neg_light))
        ):
            img, lab = render_state(st, app, size=size, rng=np.random.default_rng(noise_seed + i))
            out[key].append(img)
            out[key + "_lab"].append(lab)
        out["kind"].append(kind)
        out["de"].append(de)
        pbar.update(1)
    pbar.close()
    bg = {k: region_mask(np.stack(out[k + "_lab"]), region) for k in ("ref", "pos", "neg")}
    return Triplets(
        ref=np.stack(out["ref"]),
        pos=np.stack(out["pos"]),
        neg=np.stack(out["neg"]),
        ref_mask=bg["ref"],
        pos_mask=bg["pos"],
        neg_mask=bg["neg"],
        kind=np.asarray(out["kind"]),
        delta_e=np.asarray(out["de"], float),
    )


# --- baselines ------------------------------------------------------------------------------------


class ColourHistogramEncoder:
    """Baseline: masked joint RGB histogram (`bins`³), square-rooted (cosine = Bhattacharyya)."""

    name = "colour-histogram"

    def __init__(self, bins: int = 8):
        self.bins = bins

    def embed(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        q = (images.astype(np.int64) * self.bins) // 256  # (B, H, W, 3)
        idx = (q[..., 0] * self.bins + q[..., 1]) * self.bins + q[..., 2]  # (B, H, W)
        out = np.zeros((len(images), self.bins**3), np.float32)
        for i in range(len(images)):
            out[i] = np.bincount(idx[i][masks[i]], minlength=self.bins**3)
        return np.sqrt(out / out.sum(axis=1, keepdims=True))


class RawPixelEncoder:
    """Baseline: the masked frame m ⊙ I flattened (pixel-space cosine)."""

    name = "raw-pixel"

    def embed(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        return (images.astype(np.float32) / 255.0 * masks[..., None]).reshape(len(images), -1)


def correct(encoder: Encoder, t: Triplets, batch: int = 256) -> np.ndarray:
    """bool `(N,)`: D(ref, pos) < D(ref, neg) per triplet."""
    res = []
    for s in range(0, len(t), batch):
        sl = slice(s, s + batch)
        er = encoder.embed(t.ref[sl], t.ref_mask[sl])
        ep = encoder.embed(t.pos[sl], t.pos_mask[sl])
        en = encoder.embed(t.neg[sl], t.neg_mask[sl])
        dp = np.diagonal(cosine_distance(er, ep))
        dn = np.diagonal(cosine_distance(er, en))
        res.append(dp < dn)
    return np.concatenate(res)


def evaluate(encoders: dict[str, Encoder], t: Triplets) -> list[dict]:
    """One row per encoder: accuracy overall and per negative kind (and ΔE bins of colour negatives)."""
    rows = []
    colour = t.kind == "colour"
    bins = [(15, 25), (25, 40), (40, 61)]
    for name, enc in encoders.items():
        ok = correct(enc, t)
        row: dict[str, Any] = {"encoder": name, "n": len(t), "all": float(ok.mean())}
        for k in NEGATIVE_KINDS:
            sel = t.kind == k
            row[k] = float(ok[sel].mean()) if sel.any() else float("nan")
        for lo, hi in bins:
            sel = colour & (t.delta_e >= lo) & (t.delta_e < hi)
            row[f"colour dE {lo}-{hi - 1}"] = float(ok[sel].mean()) if sel.any() else float("nan")
        rows.append(row)
    return rows
