"""Pretrain the tiny base editor on simulator edit pairs (InstructPix2Pix objective, our recipe).

    sim2real pretrain-editor --out runs/base                      # CPU: hours; a GPU: minutes
    sim2real pretrain-editor --out runs/base steps=200 batch_size=8 num_workers=0   # a smoke run

Recipe (see /work/shared/MEASURED.md for why): residual diffusion — the diffused variable is the
edit residual r = (E(target) − E(input))·s in pixel-unshuffle space, the UNet predicts the clean
residual (`prediction_type="sample"`), so the layout of the input is kept from the first minutes;
InstructPix2Pix's conditioning dropout (5% per pattern); AdamW with warmup + cosine, EMA; an extra
loss weight on latent cells that hold objects the instruction does not ask to change (table edits
otherwise leak colour onto the T and the agent). With `style_prob` > 0 the visual-prompt path is
pretrained too: the style image is the target look rendered at another state.

Layers: `setup` → `fit` (→ `train_step`, `evaluate`, `save_checkpoint`) → `export`.
`load_base_editor()` loads the editor shipped inside the package.
"""

from __future__ import annotations

import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sim2real.config import to_dict
from sim2real.data.pairs import EditPairGenerator
from sim2real.editing.guidance import conditioning_dropout
from sim2real.editing.model import EditorConfig, build_editor, make_refiner
from sim2real.editing.pipeline import EditPipeline
from sim2real.errors import Sim2RealError
from sim2real.training.editor_metrics import pair_metrics
from sim2real.utils import MetricsLogger, atomic_path, tqdm, write_json

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "base_editor"


@dataclass
class PretrainEditorConfig:
    """Base-editor pretraining. Fields you will change are marked (*).

    out (*): run folder (checkpoints, metrics.jsonl, samples/, model/).
    editor: the tiny editor's architecture (`sim2real.editing.model.EditorConfig`).
    steps (*), batch_size (*), lr, weight_decay, warmup_steps, max_grad_norm: optimisation.
    ema_decay: EMA of the weights used for samples, evaluation and the exported model.
    dropout_p: InstructPix2Pix conditioning dropout, probability of each pattern.
    protect_weight: extra loss weight on latent cells holding objects the edit must not change.
    style_prob: probability that an example carries a visual prompt (the target look elsewhere).
    kind_probs: how often background / foreground / both edits are drawn.
    sim_input_prob: how often the input look is exactly `sim`.
    num_workers (*): DataLoader workers rendering pairs (0 = in the training process).
    mixed_precision (*): `no`, `bf16` or `fp16` (accelerate).
    log_every, eval_every, checkpoint_every: in optimisation steps.
    eval_pairs, sample_steps, guidance_scale, image_guidance_scale: the periodic evaluation.
    seed: data and initialisation seed.
    init: start from this editor folder (e.g. an earlier run's model/) instead of random weights.
    views_per_pair: training examples made from one rendered pair by different 90° rotations and
        flips (rendering, not the model, is the bottleneck on a GPU).
    torch_threads: CPU threads for torch (0 = torch's default).
    train_modules: which of unet / text_encoder / style_module / refiner learn (the others stay
        frozen); e.g. `train_modules=[refiner]` with `init=` and `editor.refiner_channels=16` adds a
        `PixelRefiner` to a trained editor and trains only it, which a CPU can do in an hour.
    protect_pixels: weigh the protected objects per pixel instead of per latent cell (the refiner
        works at full resolution; unshuffle codec only).
    """

    out: str = ""
    editor: EditorConfig = field(default_factory=EditorConfig)
    steps: int = 20000
    batch_size: int = 64
    lr: float = 4e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    max_grad_norm: float = 1.0
    ema_decay: float = 0.999
    dropout_p: float = 0.05
    protect_weight: float = 2.0
    style_prob: float = 0.5
    kind_probs: list[float] = field(default_factory=lambda: [0.45, 0.4, 0.15])
    sim_input_prob: float = 0.3
    num_workers: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    eval_pairs: int = 32
    sample_steps: int = 10
    guidance_scale: float = 3.0
    image_guidance_scale: float = 1.5
    seed: int = 0
    init: str | None = None
    views_per_pair: int = 2
    torch_threads: int = 0
    train_modules: list[str] = field(
        default_factory=lambda: ["unet", "text_encoder", "style_module", "refiner"]
    )
    protect_pixels: bool = False

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out must name the run folder; got out=''")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1; got {self.steps=}, {self.batch_size=}")
        if not 0 <= self.style_prob <= 1:
            raise ValueError(f"style_prob must be in [0, 1]; got {self.style_prob=}")
        if len(self.kind_probs) != 3:
            raise ValueError(
                f"kind_probs needs 3 weights (background, foreground, both); got {self.kind_probs=}"
            )
        unknown = set(self.train_modules) - {"unet", "text_encoder", "style_module", "refiner"}
        if unknown or not self.train_modules:
            raise ValueError(
                "train_modules must name some of unet, text_encoder, style_module, refiner; got "
                f"{self.train_modules=}"
            )
        if self.protect_pixels and self.editor.codec != "unshuffle":
            raise ValueError(f"protect_pixels needs the unshuffle codec; got {self.editor.codec=}")
        if self.editor.preset != "tiny":
            raise ValueError(f"the base editor is trained from the tiny preset; got {self.editor.preset=}")


