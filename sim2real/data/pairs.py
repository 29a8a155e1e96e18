"""Seeded, streaming edit pairs for the base editor: one Push-T state drawn under two appearances.

InstructPix2Pix learned from (input, instruction, edited) triplets made by an oracle; the simulator is a
perfect one. For a random state we draw an appearance A (often Diffusion Policy's own `sim` look,
because specialists edit sim frames), then B = A with only the table, only the T-block, or both
re-drawn from the training family (`envs.pusht.appearance.sample_appearance`, which never enters the
held-out band around the `tabletop` stand-in), render the state under both with the *same* sensor
noise, and write an instruction that names the change in plain words.

    gen = EditPairGenerator(seed=0)
    batch = gen.batch(16)   # dict of stacked arrays + list of instructions
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from envs.pusht.appearance import (
    Appearance,
    describe_appearance,
    in_held_out_band,
    load_appearance,
    sample_appearance,
)
from envs.pusht.physics import sample_initial_state
from envs.pusht.render import render_state

EditKind = Literal["background", "foreground", "both"]
EDIT_KINDS: tuple[str, ...] = ("background", "foreground", "both")

# Which appearance fields each edit kind changes. Lighting, shadows, vignette, blur and noise stay, so
# that everything outside the edited region is identical between input and target (a shadow falls on
# the goal marker too, and the T's pattern seed is pinned in table edits: `EditPairGenerator.sample`).
# Diffusion Policy's wall segments are drawn on the table and belong to it: a new table is drawn with
# its own walls or none (a real table has none), so "make the table wooden" also removes `sim`'s walls.
TABLE_FIELDS = (
    "table_texture",
    "table_color",
    "table_color2",
    "table_scale",
    "table_contrast",
    "table_angle",
    "texture_seed",
    "wall_color",
)
T_FIELDS = ("t_color", "t_outline_color", "t_texture", "t_color2", "t_texture_scale")

BACKGROUND_TEMPLATES = (
    "make the table {table}",
    "turn the table into {table}",
    "make the background look like {table}",
    "change the table to {table}",
    "replace the table with {table}",
    "make the surface {table}",
)
FOREGROUND_TEMPLATES = (
    "turn the t-shaped block {t}",
    "make the t {t}",
    "paint the t block {t}",
    "change the color of the t-shaped block to {t}",
    "make the block {t}",
)
BOTH_TEMPLATES = (
    "make the table {table} and the t {t}",
    "turn the table into {table} and paint the t block {t}",
)
# Words of the default specialist instructions (they must tokenize without [UNK] too).
EXTRA_WORDS = "make the table look like a real wooden photo realistic turn t-shaped block orange".split()
COLOR_WORDS = (
    "white black grey light dark red brown orange yellow olive green teal blue purple pink "
    "beige grey-blue grey-teal grey-green grey-purple mottled very muted bright"
).split()
MATERIAL_WORDS = ("wood marble fabric noise flat").split()


def instruction_vocabulary() -> list[str]:
    """Every word an instruction of this module (or a default specialist instruction) can contain."""
    words: set[str] = set(EXTRA_WORDS) | set(COLOR_WORDS) | set(MATERIAL_WORDS)
    for template in BACKGROUND_TEMPLATES + FOREGROUND_TEMPLATES + BOTH_TEMPLATES:
        words |= set(re.sub(r"\{\w+\}", " ", template).split())
    return sorted(words)


@dataclass
class EditPair:
    input: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray  # (H, W) uint8 — 0 background, 1 T, 2 agent, 3 goal
    edit_mask: np.ndarray  # (H, W) bool — where the instruction asks for a change
    instruction: str
    kind: str
    source: Appearance
    target_appearance: Appearance
    style: np.ndarray | None = None  # (H, W, 3) uint8: the target look at another state (a visual prompt)
    coverage: np.ndarray | None = None  # (2, H, W) float32: how much of each pixel the edit changes, per part
    detail: str = "coarse"  # how closely the instruction names the colours (`describe_appearance`)


def edit_region(labels: np.ndarray, kind: str) -> np.ndarray:
    """The pixels an edit of `kind` may change: the table (label 0), the T (1), or both."""
    if kind == "background":
        return labels == 0
    if kind == "foreground":
        return labels == 1
    if kind == "both":
        return (labels == 0) | (labels == 1)
    raise ValueError(f"kind must be one of {EDIT_KINDS}; got {kind!r}")


def part_coverage(state: np.ndarray, appearance: Appearance, size: int = 96) -> np.ndarray:
    """How much of each pixel the table and the T-shaped block make up in `appearance`'s rendering
    of `state` → (2, H, W) float32 in [0, 1] (rows in `PARTS` order: table, T).

    The edit region labels pixel centres; a pixel on an anti-aliased rim (the agent disk over the
    table, the goal drawn on it, the T's outline) mixes both sides, and the camera blur spreads each
    part a pixel further. An edit of the table changes such a pixel by its table share only, which is
    what this measures: the part is rendered flat black and flat white, everything else fixed, with the
    appearance's blur but no lighting or noise, and the difference is the part's share of each pixel.
    Walls are drawn on the table and count as table (a table edit re-draws or removes them).
    """
    flat = dict(light_strength=0.0, vignette=0.0, noise_sigma=0.0, shadow_strength=0.0, name="coverage")
    black, white = [0, 0, 0], [255, 255, 255]

    def look(table, t):
        return dataclasses.replace(
            appearance,
            table_texture="flat",
            table_color=table,
            table_color2=table,
            wall_color=None if appearance.wall_color is None else table,
            t_color=t,
            t_texture="none",
            t_outline_color=None if appearance.t_outline_color is None else t,
            **flat,
        )

    base, _ = render_state(state, look(black, black), size)
    table, _ = render_state(state, look(white, black), size)
    tee, _ = render_state(state, look(black, white), size)
    base = base.astype(np.float32).mean(-1)
    cov = np.stack([table.astype(np.float32).mean(-1) - base, tee.astype(np.float32).mean(-1) - base])
    return np.clip(cov / 255.0, 0.0, 1.0)


def edit_coverage(state: np.ndarray, appearance: Appearance, kind: str, size: int = 96) -> np.ndarray:
    """`part_coverage` of the parts an edit of `kind` changes (the others zero) → (2, H, W) float32."""
    edited = {"background": (1, 0), "foreground": (0, 1), "both": (1, 1)}.get(kind)
    if edited is None:
        raise ValueError(f"kind must be one of {EDIT_KINDS}; got {kind!r}")
    return part_coverage(state, appearance, size) * np.asarray(edited, np.float32)[:, None, None]


def _copy_fields(dst: Appearance, src: Appearance, fields: Sequence[str]) -> Appearance:
    return dataclasses.replace(dst, name="target", **{f: getattr(src, f) for f in fields})


def instruction_for(kind: str, target: Appearance, rng: np.random.Generator, detail: str = "coarse") -> str:
    """An instruction for an edit of `kind` towards `target`, from a random template; `detail`: how
    closely it names the colours (`describe_appearance`)."""
    words = describe_appearance(target, detail)
    templates = {
        "background": BACKGROUND_TEMPLATES,
        "foreground": FOREGROUND_TEMPLATES,
        "both": BOTH_TEMPLATES,
    }[kind]
    template = templates[int(rng.integers(len(templates)))]
    return template.format(table=words["table"], t=words["t"])


class EditPairGenerator:
    """Infinite, seeded stream of `EditPair`s (no disk). Same seed → same pairs.

    kinds / kind_probs: which edits to draw and how often.
    sim_input_prob: probability that the input look is exactly `sim` (what specialists edit).
    held_out: keep every drawn look outside the band around `tabletop` (always on for training).
    with_style: also render the target look at another random state, as a visual prompt.
    with_coverage: also give each pair's `edit_coverage` (soft edit region; no extra random draws,
        so the pairs are the same as without it).
    fine_words: probability that the instruction names the colours in fine detail ("very light muted
        blue fabric") instead of coarse words ("light blue fabric"). The coin comes from the pair's
        noise seed, not the stream, so states, looks and renderings do not depend on it.
    """

    def __init__(
        self,
        seed: int = 0,
        size: int = 96,
        kinds: Sequence[str] = EDIT_KINDS,
        kind_probs: Sequence[float] | None = None,
        sim_input_prob: float = 0.3,
        held_out: bool = True,
        with_style: bool = False,
        with_coverage: bool = False,
        fine_words: float = 0.5,
    ):
        bad = set(kinds) - set(EDIT_KINDS)
        if bad:
            raise ValueError(f"kinds must be among {EDIT_KINDS}; got {sorted(bad)}")
        self.seed, self.size, self.kinds = seed, size, tuple(kinds)
        probs = np.asarray(kind_probs if kind_probs is not None else [1.0] * len(self.kinds), float)
        if len(probs) != len(self.kinds) or probs.min() < 0 or probs.sum() <= 0:
            raise ValueError(f"kind_probs must give one weight >= 0 per kind; got {kind_probs=}")
        self.kind_probs = probs / probs.sum()
        self.sim_input_prob, self.held_out, self.with_style = sim_input_prob, held_out, with_style
        self.with_coverage = with_coverage
        if not 0.0 <= fine_words <= 1.0:
            raise ValueError(f"fine_words is a probability in [0, 1]; got {fine_words}")
        self.fine_words = float(fine_words)
        self._sim = load_appearance("sim")
        self.rng = np.random.default_rng(seed)

    def sample(self, rng: np.random.Generator | None = None) -> EditPair:
        rng = rng if rng is not None else self.rng
        kind = str(rng.choice(self.kinds, p=self.kind_probs))
        state = sample_initial_state(rng)
        if rng.uniform() < self.sim_input_prob:
            source = self._sim
        else:
            source = sample_appearance(
                rng, ("background", "foreground"), held_out=self.held_out, base=self._sim
            )
        fresh = sample_appearance(rng, ("background", "foreground"), held_out=self.held_out, base=self._sim)
        fields = {"background": TABLE_FIELDS, "foreground": T_FIELDS, "both": TABLE_FIELDS + T_FIELDS}[kind]
        target_app = _copy_fields(source, fresh, fields)
        if kind == "background" and source.t_texture_seed is None:  # a new table seed keeps the T's pattern
            target_app = dataclasses.replace(target_app, t_texture_seed=source.texture_seed + 1)
        if self.held_out and in_held_out_band(target_app):  # only possible via an unchanged source part
            return self.sample(rng)
        noise_seed = int(rng.integers(2**31))
        inp, labels = render_state(state, source, self.size, rng=np.random.default_rng(noise_seed))
        tgt, _ = render_state(state, target_app, self.size, rng=np.random.default_rng(noise_seed))
        fine = np.random.default_rng([noise_seed, 1]).uniform() < self.fine_words
        detail = "fine" if fine else "coarse"
        style = None
        if self.with_style:
            style, _ = render_state(sample_initial_state(rng), target_app, self.size, rng=rng)
        return EditPair(
            input=inp,
            target=tgt,
            labels=labels,
            edit_mask=edit_region(labels, kind),
            instruction=instruction_for(kind, target_app, rng, detail),
            kind=kind,
            source=source,
            target_appearance=target_app,
            style=style,
            coverage=edit_coverage(state, source, kind, self.size) if self.with_coverage else None,
            detail=detail,
        )

    def __iter__(self) -> Iterator[EditPair]:
        while True:
            yield self.sample()

    def batch(self, n: int) -> dict:
        """`n` pairs stacked: input/target (n,H,W,3) uint8, labels (n,H,W), edit_mask (n,H,W), instruction,
        kind, detail (and style (n,H,W,3), coverage (n,2,H,W) when asked for)."""
        pairs = [self.sample() for _ in range(n)]
        keys = ("input", "target", "labels", "edit_mask") + (("style",) if self.with_style else ())
        keys += ("coverage",) if self.with_coverage else ()
        out = {k: np.stack([getattr(p, k) for p in pairs]) for k in keys}
        out["instruction"] = [p.instruction for p in pairs]
        out["kind"] = [p.kind for p in pairs]
        out["detail"] = [p.detail for p in pairs]
        return out
