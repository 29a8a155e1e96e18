"""Train an editor's edit matte (`sim2real.editing.matte.EditMatte`) on simulator edit pairs.

    sim2real pretrain-matte --out runs/matte                          # from the shipped base editor
    sim2real pretrain-matte --out runs/matte init=DIR steps=200       # another editor, a smoke run
    sim2real pretrain-matte --out runs/colour colour_from_input=true colour_loss=criterion train_matte=false

The matte learns which pixels an instruction is about — the table, the T-shaped block, or both — from
the input frame and the instruction, with per-pixel binary cross-entropy against the exact edit regions
the pair generator knows (one channel per part); its colour head learns the mean Lab colour the words
name for each edited part (MSE against the target rendering's, in Lab / 100, weighted by
`colour_weight`). With `colour_from_input` the head also reads the input frame's colour under the
matte (matte.py), and `colour_loss=criterion` trains it for the edit-success criterion itself: a
smooth step of (distance of the edit region's mean Lab to the target's − half the input's distance),
so it learns which colour meets the criterion most often given the words and the input, not their
mean (plus `colour_mse_weight` × the MSE). `train_matte=false` trains the colour head alone (the
matte's α is then fixed). Everything else in the editor is frozen and unchanged;
the text encoder is only read. With `composite_weight` the matte also learns from the editor's own
decodes: `composite_pairs` pairs are edited once by the frozen editor (`DIR/decodes/`, resumable), and
the composite of each decode over its input is compared with the target outside the edit region, per
pair relative to the 25 dB threshold of the edit-success criterion (docs/base_editor.md, stages 7–8).
`DIR/model/` is the whole editor with the matte, `TRAINING.json` gains a
history entry. Resumable: rerunning the same command continues from `DIR/checkpoint.pt`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sim2real.config import to_dict
from sim2real.data.pairs import EditPairGenerator
from sim2real.editing.matte import LAB_SCALE, PARTS, EditMatte
from sim2real.editing.model import make_matte
from sim2real.editing.pipeline import EditPipeline
from sim2real.errors import Sim2RealError
from sim2real.training.base_editor import _dihedral, _to_tensor, append_stage, load_base_editor, save_grid
from sim2real.training.editor_metrics import to_lab
from sim2real.utils import MetricsLogger, atomic_path, tqdm, write_json

log = logging.getLogger(__name__)
PROTECTED_LABELS = (2, 3)  # the renderer's labels of the agent disk and the goal marker

MSE_25DB = 4 * 10 ** (-25 / 10)  # the MSE of 25 dB PSNR for images in [-1, 1]

# Words a specialist or HIVE may append to an instruction; the matte learns to ignore such tails.
TAILS = (
    ", the image quality is five out of five",
    ", the image quality is three out of five",
    " , realistic photo",
    " with soft shadows",
)


@dataclass
class PretrainMatteConfig:
    """Edit-matte training. Fields you will change are marked (*).

    out (*): run folder (checkpoint.pt, metrics.jsonl, samples/, model/).
    init (*): the editor to add the matte to (default: the shipped base editor); an existing matte
        there is trained further.
    channels: the matte's `UNet2DModel` level widths for an editor without one (default
        [8, 16, 32, 32]); with an `init` that has a matte, it must match that one's (or stay unset).
    steps (*), batch_size (*), lr, weight_decay, warmup_steps, max_grad_norm: optimisation.
    kind_probs, sim_input_prob: the pair generator's edit kinds and how often the input is `sim`.
    tail_prob: how often an instruction gets a tail of extra words (`TAILS`).
    colour_weight: weight of the colour head's loss next to the matte's.
    boundary_weight: weight, in the matte's cross-entropy, of the pixels on either side of each part's
        outline (1: every pixel alike); the one-pixel ring around the agent disk decides the PSNR
        outside a table+T edit.
    protect_weight: weight, in the matte's cross-entropy, of the pixels of objects no edit changes
        (the agent disk and the goal marker; 1: every pixel alike). Where the goal marker — a T of the
        block's size — overlaps the block, or the agent sits on it, the matte lets the edit in.
    coverage_targets: train the matte towards each pixel's share of the edited parts
        (`sim2real.data.pairs.edit_coverage`: anti-aliased rims and camera blur give fractions)
        instead of the 0/1 edit region; the composite then changes a rim pixel by its share, and the
        colour head's targets are the share-weighted part means.
    composite_weight: weight of the composite loss (0: off): the mean squared error, outside the edit
        region, between the editor's own decode composited by the matte and the target rendering,
        per pair relative to the MSE of 25 dB. Trains on `composite_pairs` pairs decoded once with
        `composite_sampler` (steps, text guidance, image guidance) instead of a fresh stream.
    colour_from_input: the colour head also reads the input under the matte (default: as the init
        editor's matte, else false). Turning it on for a text-only head keeps that head's weights and
        adds zero-weighted inputs, so training starts from its predictions.
    colour_loss: "mse" (the words' mean colour) or "criterion" (meet the edit-success criterion:
        the edit region's mean Lab at most half the input's distance from the target's).
    colour_tau: width in ΔE of the criterion's smooth step; colour_mse_weight: MSE added to it.
    train_matte: false trains the colour head only.
    rim_transfer: composite rim pixels by their share of each part's change nearby
        (`sim2real.editing.matte.transfer_rims`; default: as the init editor's matte, else false). It
        changes how the trained matte is applied (saved in its config), not the losses: the composite
        loss uses the plain composite.
    train_words: words whose token embeddings in the editor's text encoder learn too (only those rows;
        the encoder's layers stay frozen): for words the text encoder was never trained on, e.g. the
        fine colour words "very", "muted", "bright" (`describe_appearance(..., "fine")`), whose
        untrained embeddings barely move the pooled text the colour head reads.
    views_per_pair: training examples per rendered pair (different 90° rotations / flips).
    num_workers (*), torch_threads: DataLoader workers rendering pairs; CPU threads for torch.
    log_every, eval_every, checkpoint_every: in optimisation steps; eval_pairs: held-out pairs
        (seed 10 000, never drawn in training) for the periodic IoU / pixel accuracy.
    seed: data and initialisation seed.
    """

    out: str = ""
    init: str | None = None
    channels: list[int] | None = None
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    max_grad_norm: float = 1.0
    kind_probs: list[float] = field(default_factory=lambda: [0.45, 0.4, 0.15])
    sim_input_prob: float = 0.3
    tail_prob: float = 0.15
    colour_weight: float = 1.0
    boundary_weight: float = 1.0
    protect_weight: float = 1.0
    coverage_targets: bool = False
    composite_weight: float = 0.0
    composite_pairs: int = 2000
    composite_sampler: list[float] = field(default_factory=lambda: [10, 1.5, 1.5])
    colour_from_input: bool | None = None
    colour_loss: str = "mse"
    colour_tau: float = 2.0
    colour_mse_weight: float = 0.1
    train_matte: bool = True
    rim_transfer: bool | None = None
    train_words: list[str] = field(default_factory=list)
    views_per_pair: int = 2
    num_workers: int = 1
    torch_threads: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 250
    eval_pairs: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out must name the run folder; got out=''")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1; got {self.steps=}, {self.batch_size=}")
        if len(self.kind_probs) != 3:
            raise ValueError(
                f"kind_probs needs 3 weights (background, foreground, both); got {self.kind_probs=}"
            )
        if not 0 <= self.tail_prob <= 1:
            raise ValueError(f"tail_prob must be in [0, 1]; got {self.tail_prob=}")
        if self.colour_loss not in ("mse", "criterion"):
            raise ValueError(f"colour_loss must be 'mse' or 'criterion'; got {self.colour_loss!r}")
        if self.boundary_weight <= 0 or self.protect_weight <= 0:
            raise ValueError(
                f"boundary_weight and protect_weight must be > 0; got {self.boundary_weight=}, "
                f"{self.protect_weight=}"
            )
        if self.colour_tau <= 0:
            raise ValueError(f"colour_tau must be > 0; got {self.colour_tau=}")
        if self.composite_weight < 0 or self.composite_pairs < 1 or len(self.composite_sampler) != 3:
            raise ValueError(
                "composite_weight must be >= 0, composite_pairs >= 1 and composite_sampler "
                f"[steps, text, image]; got {self.composite_weight=}, {self.composite_pairs=}, "
                f"{self.composite_sampler=}"
            )
        if self.composite_weight > 0 and not self.train_matte:
            raise ValueError("composite_weight trains the matte; it does nothing with train_matte=false")


class MatteStream(IterableDataset):
    """Endless (input, instruction, edit mask) examples; each worker and each resume its own seeds."""

    def __init__(self, cfg: PretrainMatteConfig, size: int, start_step: int = 0):
        self.cfg, self.size, self.start_step = cfg, size, start_step

    def __iter__(self):
        info = get_worker_info()
        seed = [self.cfg.seed, info.id if info is not None else 0, self.start_step, 7]
        gen = EditPairGenerator(
            seed=int(np.random.SeedSequence(seed).generate_state(1)[0]),
            size=self.size,
            kind_probs=self.cfg.kind_probs,
            sim_input_prob=self.cfg.sim_input_prob,
            with_coverage=self.cfg.coverage_targets,
        )
        rng = np.random.default_rng(seed)
        while True:
            p = gen.sample()
            text = p.instruction
            if rng.uniform() < self.cfg.tail_prob:
                text += TAILS[int(rng.integers(len(TAILS)))]
            item = pair_example(p.input, p.target, p.labels, p.edit_mask, p.coverage, self.cfg)
            for view in rng.permutation(8)[: self.cfg.views_per_pair]:
                yield {**view_example(item, int(view)), "instruction": text}


def pair_example(inp, target, labels, edit_mask, coverage, cfg: PretrainMatteConfig) -> dict:
    """One pair's training example before views: what the matte learns (`parts`: the 0/1 edit regions,
    or with `cfg.coverage_targets` each pixel's share) and the colour head's targets (per part, the
    target's and the input's mean Lab / 100 under those weights, and their mass)."""
    hard = part_masks(labels, edit_mask)  # (2, H, W)
    soft = coverage.astype(np.float32) if cfg.coverage_targets else hard.astype(np.float32)
    lab, lab_in = to_lab(np.stack([target, inp]))
    mass = soft.sum(axis=(1, 2))
    mean = lambda im: np.einsum("khw,hwc->kc", soft, im) / np.maximum(mass, 1e-6)[:, None]  # noqa: E731
    return {
        "input": inp,
        "parts": soft,
        "colours": (mean(lab) / LAB_SCALE).astype(np.float32),
        "input_colours": (mean(lab_in) / LAB_SCALE).astype(np.float32),
        "counts": mass.astype(np.float32),
        "edited": hard.any(axis=(1, 2)),
        "protect": np.isin(labels, PROTECTED_LABELS).astype(np.float32),  # agent and goal pixels
    }


def view_example(item: dict, view: int) -> dict:
    """Tensors of one dihedral view of `pair_example`'s item (and of `decoded` / `target` images)."""
    out = {
        "input": _to_tensor(_dihedral(item["input"], view)),
        "parts": torch.from_numpy(np.stack([_dihedral(m, view) for m in item["parts"]])),
        "protect": torch.from_numpy(_dihedral(item["protect"], view))[None],
        **{
            k: torch.from_numpy(np.asarray(item[k])) for k in ("colours", "input_colours", "counts", "edited")
        },
    }
    if "decoded" in item:  # the editor's own decode and the target, for the composite loss
        out["decoded"] = _to_tensor(_dihedral(item["decoded"], view))
        out["target"] = _to_tensor(_dihedral(item["target"], view))
        out["outside"] = torch.from_numpy(~_dihedral(item["edit_mask"], view))[None].float()
    return out


class DecodeStream(IterableDataset):
    """Endless dihedral views of the cached decodes (`build_decodes`), in a seeded random order."""

    def __init__(self, cfg: PretrainMatteConfig, folder: Path, start_step: int = 0):
        self.cfg, self.folder, self.start_step = cfg, folder, start_step

    def __iter__(self):
        chunks = [torch.load(f, weights_only=False) for f in sorted(self.folder.glob("chunk_*.pt"))]
        items = [
            {
                **pair_example(
                    *(c[k][i] for k in ("input", "target", "labels", "edit_mask", "coverage")), self.cfg
                ),
                "decoded": c["decoded"][i],
                "target": c["target"][i],
                "edit_mask": c["edit_mask"][i],
                "instruction": c["instruction"][i],
            }
            for c in chunks
            for i in range(len(c["input"]))
        ]
        if not items:
            raise Sim2RealError(f"no decoded pairs in {self.folder} (delete it and rerun to decode them)")
        info = get_worker_info()
        rng = np.random.default_rng([self.cfg.seed, info.id if info is not None else 0, self.start_step, 11])
        while True:
            item = items[int(rng.integers(len(items)))]
            yield {**view_example(item, int(rng.integers(8))), "instruction": item["instruction"]}


@torch.no_grad()
def build_decodes(pipe: EditPipeline, cfg: PretrainMatteConfig, folder: Path, chunk: int = 50) -> Path:
    """Edit `cfg.composite_pairs` training pairs once with the frozen editor and keep its decodes
    before the matte's composite, in chunks written atomically (an interrupted run resumes)."""
    folder.mkdir(parents=True, exist_ok=True)
    steps, text_scale, image_scale = cfg.composite_sampler
    gen = EditPairGenerator(
        seed=int(np.random.SeedSequence([cfg.seed, 13]).generate_state(1)[0]),
        size=pipe.config.resolution,
        kind_probs=cfg.kind_probs,
        sim_input_prob=cfg.sim_input_prob,
        with_coverage=True,
    )
    pipe.matte.eval()
    for start in tqdm(range(0, cfg.composite_pairs, chunk), desc="decode pairs"):
        pairs = gen.batch(min(chunk, cfg.composite_pairs - start))  # drawn even when cached: same pairs
        path = folder / f"chunk_{start:06d}.pt"
        if path.exists():
            continue
        decoded = pipe(
            pairs["input"],
            pairs["instruction"],
            num_inference_steps=int(steps),
            guidance_scale=text_scale,
            image_guidance_scale=image_scale,
            generator=torch.Generator().manual_seed(cfg.seed + start),
            progress=False,
            composite=False,
        ).images
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save({**pairs, "decoded": decoded}, tmp)
    pipe.matte.train()
    return folder


def part_masks(labels: np.ndarray, edit_mask: np.ndarray) -> np.ndarray:
    """The edited pixels of each part (table, T) → bool (2, H, W)."""
    return np.stack([edit_mask & (labels == k) for k in range(len(PARTS))])


def outline(masks: torch.Tensor) -> torch.Tensor:
    """The pixels on either side of each mask's outline (B, K, H, W) float {0, 1}: dilation ≠ erosion."""
    dilated = F.max_pool2d(masks, 3, 1, 1)
    eroded = -F.max_pool2d(-masks, 3, 1, 1)
    return (dilated != eroded).float()


def matte_loss(pipe: EditPipeline, batch: dict, cfg: PretrainMatteConfig | None = None) -> torch.Tensor:
    """Per-pixel binary cross-entropy of the matte's per-part logits against the exact edit regions
    (or their per-pixel shares, `coverage_targets`),
    plus `cfg.colour_weight` × the colour head's loss on the edited parts: MSE (Lab / 100), or with
    `cfg.colour_loss == "criterion"` the smooth edit-success criterion (+ `cfg.colour_mse_weight` × MSE).
    Without `cfg.train_matte` the matte term is left out (only the colour head learns)."""
    dev = pipe.device
    train_matte = cfg is None or cfg.train_matte
    words = cfg is not None and bool(cfg.train_words)
    with torch.set_grad_enabled(words and torch.is_grad_enabled()):  # train_words: the embeddings learn
        text = pipe.encode_prompt(list(batch["instruction"]))
    image = batch["input"].to(dev)
    with torch.set_grad_enabled(train_matte and torch.is_grad_enabled()):
        logits = pipe.matte(image, text)
    loss = 0.0
    if train_matte:
        parts = batch["parts"].to(dev)
        weight = None
        if cfg is not None and cfg.boundary_weight != 1:
            weight = 1 + (cfg.boundary_weight - 1) * outline(parts)
        if cfg is not None and cfg.protect_weight != 1:
            protect = 1 + (cfg.protect_weight - 1) * batch["protect"].to(dev).expand_as(parts)
            weight = protect if weight is None else weight * protect
        if weight is not None:
            weight = weight / weight.mean()
        loss = F.binary_cross_entropy_with_logits(logits.float(), parts, weight=weight)
    edited = batch["edited"].to(dev).float()  # (B, 2)
    pred = pipe.matte.colours(text, image, torch.sigmoid(logits.detach().float())) / LAB_SCALE  # (B, 2, 3)
    target = batch["colours"].to(dev)
    err = ((pred - target) ** 2).mean(-1)  # (B, 2)
    colour = (err * edited).sum() / edited.sum().clamp(min=1)
    if train_matte and cfg is not None and cfg.composite_weight > 0 and "decoded" in batch:
        alpha = torch.sigmoid(logits.float()).sum(1, keepdim=True).clamp(max=1)
        comp = image.float() + alpha * (batch["decoded"].to(dev) - image.float())
        err_px = ((comp - batch["target"].to(dev)) ** 2).mean(1, keepdim=True)  # [-1, 1] units
        outside = batch["outside"].to(dev)
        per_pair = (err_px * outside).sum((1, 2, 3)) / outside.sum((1, 2, 3)).clamp(min=1)
        loss = loss + cfg.composite_weight * (per_pair / MSE_25DB).mean()
    if cfg is not None and cfg.colour_loss == "criterion":
        w = batch["counts"].to(dev) * edited
        w = (w / w.sum(1, keepdim=True).clamp(min=1))[..., None]  # (B, 2, 1): the parts' share of the region
        region = lambda c: (c * w).sum(1) * LAB_SCALE  # noqa: E731  the edit region's mean Lab
        d_out = (region(pred) - region(target)).norm(dim=1)
        d_in = (region(batch["input_colours"].to(dev)) - region(target)).norm(dim=1)
        miss = torch.sigmoid((d_out - 0.5 * d_in) / cfg.colour_tau)  # ≈ 1 where the criterion fails
        colour = miss[edited.any(1)].mean() + cfg.colour_mse_weight * colour
    return loss + (cfg.colour_weight if cfg is not None else 1.0) * colour


@torch.no_grad()
def evaluate(
    pipe: EditPipeline,
    n: int,
    size: int,
    grid_path: Path | None = None,
    seed: int = 10_000,
    fine_words: float | None = None,
) -> dict:
    """IoU and pixel accuracy of α > 0.5 against the edit region, and the colour head's ΔE to the
    target's part colours, on held-out pairs (seed 10 000; `fine_words`: the share of instructions in
    fine words, default the generator's); `eval_colour_ok`: how often the colour half of edit success
    would hold if calibration set each part to the head's colour; `eval_iou_share`: the IoU against the pixels
    the edited parts make up more than half of (the edit region rounded by shares rather than by pixel
    centres); `eval_rim_error`: the mean |α − the edited parts' share| over pixels that are neither
    wholly edited nor wholly untouched."""
    words = {} if fine_words is None else {"fine_words": fine_words}
    pairs = EditPairGenerator(seed=seed, size=size, with_coverage=True, **words).batch(n)
    x = torch.stack([_to_tensor(im) for im in pairs["input"]]).to(pipe.device)
    text = pipe.encode_prompt(list(pairs["instruction"]))
    pipe.matte.eval()
    parts = torch.sigmoid(pipe.matte(x, text))
    alpha = parts.sum(1).clamp(max=1).cpu().numpy()
    colours = pipe.matte.colours(text, x, parts).cpu().numpy()  # (n, 2, 3)
    pipe.matte.train()
    lab, lab_in = to_lab(pairs["target"]), to_lab(pairs["input"])
    errors, colour_ok = [], []
    for i in range(n):
        masks = part_masks(pairs["labels"][i], pairs["edit_mask"][i])
        errors += [np.linalg.norm(lab[i][m].mean(0) - colours[i, k]) for k, m in enumerate(masks) if m.any()]
        # the criterion if calibration hit the head's colours exactly: region mean = parts by area
        share = masks.sum((1, 2)) / max(masks.sum(), 1)
        region, edit = (share[:, None] * colours[i]).sum(0), pairs["edit_mask"][i]
        tgt, inp = lab[i][edit].mean(0), lab_in[i][edit].mean(0)
        colour_ok.append(np.linalg.norm(region - tgt) <= 0.5 * np.linalg.norm(inp - tgt))
    cover = pairs["coverage"].sum(1).clip(0, 1)  # (n, H, W): the edited parts' share of each pixel
    rim = (cover > 0.01) & (cover < 0.99)
    pred, true = alpha > 0.5, pairs["edit_mask"]
    iou = (pred & true).sum((1, 2)) / np.maximum((pred | true).sum((1, 2)), 1)
    changed = cover > 0.5  # what the edit changes, by share
    iou_share = (pred & changed).sum((1, 2)) / np.maximum((pred | changed).sum((1, 2)), 1)
    kept = ((~pred) & (~true)).sum((1, 2)) / np.maximum((~true).sum((1, 2)), 1)  # outside left alone
    if grid_path is not None:
        grey = lambda m: np.repeat((m[..., None] * 255).astype(np.uint8), 3, axis=-1)  # noqa: E731
        save_grid(grid_path, pairs["input"][:8], grey(alpha[:8]), grey(true[:8].astype(np.float32)))
    return {
        "eval_iou": float(iou.mean()),
        "eval_iou_share": float(iou_share.mean()),
        "eval_outside_kept": float(kept.mean()),
        "eval_pixel_acc": float((pred == true).mean()),
        "eval_colour_delta_e": float(np.median(errors)),
        "eval_colour_ok": float(np.mean(colour_ok)),
        "eval_rim_error": float(np.abs(alpha - cover)[rim].mean()),
    }


def _setup(cfg: PretrainMatteConfig) -> EditPipeline:
    pipe = load_base_editor(cfg.init)
    if pipe.config.preset != "tiny":
        raise Sim2RealError(f"the edit matte is for the tiny editor; {cfg.init} is {pipe.config.preset}")
    if pipe.matte is None and not cfg.train_matte:
        raise Sim2RealError(
            f"train_matte=false trains the colour head of an existing matte, but {cfg.init or 'the base editor'} "
            "has none (train the matte first: leave train_matte unset)"
        )
    if pipe.matte is None:
        pipe.config.matte_channels = list(cfg.channels or [8, 16, 32, 32])
        pipe.matte = make_matte(pipe.config)
    elif cfg.channels and list(cfg.channels) != list(pipe.config.matte_channels):
        raise Sim2RealError(
            f"the editor already has a matte of widths {list(pipe.config.matte_channels)}; got "
            f"channels={list(cfg.channels)} (leave channels unset to train that matte further)"
        )
    want = pipe.matte.config.colour_from_input if cfg.colour_from_input is None else cfg.colour_from_input
    if want != pipe.matte.config.colour_from_input:
        pipe.matte = _with_colour_inputs(pipe.matte, want)
    if cfg.rim_transfer is not None:
        pipe.matte.register_to_config(rim_transfer=cfg.rim_transfer)
    for m in pipe.modules.values():
        m.requires_grad_(False)
        m.eval()
    trained = pipe.matte if cfg.train_matte else pipe.matte.colour_head
    trained.requires_grad_(True)
    pipe.matte.train()
    if cfg.train_words:
        rows = word_rows(pipe, cfg.train_words)
        weight = pipe.text_encoder.get_input_embeddings().weight
        mask = torch.zeros(weight.shape[0], 1, dtype=weight.dtype, device=weight.device)
        mask[rows] = 1.0
        weight.requires_grad_(True)
        weight.register_hook(lambda grad: grad * mask)  # only the named words' rows learn
    return pipe


def word_rows(pipe: EditPipeline, words: list[str]) -> list[int]:
    """The token ids of `words` in the editor's tokenizer; each must be one known token."""
    rows = []
    for word in words:
        ids = pipe.tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1 or ids[0] == pipe.tokenizer.unk_token_id:
            raise Sim2RealError(f"train_words: {word!r} is not one token of the editor's tokenizer")
        rows.append(ids[0])
    return rows


def _with_colour_inputs(matte: EditMatte, on: bool) -> EditMatte:
    """The same matte with a colour head that does (or no longer does) read the input frame: the
    text weights are kept and the input features' weights start at zero (same predictions at first)."""
    cfg = matte.config
    new = EditMatte(
        tuple(cfg.channels), cfg.text_dim, cfg.groups, colour_from_input=on, rim_transfer=cfg.rim_transfer
    )
    state = matte.state_dict()
    first = "colour_head.0.weight"
    w = torch.zeros_like(new.state_dict()[first])
    n = min(w.shape[1], state[first].shape[1])
    w[:, :n] = state[first][:, :n]
    state[first] = w
    new.load_state_dict(state)
    return new


def _save_checkpoint(path: Path, pipe: EditPipeline, opt, sched, step: int, seconds: float) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(
            {
                "matte": pipe.matte.state_dict(),
                "word_embeddings": pipe.text_encoder.get_input_embeddings().weight.detach().clone(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "step": step,
                "train_seconds": seconds,
            },
            tmp,
        )


def _export(
    cfg: PretrainMatteConfig, pipe: EditPipeline, step: int, seconds: float, last: dict | None
) -> Path:
    folder = Path(cfg.out) / "model"
    pipe.matte.eval()
    pipe.save_pretrained(folder)
    pipe.matte.train()
    src = Path(cfg.init) if cfg.init else Path(__file__).resolve().parents[1] / "assets" / "base_editor"
    info = append_stage(  # the init editor's record; this run is appended
        src,
        command=" ".join(["sim2real", "pretrain-matte", *sys.argv[2:]]) if sys.argv else "",
        steps=step,
        train_seconds=seconds,
        samples=step * cfg.batch_size,
        what=_what(cfg, pipe),
        config=to_dict(cfg),
        last_eval=last,
    )
    write_json(folder / "TRAINING.json", info)
    return folder


def _what(cfg: PretrainMatteConfig, pipe: EditPipeline) -> str:
    reads = (
        "the instruction and the input's colour under the matte"
        if pipe.matte.config.colour_from_input
        else "the instruction"
    )
    loss = "the smooth edit-success criterion (+ MSE)" if cfg.colour_loss == "criterion" else "MSE"
    head = f"a colour head (the mean Lab colour per edited part, from {reads}; {loss})"
    if cfg.train_words:
        head += f", with the text encoder's embeddings of {', '.join(cfg.train_words)}"
    if not cfg.train_matte:
        return f"{head} only; the matte and everything else frozen"
    target = "each pixel's share of the edited parts" if cfg.coverage_targets else "the exact edit regions"
    composite = (
        f" + {cfg.composite_weight} × the outside error of its composite of {cfg.composite_pairs} of the "
        f"editor's own decodes (sampler {cfg.composite_sampler})"
        if cfg.composite_weight > 0
        else ""
    )
    if cfg.protect_weight != 1:
        target += f" (agent and goal pixels weighted {cfg.protect_weight}×)"
    also = f", and {head}" if cfg.colour_weight > 0 else "; its colour head frozen (colour_weight=0)"
    rims = (
        "; applied with rim transfer (a rim pixel takes its share of its part's change nearby)"
        if pipe.matte.config.rim_transfer
        else ""
    )
    return (
        "edit matte: a UNet2DModel that reads the input frame and the instruction and says where the "
        f"edit applies (per part), trained by per-pixel BCE against {target}{composite}{also}{rims}; "
        "everything else frozen"
    )


def run_pretrain_matte(cfg: PretrainMatteConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_dict(cfg))
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)
    pipe = _setup(cfg)
    params = pipe.matte.parameters() if cfg.train_matte else pipe.matte.colour_head.parameters()
    groups = [{"params": list(params)}]
    if cfg.train_words:  # no weight decay: it would shrink every word's row, not only the trained ones
        groups.append({"params": [pipe.text_encoder.get_input_embeddings().weight], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup_steps, cfg.steps)
    step, seconds = 0, 0.0
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        pipe.matte.load_state_dict(state["matte"])
        if "word_embeddings" in state:
            with torch.no_grad():
                pipe.text_encoder.get_input_embeddings().weight.copy_(state["word_embeddings"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, seconds = state["step"], state["train_seconds"]
        log.info("resumed %s at step %d", ckpt, step)
    metrics = MetricsLogger(out)
    size = pipe.config.resolution
    last = next((r for r in reversed(metrics.read()) if "eval_iou" in r), None)
    if step < cfg.steps:
        if cfg.composite_weight > 0:
            stream = DecodeStream(cfg, build_decodes(pipe, cfg, out / "decodes"), start_step=step)
        else:
            stream = MatteStream(cfg, size, start_step=step)
        loader = DataLoader(
            stream,
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            persistent_workers=cfg.num_workers > 0,
        )
        bar = tqdm(total=cfg.steps, initial=step, desc="pretrain-matte")
        try:
            for batch in loader:
                tick = time.time()
                loss = matte_loss(pipe, batch, cfg)
                if not torch.isfinite(loss):
                    raise Sim2RealError(f"step {step}: non-finite matte loss {loss.item()}; lower lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(pipe.matte.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                seconds += time.time() - tick
                step += 1
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    metrics.log(step=step, loss=loss.item(), lr=sched.get_last_lr()[0], train_seconds=seconds)
                    bar.set_postfix(loss=f"{loss.item():.4f}")
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    last = {
                        "step": step,
                        **evaluate(pipe, cfg.eval_pairs, size, out / "samples" / f"step{step:06d}.png"),
                    }
                    metrics.log(**last)
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    _save_checkpoint(ckpt, pipe, opt, sched, step, seconds)
                if step >= cfg.steps:
                    break
        except KeyboardInterrupt:
            _save_checkpoint(ckpt, pipe, opt, sched, step, seconds)
            raise
        finally:
            bar.close()
    folder = _export(cfg, pipe, step, seconds, last)
    print(f"wrote {folder} (step {step}); metrics in {out / 'metrics.jsonl'}")
    return folder
