"""`sim2real specialize`: train an image-editing specialist from a few real frames (D3PO from AI feedback).

    sim2real specialize --refs real/*.png --edit background --out runs/bg
    sim2real specialize --refs real/*.png --edit foreground --out runs/fg --sim runs/bg_edited.zarr
    sim2real specialize --refs real/*.png --edit background --out runs/bg specialize/preset=quick

The output folder is a specialist: `EditPipeline.from_pretrained(out)` loads it (LoRA merged into the
UNet), `specialist.json` holds how to use it (instruction, guidance scales, steps, edit kind, ref
hashes), `refs/` the reference frames and their masks as used (with overlays to check), plus
`config.yaml`, `metrics.jsonl`, `samples/` (a grid per epoch) and `checkpoints/` (resume).

Train the foreground (T-block) specialist on frames the background specialist has already edited
(`sim2real edit ... --specialist runs/bg` then `--sim` that zarr), as at inference the T-block edit
runs second.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from sim2real.errors import Sim2RealError
from sim2real.feedback.score import FeedbackConfig
from sim2real.training.d3po import METHOD_NAMES, D3POConfig, Method
from sim2real.training.hive import HiveConfig

logger = logging.getLogger(__name__)

SPECIALIST_JSON = "specialist.json"


@dataclass
class SpecializeConfig:
    """One specialist run. Defaults per edit kind live in `configs/specialize_{background,foreground}.yaml`.

    The fields you will change: `refs`, `out`, `instruction`, `sim`, `base`, and the budget
    `train.steps` (or `specialize/preset=quick`).

    refs: reference (real) frames: files, folders or globs; any size / PNG / JPG / grey / RGBA
        (converted to RGB `image_size`² with a warning). At least one readable frame.
    out: output folder (the specialist). An existing run folder is resumed from its last checkpoint.
    edit: `background` (the table) or `foreground` (the T-block): picks the mask region scored.
    instruction: the edit instruction given to the editor for every frame.
    ref_masks: label maps (0 bg, 1 T, 2 agent, 3 goal) or binary T masks for the refs, one per ref in
        the same order; default automatic (`sim2real.feedback.masks.auto_ref_masks`).
    t_color_hint: RGB of the real T-block, helps the automatic masks (None = largest saturated blob).
    sim: sim zarr (data/img + data/mask) to draw training frames from; None renders them on the fly.
    appearance: appearance of the on-the-fly renders (ignored with `sim`).
    base: base editor folder; None = the shipped tiny base editor (`load_base_editor()`).
    method: `d3po` (listwise Plackett–Luce for k > 2), or HIVE's offline reward fine-tuning
        `hive-weighted` / `hive-condition` (`sim2real.training.hive`; same budget: sampled edits).
    image_size: frame size the editor works at (refs and sim frames are brought to it).
    frame_pool: how many training frames to hold in memory (drawn from the zarr or rendered).
    eval_frames: held-out frames scored at every evaluation (the training curve) and shown in grids.
    seed: seeds frames, sampling noise and LoRA init.
    overwrite: start afresh in an existing `out` instead of resuming.
    train: trainer settings (`sim2real.training.d3po.D3POConfig`).
    feedback: scores and ranking (`sim2real.feedback.score.FeedbackConfig`).
    hive: HIVE's reward model and loss settings (`sim2real.training.hive.HiveConfig`; HIVE methods only).
    """

    refs: list[str] = field(default_factory=list)
    out: str = ""
    edit: Literal["background", "foreground"] = "background"
    instruction: str = ""
    ref_masks: list[str] | None = None
    t_color_hint: list[int] | None = None
    sim: str | None = None
    appearance: str = "sim"
    base: str | None = None
    method: Method = "d3po"
    image_size: int = 96
    frame_pool: int = 256
    eval_frames: int = 4
    seed: int = 0
    overwrite: bool = False
    train: D3POConfig = field(default_factory=D3POConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    hive: HiveConfig = field(default_factory=HiveConfig)

    def __post_init__(self) -> None:
        if self.method not in METHOD_NAMES:
            raise ValueError(f"method must be one of {METHOD_NAMES}; got {self.method=}")
        if not self.out:
            raise ValueError("out must name the specialist's output folder")
        if not self.refs:
            raise ValueError("refs must name at least one reference frame")
        if self.edit not in ("background", "foreground"):
            raise ValueError(f"edit must be background or foreground; got {self.edit=}")
        if not self.instruction.strip():
            raise ValueError(f"instruction must not be empty; got {self.instruction=}")
        if self.ref_masks is not None and len(self.ref_masks) == 0:
            self.ref_masks = None
        if self.t_color_hint is not None and len(self.t_color_hint) != 3:
            raise ValueError(f"t_color_hint must be an RGB triple; got {self.t_color_hint=}")
        if self.image_size < 16 or self.frame_pool < 1 or self.eval_frames < 1:
            raise ValueError(
                f"need image_size >= 16, frame_pool >= 1, eval_frames >= 1; got {self.image_size=}, {self.frame_pool=}, {self.eval_frames=}"
            )
        if self.train.frames_per_step > self.frame_pool:
            raise ValueError(
                f"train.frames_per_step must be <= frame_pool; got {self.train.frames_per_step=}, {self.frame_pool=}"
            )


# --- reference frames and their masks ----------------------------------------------------------------


def load_refs(items: list[str], size: int) -> tuple[np.ndarray, list[Path]]:
    """Reference frames → uint8 `(N, size, size, 3)` and the files they came from."""
    from sim2real.data.images import expand_image_paths, load_images

    paths = expand_image_paths(items)
    return load_images(paths, size=size), paths


def ref_labels_for(
    refs: np.ndarray, mask_items: list[str] | None, t_color_hint: list[int] | None
) -> np.ndarray:
    """Label maps of the refs: the user's masks (one per ref) or automatic ones."""
    from sim2real.feedback.masks import auto_ref_masks, load_ref_masks

    if mask_items:
        from sim2real.data.images import expand_image_paths

        paths = expand_image_paths(mask_items)
        if len(paths) != len(refs):
            raise Sim2RealError(
                f"ref_masks: need one mask per reference frame; got {len(paths)} masks for {len(refs)} refs"
            )
        return load_ref_masks([str(p) for p in paths], size=refs.shape[1])
    hint = tuple(int(v) for v in t_color_hint) if t_color_hint else None
    return auto_ref_masks(refs, t_color_hint=hint)