# ---------------------------------------------------------------------------------------- data
class PairStream(IterableDataset):
    """Endless edit pairs as model-ready tensors; each worker gets its own seed stream.

    `start_step` reseeds after a resume so a resumed run does not replay the same pairs.
    """

    def __init__(self, cfg: PretrainEditorConfig, start_step: int = 0):
        self.cfg, self.start_step = cfg, start_step

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        seed = [self.cfg.seed, worker, self.start_step]
        gen = EditPairGenerator(
            seed=int(np.random.SeedSequence(seed).generate_state(1)[0]),
            size=self.cfg.editor.resolution,
            kind_probs=self.cfg.kind_probs,
            sim_input_prob=self.cfg.sim_input_prob,
            with_style=self.cfg.style_prob > 0,
        )
        rng = np.random.default_rng(seed)
        while True:
            p = gen.sample()
            protect = _protect_mask(p.labels, p.edit_mask)
            # different rotations / flips of one pair: the editor must not care about the layout
            for view in rng.permutation(8)[: self.cfg.views_per_pair]:
                has_style = bool(p.style is not None and rng.uniform() < self.cfg.style_prob)
                yield {
                    "input": _to_tensor(_dihedral(p.input, view)),
                    "target": _to_tensor(_dihedral(p.target, view)),
                    "protect": torch.from_numpy(_dihedral(protect, view).copy()),
                    "instruction": p.instruction,
                    "has_style": has_style,
                    "style": _to_tensor(p.style) if has_style else torch.zeros(3, *p.input.shape[:2]),
                }


def _dihedral(img: np.ndarray, view: int) -> np.ndarray:
    """One of the 8 rotations/flips of a square image (H, W[, C])."""
    img = np.rot90(img, view % 4)
    return np.ascontiguousarray(img[:, ::-1] if view >= 4 else img)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) → float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 127.5 - 1.0


def _protect_mask(labels: np.ndarray, edit_mask: np.ndarray) -> np.ndarray:
    """Object pixels (T, agent, goal) that the edit must leave alone → float32 (H, W)."""
    return ((labels > 0) & ~edit_mask).astype(np.float32)


# ---------------------------------------------------------------------------------------- setup
@dataclass
class TrainState:
    pipe: EditPipeline
    ema: dict
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    accelerator: object
    step: int = 0
    train_seconds: float = 0.0  # wall time of optimisation over all runs of this folder


