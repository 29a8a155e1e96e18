"""`sim2real edit`: repaint every frame of a zarr store with one or more specialists, in order.

    sim2real edit --in sim.zarr --out edited.zarr --specialist runs/bg --specialist runs/fg --refs real/*.png

Each specialist edits the output of the previous one (background first, then the T-block), each with
the same reference frames as its visual prompt. Every other array (`state`, `action`, `mask`, …) is
copied unchanged; `attrs["edits"]` records each pass (specialist, instruction, ref hashes, guidance
scales, steps, seed). Work is saved episode by episode (`ReplayWriter`), so an interrupted run
resumes where it stopped; sampling noise is seeded per (episode, batch, pass), so a resumed run
writes what an uninterrupted one would have.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sim2real.errors import Sim2RealError

logger = logging.getLogger(__name__)


@dataclass
class EditConfig:
    """The `edit` command. The fields you will change: `input`, `out`, `specialists`, `refs`.

    input: zarr store to edit (needs `data/img`).
    out: edited zarr store; an existing one is resumed (same input and specialists) unless `overwrite`.
    specialists: specialist folders (`sim2real specialize` output), applied in this order.
    refs: reference frames for the visual prompt (files, folders, globs), shared by all specialists.
    seed: base seed of the sampling noise.
    batch_size: frames per editor call.
    num_inference_steps, guidance_scale, image_guidance_scale, style_guidance_scale, eta: override
        every specialist's own sampling settings (its `specialist.json`) when set.
    device: `auto` (CUDA if available), `cpu` or `cuda`. num_threads: torch CPU threads.
    overwrite: replace an existing output instead of resuming it.
    """

    input: Path = Path()
    out: Path = Path()
    specialists: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    seed: int = 0
    batch_size: int = 16
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    image_guidance_scale: float | None = None
    style_guidance_scale: float | None = None
    eta: float | None = None
    device: str = "auto"
    num_threads: int = 2
    overwrite: bool = False

    def __post_init__(self) -> None:
        if str(self.input) in ("", ".") or str(self.out) in ("", "."):
            raise ValueError(f"input and out must name zarr stores; got {self.input=}, {self.out=}")
        if Path(self.input).resolve() == Path(self.out).resolve():
            raise ValueError(f"out must differ from input; got {self.out=}")
        if not self.specialists:
            raise ValueError("specialists must name at least one specialist folder")
        if not self.refs:
            raise ValueError("refs must name at least one reference frame")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {self.batch_size=}")
        if self.num_inference_steps is not None and self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1; got {self.num_inference_steps=}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda; got {self.device=}")


@dataclass
class EditPass:
    """One specialist with its refs and sampling settings, ready to edit batches."""

    folder: str
    info: dict
    pipe: object  # EditPipeline
    refs: np.ndarray  # (R, S, S, 3) uint8 at the specialist's image size
    sampling: dict

    def provenance(self, seed: int) -> dict:
        from sim2real.training.specialize import image_hash

        return {
            "specialist": self.folder,
            "edit": self.info.get("edit"),
            "instruction": self.info.get("instruction"),
            "method": self.info.get("method"),
            "refs_sha256_16": [image_hash(r) for r in self.refs],
            "sampling": self.sampling,
            "seed": seed,
        }


def load_passes(cfg: EditConfig, device: torch.device) -> list[EditPass]:
    from sim2real.data.images import load_images
    from sim2real.editing.pipeline import EditPipeline
    from sim2real.training.specialize import read_specialist

    passes = []
    for folder in cfg.specialists:
        info = read_specialist(folder)
        pipe = EditPipeline.from_pretrained(folder, device=device)
        size = int(info.get("image_size", pipe.config.resolution))
        sampling = dict(info.get("sampling", {}))
        for key in (
            "num_inference_steps",
            "guidance_scale",
            "image_guidance_scale",
            "style_guidance_scale",
            "eta",
        ):
            if getattr(cfg, key) is not None:
                sampling[key] = getattr(cfg, key)
        sampling.pop("style_combine", None)
        passes.append(EditPass(str(folder), info, pipe, load_images(cfg.refs, size=size), sampling))
    return passes


def edit_frames(frames: np.ndarray, p: EditPass, generator: torch.Generator) -> np.ndarray:
    """One pass over a batch: uint8 `(B, H, W, 3)` → same shape (resized to the specialist's size and back)."""
    import cv2

    h, w = frames.shape[1:3]
    size = p.refs.shape[1]
    x = frames
    if (h, w) != (size, size):
        x = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
    out = p.pipe(
        x, p.info["instruction"], style_images=p.refs, generator=generator, progress=False, **p.sampling
    ).images
    if (h, w) != (size, size):
        out = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_CUBIC) for f in out])
    return out


def _seed(base: int, episode: int, batch: int, pass_index: int) -> int:
    return zlib.crc32(f"{base}:{episode}:{batch}:{pass_index}".encode())


def run_edit(cfg: EditConfig) -> Path:
    """Edit every episode of `cfg.input` into `cfg.out`; returns the output path."""
    from sim2real.data.replay import ReplayWriter, open_replay
    from sim2real.utils import tqdm

    torch.set_num_threads(cfg.num_threads)
    device = torch.device(
        "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    store = open_replay(cfg.input, require=("img",))
    passes = load_passes(cfg, device)
    provenance = [p.provenance(cfg.seed) for p in passes]
    attrs = dict(store.attrs)
    attrs["edits"] = list(attrs.get("edits", [])) + provenance
    attrs["edited_from"] = str(cfg.input)

    # 1. open the output: resume an unfinished run of the same job, else start afresh
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        writer = ReplayWriter.resume(out)
        if writer.attrs.get("edits") != attrs["edits"] or writer.attrs.get("edited_from") != str(cfg.input):
            raise Sim2RealError(f"{out} holds a different edit job; pass --overwrite to replace it")
        logger.info("%s: resuming after %d of %d episodes", out, writer.n_episodes, store.n_episodes)
    else:
        writer = ReplayWriter(out, attrs=attrs, overwrite=cfg.overwrite)

    # 2. edit episode by episode (each published whole, so a crash loses at most one episode)
    done = writer.n_frames
    bar = tqdm(total=store.n_frames, initial=done, desc="edit", unit="frame")
    for e in range(writer.n_episodes, store.n_episodes):
        episode = store.get_episode(e)
        frames = np.asarray(episode["img"])
        for i, p in enumerate(passes):
            chunks = []
            for b, start in enumerate(range(0, len(frames), cfg.batch_size)):
                g = torch.Generator().manual_seed(_seed(cfg.seed, e, b, i))
                chunks.append(edit_frames(frames[start : start + cfg.batch_size], p, g))
            frames = np.concatenate(chunks)
        episode["img"] = frames
        writer.append_episode(episode)
        bar.update(len(frames))
    bar.close()
    print(
        f"edited {store.n_episodes} episodes ({store.n_frames} frames) with {len(passes)} specialist(s) into {out}"
    )
    return out