def image_hash(image: np.ndarray) -> str:
    """Short content hash of one uint8 frame (provenance of refs in specialists and edited data)."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]


def save_refs(folder: Path, refs: np.ndarray, labels: np.ndarray, paths: list[Path]) -> list[dict]:
    """Write the refs as used (`ref_XX.png`), their label maps (`ref_XX_mask.png`) and overlays."""
    import cv2

    from sim2real.feedback.masks import write_mask_overlay
    from sim2real.utils import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for i, (img, lab, src) in enumerate(zip(refs, labels, paths, strict=True)):
        for name, arr in (
            (f"ref_{i:02d}.png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR)),
            (f"ref_{i:02d}_mask.png", lab),
        ):
            with atomic_path(folder / name, suffix=".png") as tmp:
                cv2.imwrite(str(tmp), arr)
        write_mask_overlay(folder / f"ref_{i:02d}_overlay.png", img, lab)
        index.append({"file": f"ref_{i:02d}.png", "source": str(src), "sha256_16": image_hash(img)})
    return index


# --- training frames -------------------------------------------------------------------------------------


class FrameSource:
    """Sim frames with their exact label maps: a pool for training plus a fixed held-out set.

    From a zarr (`data/img` + `data/mask`; e.g. `sim2real render` output, or a dataset the background
    specialist has edited) or, with `sim=None`, rendered on the fly from random Push-T states.
    Frames are brought to `size`² (nearest for labels). Held-out frames never enter the pool.
    """

    def __init__(
        self, sim: str | None, size: int, pool: int, n_eval: int, seed: int = 0, appearance: str = "sim"
    ):
        rng = np.random.default_rng(seed)
        if sim is None:
            images, labels = _render_frames(pool + n_eval, size, appearance, rng)
        else:
            images, labels = _zarr_frames(sim, pool + n_eval, size, rng)
        self.eval_images, self.eval_labels = images[:n_eval], labels[:n_eval]
        self.images, self.labels = images[n_eval:], labels[n_eval:]
        self.source = sim or f"rendered:{appearance}"

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n distinct training frames: uint8 `(n, H, W, 3)` and labels `(n, H, W)`."""
        idx = rng.choice(len(self.images), size=n, replace=len(self.images) < n)
        return self.images[idx], self.labels[idx]