def setup(cfg: PretrainEditorConfig) -> TrainState:
    from accelerate import Accelerator
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    resuming = (Path(cfg.out) / "checkpoint" / "step.json").exists()
    if resuming:  # the saved folder fixes the tokenizer's vocabulary and the sizes
        pipe = EditPipeline.from_pretrained(Path(cfg.out) / "model")
    elif cfg.init:
        pipe = EditPipeline.from_pretrained(cfg.init)
    else:
        pipe = build_editor(cfg.editor)
    if (
        pipe.refiner is not None
        and cfg.editor.refiner_channels
        and (
            cfg.editor.refiner_channels != pipe.config.refiner_channels
            or list(cfg.editor.refiner_dilations) != list(pipe.config.refiner_dilations)
        )
    ):
        raise Sim2RealError(
            f"the editor already has a refiner of {pipe.config.refiner_channels} channels, dilations "
            f"{list(pipe.config.refiner_dilations)}; got editor.refiner_channels={cfg.editor.refiner_channels}, "
            f"editor.refiner_dilations={list(cfg.editor.refiner_dilations)} (match them, or start from an "
            "editor without one)"
        )
    if cfg.editor.refiner_channels and pipe.refiner is None:  # add a refiner to a trained editor
        pipe.config.refiner_channels = cfg.editor.refiner_channels
        pipe.config.refiner_dilations = list(cfg.editor.refiner_dilations)
        pipe.config.refiner_text = cfg.editor.refiner_text
        pipe.refiner = make_refiner(pipe.config)
    elif cfg.editor.refiner_text and pipe.refiner is not None and not pipe.config.refiner_text:
        blind = pipe.refiner  # teach a trained text-blind refiner to read the instruction
        pipe.config.refiner_text = True
        pipe.refiner = make_refiner(pipe.config)
        pipe.refiner.load_text_blind(blind)
    train = set(cfg.train_modules) - ({"style_module"} if cfg.style_prob == 0 else set())
    if not train & set(_ema_modules(pipe)):
        raise Sim2RealError(f"nothing to train: {cfg.train_modules=} names no module this editor has")
    for name, m in _ema_modules(pipe).items():
        m.requires_grad_(name in train)
    params = [p for m in _ema_modules(pipe).values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, cfg.steps)
    pipe.unet, pipe.text_encoder, pipe.style_module, optimizer, lr_scheduler = accelerator.prepare(
        pipe.unet, pipe.text_encoder, pipe.style_module, optimizer, lr_scheduler
    )
    if pipe.refiner is not None:
        pipe.refiner = accelerator.prepare(pipe.refiner)
    pipe.codec.to(accelerator.device)
    ema = {name: EMAModel(m.parameters(), decay=cfg.ema_decay) for name, m in _ema_modules(pipe).items()}
    for e in ema.values():
        e.to(accelerator.device)
        accelerator.register_for_checkpointing(e)
    state = TrainState(pipe, ema, optimizer, lr_scheduler, accelerator)
    _maybe_resume(cfg, state)
    return state


def _ema_modules(pipe: EditPipeline) -> dict[str, torch.nn.Module]:
    modules = {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "style_module": pipe.style_module}
    if pipe.refiner is not None:
        modules["refiner"] = pipe.refiner
    return modules


def _maybe_resume(cfg: PretrainEditorConfig, state: TrainState) -> None:
    ckpt = Path(cfg.out) / "checkpoint"
    if not (ckpt / "step.json").exists():
        return
    state.accelerator.load_state(str(ckpt))
    for e in state.ema.values():  # EMAModel.load_state_dict leaves its shadow weights on the CPU
        e.to(state.accelerator.device)
    saved = json.loads((ckpt / "step.json").read_text())
    state.step, state.train_seconds = saved["step"], saved.get("train_seconds", 0.0)
    log.info("resumed %s at step %d", ckpt, state.step)


# ---------------------------------------------------------------------------------------- fit
def train_step(cfg: PretrainEditorConfig, state: TrainState, batch: dict) -> dict:
    """One optimisation step of the InstructPix2Pix objective on the diffused residual."""
    pipe, acc = state.pipe, state.accelerator
    device = acc.device
    x_in, x_tgt = batch["input"].to(device), batch["target"].to(device)  # (B, 3, H, W)
    b = x_in.shape[0]
    with acc.autocast():
        # 1. encode: latents of input and target, the diffused variable, the conditions
        z_in, z_tgt = pipe.codec.encode(x_in), pipe.codec.encode(x_tgt)  # (B, C, h, w)
        x0 = pipe.to_diffusion_space(z_tgt, z_in)
        text = pipe.encode_prompt(list(batch["instruction"]))  # (B, L, D)
        uncond = pipe.encode_prompt([""] * b)
        dropped = conditioning_dropout(z_in, text, uncond, p=cfg.dropout_p)
        has_style = batch["has_style"].to(device)
        style = pipe.codec.encode(batch["style"].to(device)) if cfg.style_prob > 0 else None
        keep = dropped.style_keep * has_style.float()

        # 2. noise at a random timestep
        noise = torch.randn_like(x0)
        t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (b,), device=device)
        z_t = pipe.scheduler.add_noise(x0, noise, t)

        # 3. predict and weigh the error
        pred = pipe.model_output(z_t, t, dropped.image_latents, style, dropped.text_embeds, style_keep=keep)
        target = _target(pipe, x0, noise, t)
        protect = batch["protect"].to(device)
        if cfg.protect_pixels:  # the exact pixels, in the unshuffle layout of the latents
            cells = F.pixel_unshuffle(protect[:, None].expand(-1, 3, -1, -1).float(), pipe.codec.factor)
        else:
            cells = _latent_mask(protect, pipe.codec.factor)
        weight = 1.0 + cfg.protect_weight * cells
        loss = (weight * (pred.float() - target.float()) ** 2).mean()

    if not torch.isfinite(loss):
        log.warning("step %d: non-finite loss %s, skipped", state.step, loss.item())
        state.optimizer.zero_grad(set_to_none=True)
        return {"loss": float("nan"), "skipped": True}
    acc.backward(loss)
    grad_norm = acc.clip_grad_norm_(
        [p for m in _ema_modules(pipe).values() for p in m.parameters() if p.requires_grad], cfg.max_grad_norm
    )
    state.optimizer.step()
    state.lr_scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    for name, m in _ema_modules(pipe).items():
        state.ema[name].step(m.parameters())
    return {"loss": loss.item(), "grad_norm": float(grad_norm), "lr": state.lr_scheduler.get_last_lr()[0]}