def _render_frames(
    n: int, size: int, appearance: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    from envs.pusht.physics import sample_initial_state
    from envs.pusht.render import render_state

    pairs = [render_state(sample_initial_state(rng), appearance, size=size, rng=rng) for _ in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _read_rows(arr, idx: np.ndarray) -> np.ndarray:
    """Rows `idx` (sorted) of a time-chunked array, reading each chunk once."""
    step = int(arr.chunks[0])
    out = []
    for c in np.unique(idx // step):
        lo = int(c) * step
        block = np.asarray(arr[lo : min(lo + step, len(arr))])
        out.append(block[idx[(idx >= lo) & (idx < lo + step)] - lo])
    return np.concatenate(out)


def _zarr_frames(path: str, n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    from sim2real.data.replay import open_replay

    store = open_replay(path, require=("img", "mask"))
    if store.n_frames < 2:
        raise Sim2RealError(f"{path}: need at least 2 frames to train on; got {store.n_frames}")
    idx = np.sort(rng.choice(store.n_frames, size=min(n, store.n_frames), replace=False))
    images, labels = _read_rows(store.data["img"], idx), _read_rows(store.data["mask"], idx)
    order = rng.permutation(len(idx))
    images, labels = images[order], labels[order]
    if images.shape[1:3] != (size, size):
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
        labels = np.stack([cv2.resize(lb, (size, size), interpolation=cv2.INTER_NEAREST) for lb in labels])
    if len(images) < n:
        logger.info("%s: %d frames available for a pool of %d; reusing them", path, len(images), n)
    return images, labels


# --- the command ----------------------------------------------------------------------------------------


def run_specialize(cfg: SpecializeConfig) -> Path:
    """Train one specialist and write its folder; returns the folder."""
    from sim2real.config import to_dict
    from sim2real.training.d3po import SpecialistTrainer, load_editor
    from sim2real.utils import write_json

    out = Path(cfg.out)
    # 1. reference frames and their masks (saved for the user to check)
    refs, paths = load_refs(cfg.refs, cfg.image_size)
    labels = ref_labels_for(refs, cfg.ref_masks, cfg.t_color_hint)
    ref_index = save_refs(out / "refs", refs, labels, paths)
    logger.info("specialize: %d reference frames, masks and overlays in %s", len(refs), out / "refs")
    _write_config(out / "config.yaml", to_dict(cfg))

    # 2. training frames, editor, trainer
    frames = FrameSource(cfg.sim, cfg.image_size, cfg.frame_pool, cfg.eval_frames, cfg.seed, cfg.appearance)
    pipe = load_editor(cfg.base)
    trainer = SpecialistTrainer(
        cfg.train,
        pipe,
        frames,
        refs,
        labels,
        cfg.edit,
        cfg.instruction,
        cfg.feedback,
        out,
        cfg.method,
        cfg.seed,
    )
    # 3. fit (resumes from out/checkpoints unless overwrite), then export
    if cfg.method == "d3po":
        trainer.fit(resume=not cfg.overwrite)
    else:
        from sim2real.training.hive import fit_hive

        fit_hive(trainer, cfg.hive, resume=not cfg.overwrite)
    trainer.export(out)
    info = {
        "edit": cfg.edit,
        "instruction": trainer.instruction,  # hive-condition asks for "… five out of five"
        "method": cfg.method,
        "base": cfg.base or "shipped",
        "image_size": cfg.image_size,
        "sampling": trainer.sampling_settings(),
        "refs": ref_index,
        "steps": trainer.step_count,
    }
    write_json(out / SPECIALIST_JSON, info)
    print(f"specialist written to {out}  (metrics: {out / 'metrics.jsonl'}, samples: {out / 'samples'})")
    return out


def _write_config(path: Path, d: dict) -> None:
    from omegaconf import OmegaConf

    from sim2real.utils import atomic_path

    with atomic_path(path, suffix=".yaml") as tmp:
        tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(d)))


def read_specialist(folder: str | Path) -> dict:
    """`specialist.json` of a specialist folder (one-line error if it is not one)."""
    p = Path(folder) / SPECIALIST_JSON
    if not p.exists():
        raise Sim2RealError(
            f"{folder} is not a specialist folder (no {SPECIALIST_JSON}); train one with `sim2real specialize`"
        )
    return json.loads(p.read_text())