def _target(pipe: EditPipeline, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    kind = pipe.scheduler.config.prediction_type
    if kind == "sample":
        return x0
    if kind == "epsilon":
        return noise
    return pipe.scheduler.get_velocity(x0, noise, t)


def _latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel mask (B, H, W) → latent-cell mask (B, 1, h, w): a cell counts if any pixel does."""
    return F.max_pool2d(mask[:, None].float(), factor)


def fit(cfg: PretrainEditorConfig, state: TrainState) -> None:
    out = Path(cfg.out)
    metrics = MetricsLogger(out)
    loader = DataLoader(
        PairStream(cfg, start_step=state.step),
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )
    for m in _ema_modules(state.pipe).values():
        m.train()
    start, t0, seen = state.step, time.time(), 0
    bar = tqdm(total=cfg.steps, initial=state.step, desc="pretrain-editor")
    for batch in loader:
        if state.step >= cfg.steps:
            break
        tick = time.time()
        info = train_step(cfg, state, batch)
        state.train_seconds += time.time() - tick
        state.step += 1
        seen += len(batch["instruction"])
        bar.update(1)
        if state.step % cfg.log_every == 0 or state.step == cfg.steps:
            elapsed = time.time() - t0
            metrics.log(step=state.step, **info, pairs_per_s=seen / max(elapsed, 1e-9), elapsed_s=elapsed)
            bar.set_postfix(loss=f"{info['loss']:.4f}")
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            metrics.log(
                step=state.step, **evaluate(cfg, state, out / "samples" / f"step{state.step:06d}.png")
            )
        if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
            save_checkpoint(cfg, state)
    bar.close()
    log.info("trained %d steps in %.0f s", state.step - start, time.time() - t0)


# ---------------------------------------------------------------------------------------- evaluate / save
def eval_pairs(n: int, seed: int = 10_000, size: int = 96, fine_words: float | None = None) -> dict:
    """Held-out pairs: a seed range the training streams never use. `fine_words`: the share of
    instructions in fine words (default: the generator's); the states and looks do not depend on it."""
    kw = {} if fine_words is None else {"fine_words": fine_words}
    return EditPairGenerator(seed=seed, size=size, with_style=True, **kw).batch(n)


@torch.no_grad()
def evaluate(cfg: PretrainEditorConfig, state: TrainState, grid_path: Path | None = None) -> dict:
    """Edit held-out pairs with the EMA weights; success / PSNR outside / boundary F1, and a grid."""
    pipe = state.pipe
    with ema_weights(state):
        pairs = eval_pairs(cfg.eval_pairs, size=cfg.editor.resolution)
        gen = torch.Generator().manual_seed(0)
        images = pipe(
            pairs["input"],
            pairs["instruction"],
            num_inference_steps=cfg.sample_steps,
            guidance_scale=cfg.guidance_scale,
            image_guidance_scale=cfg.image_guidance_scale,
            generator=gen,
            progress=False,
        ).images
    m = pair_metrics(pairs["input"], images, pairs["target"], pairs["edit_mask"], pairs["labels"])
    if grid_path is not None:
        save_grid(grid_path, pairs["input"][:8], images[:8], pairs["target"][:8])
    return {
        "eval_success": float(m.success.mean()),
        "eval_psnr_outside": float(np.median(np.minimum(m.psnr_outside, 99.0))),
        "eval_boundary_f1": float(m.boundary_f1.mean()),
        "eval_lab_ratio": float(np.median(m.lab_ratio)),
    }


class ema_weights:
    """Context manager: swap the EMA weights in (and back out) for sampling or export."""

    def __init__(self, state: TrainState):
        self.state = state

    def __enter__(self):
        for name, m in _ema_modules(self.state.pipe).items():
            m.eval()
            self.state.ema[name].store(m.parameters())
            self.state.ema[name].copy_to(m.parameters())

    def __exit__(self, *exc):
        for name, m in _ema_modules(self.state.pipe).items():
            self.state.ema[name].restore(m.parameters())
            m.train()


def save_grid(path: Path, *columns: np.ndarray) -> None:
    """Rows of examples, one column per image set (e.g. input | output | target), as a PNG."""
    import cv2

    rows = [np.concatenate([col[i] for col in columns], axis=1) for i in range(len(columns[0]))]
    grid = np.concatenate(rows, axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def save_checkpoint(cfg: PretrainEditorConfig, state: TrainState) -> None:
    """Optimiser, schedulers, EMA and RNG states (resume) + the EMA model (use), atomically."""
    out = Path(cfg.out)
    with atomic_path(out / "checkpoint") as tmp:
        state.accelerator.save_state(str(tmp))
        (tmp / "step.json").write_text(json.dumps({"step": state.step, "train_seconds": state.train_seconds}))
    export(cfg, state, out / "model")


def _device_name() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def append_stage(
    init: Path | None, *, command: str, steps: int, train_seconds: float, samples: int, what: str,
    config: dict, last_eval: dict | None,
) -> dict:  # fmt: skip
    """The `init` editor's TRAINING.json (every stage that made it; {} without one) with this run
    appended to its `history` and its steps added to `total_steps`."""
    record = init / "TRAINING.json" if init is not None else None
    info = json.loads(record.read_text()) if record is not None and record.exists() else {}
    history = list(info.get("history", []))
    history.append(
        {
            "stage": len(history) + 1,
            "command": command,
            "steps": steps,
            "train_seconds": round(train_seconds, 1),
            "samples": samples,
            "machine": f"{platform.platform()}, torch {torch.__version__}, {_device_name()}",
            "what": what,
            "config": config,
            "last_eval": last_eval,
        }
    )
    info["history"] = history
    info["total_steps"] = int(info.get("total_steps", 0)) + steps
    return info


def export(cfg: PretrainEditorConfig, state: TrainState, folder: Path) -> Path:
    """Save the EMA editor with a TRAINING.json saying how it was made."""
    with ema_weights(state):
        unwrapped = {n: state.accelerator.unwrap_model(m) for n, m in _ema_modules(state.pipe).items()}
        pipe = EditPipeline(
            config=state.pipe.config,
            codec=state.pipe.codec,
            tokenizer=state.pipe.tokenizer,
            scheduler=state.pipe.scheduler,
            matte=state.pipe.matte,  # trained apart (sim2real pretrain-matte): kept as loaded
            **unwrapped,
        )
        pipe.save_pretrained(folder)
    evals = [r for r in MetricsLogger(cfg.out).read() if "eval_success" in r]
    command = " ".join(["sim2real", "pretrain-editor", *sys.argv[2:]]) if sys.argv else ""
    last = evals[-1] if evals else None
    info = append_stage(
        Path(cfg.init) if cfg.init else None,
        command=command,
        steps=state.step,
        train_seconds=state.train_seconds,
        samples=state.step * cfg.batch_size,
        what=f"{', '.join(cfg.train_modules)} by the InstructPix2Pix objective on edit pairs; "
        "everything else frozen",
        config=to_dict(cfg),
        last_eval=last,
    )
    info.update(  # the top level: this (the last pretrain-editor) run
        {
            "command": command,
            "config": to_dict(cfg),
            "steps": state.step,
            "train_seconds": round(state.train_seconds, 1),
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "device": _device_name(),
            },
            "last_eval": last,
        }
    )
    write_json(folder / "TRAINING.json", info)
    return folder


# ---------------------------------------------------------------------------------------- entry points
def run_pretrain_editor(cfg: PretrainEditorConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", to_dict(cfg))
    state = setup(cfg)
    if state.step >= cfg.steps:
        log.info("%s already trained %d steps; nothing to do", out, state.step)
    else:
        try:
            fit(cfg, state)
        except KeyboardInterrupt:
            save_checkpoint(cfg, state)
            raise
    print(f"wrote {out / 'model'} (step {state.step}); metrics in {out / 'metrics.jsonl'}")
    return out / "model"


def load_base_editor(folder: str | Path | None = None, device: str | torch.device = "cpu") -> EditPipeline:
    """The base editor: `folder` if given, else the tiny one shipped inside the package."""
    folder = Path(folder) if folder is not None else SHIPPED
    if not folder.exists():
        raise Sim2RealError(
            f"no base editor at {folder}"
            + (
                ""
                if folder != SHIPPED
                else " (the shipped one is missing: reinstall sim2real, or pass --base DIR)"
            )
        )
    return EditPipeline.from_pretrained(folder, device=device)
