"""D3PO: preference optimisation of a diffusion editor from AI feedback, one step at a time.

The losses are pure functions of per-timestep log-probabilities (`log p(x_{t-1} | x_t)` of the
recorded trajectory, averaged over latent dimensions as the samplers return them):

    log r = log clamp(p_θ / p_ref, 1 − clip, 1 + clip)         # D3PO's "clipped Q"
    pairs      L = −log σ(β·(log r_w − log r_l))                 # Eq. 7 of the specialists paper
    listwise   L = −Σ_i [β log r_(i) − log Σ_{j ≥ i} exp(β log r_(j))]   # Plackett–Luce, best first

Facts taken from D3PO's released code (yk7333/d3po, scripts/train_d3po.py) and SPIE's
(ebenarous/SPIE, scripts/train.py):
* the ratio is clamped, not the log-ratio's gradient: outside 1 ± clip the term has no gradient
  (a trust region, like PPO's clip). We clamp `logp − ref_logp` to [log(1−clip), log(1+clip)],
  which is the same function with the same gradient but cannot overflow `exp` into NaN;
* sign: a preference of +1 for the winner and −1 for the loser, 0 for a tie, so the argument of σ
  is β·(log r_w − log r_l); the loss falls when the winner's likelihood rises relative to the
  reference and the loser's falls;
* D3PO keeps tied pairs in the mean (they add the constant log 2); here ties carry no gradient
  and are left out of the mean (`mask`), so a batch of ties gives loss 0;
* SPIE's listwise form raises each clamped ratio to the power β and sums the Plackett–Luce stage
  terms over positions (best first); with k = 2 it equals the pairwise loss (tested).

The trainer that produces these log-probs lives further down in this module.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from sim2real.errors import Sim2RealError

if TYPE_CHECKING:
    from sim2real.editing.pipeline import Conditions, EditPipeline
    from sim2real.feedback.score import FeedbackConfig


def clamped_log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor, clip: float = 0.1) -> torch.Tensor:
    """log clamp(exp(logp − ref_logp), 1 − clip, 1 + clip), computed without `exp` overflow."""
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clip must be in (0, 1); got {clip=}")
    return torch.clamp(logp - ref_logp, math.log1p(-clip), math.log1p(clip))


def d3po_loss(
    logp_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_logp_w: torch.Tensor,
    ref_logp_l: torch.Tensor,
    beta: float = 0.1,
    clip: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise D3PO loss at one (or several) denoising steps; a scalar.

    All inputs share one shape, e.g. `(B,)` for one timestep or `(B, T)` for several: the log-prob
    of the winner's / loser's step under the current model (with gradients) and under the frozen
    reference (without). `mask` (bool, broadcastable to that shape) marks real preferences;
    False entries (ties) give no gradient and are left out of the mean.
    """
    if not (logp_w.shape == logp_l.shape == ref_logp_w.shape == ref_logp_l.shape):
        raise ValueError(
            f"log-prob shapes differ: {tuple(logp_w.shape)=} {tuple(logp_l.shape)=} "
            f"{tuple(ref_logp_w.shape)=} {tuple(ref_logp_l.shape)=}"
        )
    z = beta * (clamped_log_ratio(logp_w, ref_logp_w, clip) - clamped_log_ratio(logp_l, ref_logp_l, clip))
    per = -F.logsigmoid(z)
    if mask is None:
        return per.mean()
    weight = torch.broadcast_to(mask, per.shape).to(per.dtype)
    # clamp_min(1): a batch of ties gives an exact 0 that still belongs to the graph
    return (per * weight).sum() / weight.sum().clamp_min(1.0)


def plackett_luce_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    order: torch.Tensor,
    beta: float = 0.1,
    clip: float = 0.1,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Listwise (Plackett–Luce) D3PO loss for k ≥ 2 samples per condition; a scalar.

    logps, ref_logps: `(B, k)` step log-probs of the k samples (current model / frozen reference).
    order: `(B, k)` long, sample indices best first (e.g. `argsort` of a lower-is-better score).
    scores: optional `(B, k)` lower-is-better scores in the samples' own order; when given, tied
    samples carry no preference between them: stage i only competes against samples *strictly*
    worse than the i-th best, and a stage with none left contributes 0. With k = 2 this is
    exactly `d3po_loss` with ties masked.
    """
    if logps.ndim != 2 or logps.shape != ref_logps.shape or order.shape != logps.shape:
        raise ValueError(
            f"need (B, k) tensors; got {tuple(logps.shape)=} {tuple(ref_logps.shape)=} {tuple(order.shape)=}"
        )
    k = logps.shape[1]
    if k < 2:
        raise ValueError(f"need at least 2 samples per condition; got {k=}")
    s = beta * clamped_log_ratio(logps, ref_logps, clip)  # (B, k)
    s = torch.gather(s, 1, order)  # (B, k) best first
    later = torch.ones(k, k, dtype=torch.bool, device=s.device).triu()  # j ≥ i
    competes = later.expand(s.shape[0], k, k)  # (B, i, j)
    if scores is not None:
        sc = torch.gather(scores, 1, order)  # (B, k) best first
        strictly_worse = sc[:, None, :] > sc[:, :, None]  # (B, i, j): item j worse than item i
        eye = torch.eye(k, dtype=torch.bool, device=s.device)
        competes = competes & (strictly_worse | eye)
    logits = s[:, None, :].expand(-1, k, -1).masked_fill(~competes, float("-inf"))  # (B, i, j)
    stage = s - torch.logsumexp(logits, dim=-1)  # (B, k); 0 where a stage has no competitor
    return -stage.sum(dim=1).mean()


def preference_accuracy(
    log_ratio_w: torch.Tensor, log_ratio_l: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Share of pairs where the model's implicit reward (log ratio) already favours the winner."""
    hit = (log_ratio_w > log_ratio_l).float()
    if mask is None:
        return hit.mean().item()
    m = torch.broadcast_to(mask, hit.shape).float()
    return ((hit * m).sum() / m.sum().clamp_min(1.0)).item()


# ==========================================================================================================
# The trainer: setup → fit → step → evaluate → save. One trainer for every variant; variants are config.
# ==========================================================================================================

logger = logging.getLogger(__name__)

Method = Literal["d3po", "hive-weighted", "hive-condition"]
METHOD_NAMES: tuple[str, ...] = ("d3po", "hive-weighted", "hive-condition")


@dataclass
class D3POConfig:
    """Specialist training (D3PO from AI feedback). Fields you will change: `steps`, `frames_per_step`,
    `samples_per_frame`, `learning_rate`, the guidance scales and `num_inference_steps`.

    steps: optimizer updates. Each update samples `grad_accum` × `frames_per_step` frames, edits each
        `samples_per_frame` (k) times from the same initial noise and condition, ranks the k edits
        and back-propagates the per-timestep loss over a `timestep_fraction` of the denoising steps.
    micro_batch: frames per backward pass (memory; does not change the maths).
    exclude_last_steps: final denoising steps left out of the loss. Measured on the tiny editor
        (squaredcos schedule, trailing spacing, 3 DDIM steps): the last step's noise std is ~0.006,
        so its log-prob is so sharp that ONE Adam step at lr 1e-4 moved its log-ratio by −26…−46
        nats/dim (the earlier steps: < 0.004): every such term sits far outside the 1 ± clip window
        and only blocks the signal. SPIE leaves Euler's deterministic last step out for a related reason.
    num_inference_steps, eta: sampler steps and DDIM stochasticity of the rollouts.
        eta=1.0  # D3PO needs stochastic steps: the log-prob is undefined at eta 0
    guidance_scale, image_guidance_scale, style_guidance_scale: s_T, s_in, s_sty of the rollouts,
        also stored in the specialist as its inference defaults.
    eval_eta: DDIM η of the evaluation edits and the specialist's inference default. 1.0 = the
        stochastic policy D3PO trained (the paper infers with the stochastic Euler-ancestral sampler);
        0 = deterministic DDIM, which the preference updates reach only indirectly.
    learning_rate, adam_*: AdamW (SPIE: 3e-5 for SD; the tiny editor tolerates more).
    max_grad_norm: gradient clipping; a step whose gradient norm is NaN/inf is skipped with a warning.
    beta, clip: D3PO's β and ratio clamp 1 ± clip.
    ranking: for k > 2, `listwise` (Plackett–Luce, SPIE) or `pairs` (every pair, D3PO's human-pref script).
    preference: `total` (Â_struct + α·Â_sem, the paper) or `pareto` (D3PO's dominance; k = 2 only).
    lora_rank, lora_alpha: LoRA on the UNet attention projections (to_q, to_k, to_v, to_out.0).
    train_conv_in: which `conv_in` weights train. `new` (default): only the channels added for the
        style features (the pretrained z_t / image channels and the bias stay exactly as in the base
        editor); `all`: the whole layer, as SPIE's code does; `none`. Measured on the tiny editor:
        with `all` at lr 3e-4 the edits washed out to a pale green in 16 updates.
    train_style_module: the style module trains fully.
    style_combine: how the refs form the visual prompt in training (None = the editor's own setting,
        so the specialist trains with the prompt it gets at inference).
    eval_every: steps per "epoch": the held-out frames are scored and a sample grid is written.
    checkpoint_every, keep_checkpoints: resumable state under `<out>/checkpoints/`.
    device: `auto` (accelerate's choice), `cpu` or `cuda`. mixed_precision: accelerate's setting.
    num_threads: torch CPU threads (the build machines have 2 cores shared by everyone).
    """

    steps: int = 30
    frames_per_step: int = 4
    samples_per_frame: int = 2
    grad_accum: int = 1
    micro_batch: int = 4
    num_inference_steps: int = 10
    timestep_fraction: float = 1.0
    exclude_last_steps: int = 1
    eta: float = 1.0
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5
    style_guidance_scale: float = 3.0
    eval_eta: float = 1.0
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    beta: float = 0.1
    clip: float = 0.1
    ranking: Literal["listwise", "pairs"] = "listwise"
    preference: Literal["total", "pareto"] = "total"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    train_conv_in: Literal["new", "all", "none"] = "new"
    train_style_module: bool = True
    style_combine: str | None = None
    eval_every: int = 5
    checkpoint_every: int = 5
    keep_checkpoints: int = 2
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    num_threads: int = 2

    def __post_init__(self) -> None:
        if self.steps < 0 or self.frames_per_step < 1 or self.grad_accum < 1 or self.micro_batch < 1:
            raise ValueError(
                f"need steps >= 0, frames_per_step >= 1, grad_accum >= 1, micro_batch >= 1; got {self.steps=}, "
                f"{self.frames_per_step=}, {self.grad_accum=}, {self.micro_batch=}"
            )
        if self.samples_per_frame < 2:
            raise ValueError(
                f"samples_per_frame must be >= 2 (preferences need pairs); got {self.samples_per_frame=}"
            )
        if not 0.0 < self.timestep_fraction <= 1.0:
            raise ValueError(f"timestep_fraction must be in (0, 1]; got {self.timestep_fraction=}")
        if self.eta <= 0:
            raise ValueError(
                f"eta must be > 0: D3PO needs stochastic steps (log-probs are 0 at eta 0); got {self.eta=}"
            )
        if not 0.0 < self.clip < 1.0 or self.beta <= 0:
            raise ValueError(f"need 0 < clip < 1 and beta > 0; got {self.clip=}, {self.beta=}")
        if self.ranking not in ("listwise", "pairs") or self.preference not in ("total", "pareto"):
            raise ValueError(
                f"ranking must be listwise|pairs and preference total|pareto; got {self.ranking=}, {self.preference=}"
            )
        if self.mixed_precision not in ("no", "fp16", "bf16") or self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(
                f"mixed_precision must be no|fp16|bf16, device auto|cpu|cuda; got {self.mixed_precision=}, {self.device=}"
            )
        if self.preference == "pareto" and self.samples_per_frame != 2:
            raise ValueError(
                f"preference=pareto compares pairs: needs samples_per_frame=2; got {self.samples_per_frame=}"
            )
        if (
            self.num_inference_steps < 1
            or self.eval_every < 1
            or self.checkpoint_every < 1
            or self.lora_rank < 1
        ):
            raise ValueError(
                "need num_inference_steps, eval_every, checkpoint_every, lora_rank >= 1; got "
                f"{self.num_inference_steps=}, {self.eval_every=}, {self.checkpoint_every=}, {self.lora_rank=}"
            )


@dataclass
class Rollout:
    """k edits of each of B frames from one initial noise per frame: what a training step consumes.

    Samples are laid out frame-major: row `i*k + j` is sample j of frame i.
    """

    cond: Conditions  # (B·k, …) conditions, each frame's repeated k times
    latents: torch.Tensor  # (B·k, S+1, C, h, w) z_T … z_0
    log_probs: torch.Tensor  # (B·k, S) at sampling time (logged, not used by the loss)
    timesteps: torch.Tensor  # (S,)
    inputs: np.ndarray  # (B, H, W, 3) uint8
    labels: np.ndarray  # (B, H, W) uint8
    edits: np.ndarray  # (B, k, H, W, 3) uint8
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # (B, k) each; "total" lower is better
    order: torch.Tensor | None = None  # (B, k) best first

    @property
    def k(self) -> int:
        return self.edits.shape[1]


# A method turns (trainer, rollout, frame indices, timestep index) into a loss with stats. HIVE's
# variants register here (sim2real.training.hive) and reuse sampling, scoring, checkpoints and logging.
MethodLoss = Callable[["SpecialistTrainer", Rollout, torch.Tensor, int], tuple[torch.Tensor, dict]]
METHODS: dict[str, MethodLoss] = {}


def register_method(name: str, fn: MethodLoss) -> None:
    METHODS[name] = fn


def get_method(name: str) -> MethodLoss:
    if name not in METHODS and name.startswith("hive"):
        try:  # HIVE's losses live in their own module, which registers them on import
            import sim2real.training.hive  # noqa: F401
        except ImportError:
            pass
    if name not in METHODS:
        raise Sim2RealError(f"method {name!r} is not available; choose one of {sorted(METHODS)}")
    return METHODS[name]


def d3po_method(
    trainer: SpecialistTrainer, rollout: Rollout, frames: torch.Tensor, j: int
) -> tuple[torch.Tensor, dict]:
    """D3PO at one timestep for some frames: pairwise (k = 2 or ranking=pairs) or Plackett–Luce."""
    cfg = trainer.cfg
    logp = trainer.step_log_probs(rollout, frames, j)  # (b, k) with gradients
    with torch.no_grad(), trainer.reference():
        ref = trainer.step_log_probs(rollout, frames, j)  # (b, k) frozen reference
    total = torch.as_tensor(rollout.scores["total"], dtype=logp.dtype)[frames]  # (b, k)
    pref = torch.as_tensor(rollout.scores["pref"], dtype=torch.int8)[frames]  # (b, k, k): +1 row beats column
    lr = clamped_log_ratio(logp, ref, cfg.clip).detach()
    if cfg.ranking == "listwise" and rollout.k > 2:
        order = rollout.order[frames]
        loss = plackett_luce_loss(logp, ref, order, cfg.beta, cfg.clip, scores=total)
        wi, li = order[:, 0], order[:, -1]  # best vs worst for the win-rate
        rows = torch.arange(len(frames))
        valid = pref[rows, wi, li] > 0
        acc = preference_accuracy(lr[rows, wi], lr[rows, li], valid)
    else:
        iu = torch.triu_indices(rollout.k, rollout.k, offset=1)  # every pair i < j
        p = pref[:, iu[0], iu[1]]  # (b, P)
        a, b = iu[0].expand_as(p), iu[1].expand_as(p)
        w = torch.where(p >= 0, a, b)  # winner index (ties: either, masked below)
        lo = torch.where(p >= 0, b, a)
        g = lambda x, idx: torch.gather(x, 1, idx)  # noqa: E731
        mask = p != 0
        loss = d3po_loss(g(logp, w), g(logp, lo), g(ref, w), g(ref, lo), cfg.beta, cfg.clip, mask=mask)
        acc = preference_accuracy(g(lr, w), g(lr, lo), mask)
    raw = (logp - ref).detach()
    stats = {
        "win_rate": acc,
        "log_ratio_mean": raw.mean().item(),
        "log_ratio_absmax": raw.abs().max().item(),
        "clipped_frac": ((raw < math.log1p(-cfg.clip)) | (raw > math.log1p(cfg.clip))).float().mean().item(),
    }
    return loss, stats


register_method("d3po", d3po_method)


class SpecialistTrainer:
    """Fine-tunes an `EditPipeline` into a specialist for one edit kind against reference frames.

    The frozen reference is the same network: LoRA adapters disabled and the original `conv_in` /
    style module swapped back in (`reference()`), so no second UNet is held in memory.
    """

    def __init__(
        self,
        cfg: D3POConfig,
        pipe: EditPipeline,
        frames: Any,  # sim2real.training.specialize.FrameSource: .sample(n, rng), .eval_images, .eval_labels
        refs: np.ndarray,
        ref_labels: np.ndarray,
        edit: Literal["background", "foreground"],
        instruction: str,
        feedback: FeedbackConfig,
        out: str | Path,
        method: Method = "d3po",
        seed: int = 0,
    ):
        self.cfg, self.pipe, self.frames, self.edit, self.instruction = cfg, pipe, frames, edit, instruction
        self.refs, self.ref_labels = refs, ref_labels
        self.out, self.seed = Path(out), seed
        self.method = get_method(method)
        self.method_name = method
        self.step_count = 0
        self.setup(feedback)

    # ------------------------------------------------------------------ setup
    def setup(self, feedback: FeedbackConfig) -> None:
        """LoRA, trainable flags, frozen copies of the fully-trained modules, optimizer, scorer, logger."""
        from accelerate import Accelerator
        from peft import LoraConfig

        from sim2real.feedback.score import FeedbackScorer
        from sim2real.utils import MetricsLogger

        cfg, pipe = self.cfg, self.pipe
        torch.set_num_threads(cfg.num_threads)
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision)
        pipe.to(self.accelerator.device)
        if cfg.style_combine is not None:
            pipe.config.style_combine = cfg.style_combine
        for m in pipe.modules.values():
            m.requires_grad_(False)
            m.eval()  # no dropout: log-probs of current and reference must be comparable
        # 1. frozen copies of what trains fully: the reference must see the ORIGINAL weights
        self.ref_conv_in = copy.deepcopy(pipe.unet.conv_in)
        self.ref_style = copy.deepcopy(pipe.style_module)
        # 2. LoRA on the UNet attention projections (peft through diffusers' adapter API)
        torch.manual_seed(self.seed)
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            init_lora_weights="gaussian",
        )
        pipe.unet.add_adapter(lora)
        conv = pipe.unet.conv_in
        conv.weight.requires_grad_(cfg.train_conv_in != "none")
        if conv.bias is not None:
            conv.bias.requires_grad_(cfg.train_conv_in == "all")
        if cfg.train_conv_in == "new":  # gradients only reach the style-feature input channels
            n_old = 2 * pipe.codec.latent_channels
            keep = torch.ones_like(conv.weight)
            keep[:, :n_old] = 0
            conv.weight.register_hook(lambda g: g * keep)
        pipe.style_module.requires_grad_(cfg.train_style_module)
        self.params = [p for m in (pipe.unet, pipe.style_module) for p in m.parameters() if p.requires_grad]
        self.trainable_names = sorted(self._trainable_state())
        # no weight decay on conv_in: decoupled decay would shrink the frozen pretrained channels too
        groups = [
            {"params": [p for p in self.params if p is not conv.weight]},
            {"params": [p for p in self.params if p is conv.weight], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=cfg.learning_rate,
            betas=(cfg.adam_beta1, cfg.adam_beta2),
            weight_decay=cfg.adam_weight_decay,
        )
        self.optimizer = self.accelerator.prepare(optimizer)
        # 3. feedback and bookkeeping
        self.scorer = FeedbackScorer(feedback, self.refs, self.ref_labels)
        self.metrics = MetricsLogger(self.out)
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        n_train = sum(p.numel() for p in self.params)
        logger.info(
            "specialist: %d trainable parameters (LoRA r=%d + conv_in + style module)", n_train, cfg.lora_rank
        )

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything that trains, by name (LoRA, conv_in, style module)."""
        state = {f"unet.{n}": p for n, p in self.pipe.unet.named_parameters() if p.requires_grad}
        state |= {
            f"style_module.{n}": p for n, p in self.pipe.style_module.named_parameters() if p.requires_grad
        }
        return state

    @contextmanager
    def reference(self) -> Iterator[None]:
        """The frozen base editor: adapters off, original conv_in and style module in place."""
        unet, pipe = self.pipe.unet, self.pipe
        conv, style = unet.conv_in, pipe.style_module
        unet.disable_adapters()
        unet.conv_in, pipe.style_module = self.ref_conv_in, self.ref_style
        try:
            yield
        finally:
            unet.conv_in, pipe.style_module = conv, style
            unet.enable_adapters()

    def sampling_settings(self) -> dict:
        c = self.cfg
        return {
            "num_inference_steps": c.num_inference_steps,
            "guidance_scale": c.guidance_scale,
            "image_guidance_scale": c.image_guidance_scale,
            "style_guidance_scale": c.style_guidance_scale,
            "eta": c.eval_eta,
            "style_combine": self.pipe.config.style_combine,
        }

    # ------------------------------------------------------------------ fit
    def fit(self, resume: bool = True) -> None:
        """Train for `cfg.steps` updates (continuing from the last checkpoint when `resume`)."""
        from sim2real.utils import tqdm

        if resume:
            self.load_checkpoint()
        if self.step_count == 0:
            self.evaluate()  # the curve starts at the base editor
        bar = tqdm(
            range(self.step_count, self.cfg.steps),
            desc=f"specialize {self.edit}",
            initial=self.step_count,
            total=self.cfg.steps,
        )
        for _ in bar:
            t0 = time.time()
            stats = self.train_step()
            self.step_count += 1
            stats["step_time_s"] = time.time() - t0
            self.metrics.log(kind="train", step=self.step_count, **stats)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", win=f"{stats['win_rate']:.2f}")
            if self.step_count % self.cfg.eval_every == 0 or self.step_count == self.cfg.steps:
                self.evaluate()
            if self.step_count % self.cfg.checkpoint_every == 0 or self.step_count == self.cfg.steps:
                self.save_checkpoint()
        plot_curve(self.metrics.read(), self.out / "curve.png")

    # ------------------------------------------------------------------ one update
    def train_step(self) -> dict:
        """Sample, score and rank fresh rollouts, accumulate the per-timestep loss, update once."""
        cfg = self.cfg
        records: list[dict] = []
        for _ in range(cfg.grad_accum):
            images, labels = self.frames.sample(cfg.frames_per_step, self.rng)
            rollout = self.sample(images, labels)
            self.rank(rollout)
            records.append(self.accumulate(rollout, 1.0 / cfg.grad_accum))
        grad_norm = self.accelerator.clip_grad_norm_(self.params, cfg.max_grad_norm)
        skipped = not bool(torch.isfinite(torch.as_tensor(grad_norm)))
        if skipped:
            logger.warning("step %d: gradient norm is %s; update skipped", self.step_count + 1, grad_norm)
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats = {k: float(np.mean([r[k] for r in records])) for k in records[0]}
        return stats | {"grad_norm": float(grad_norm), "skipped": skipped}

    @torch.no_grad()
    def sample(
        self, images: np.ndarray, labels: np.ndarray, generator: torch.Generator | None = None
    ) -> Rollout:
        """k stochastic edits per frame from the SAME initial noise and condition, with trajectories."""
        from sim2real.editing.guidance import GuidanceScales
        from sim2real.editing.images import to_uint8
        from sim2real.editing.pipeline import Conditions
        from sim2real.editing.samplers import step_log_prob

        cfg, pipe, k = self.cfg, self.pipe, self.cfg.samples_per_frame
        gen = generator or self.generator
        # 1. encode once per frame, then repeat each frame's condition k times (frame-major)
        c = pipe.prepare_conditions(images, self.instruction, self.refs, generator=gen)
        rep = lambda x: None if x is None else x.repeat_interleave(k, dim=0)  # noqa: E731
        cond = Conditions(
            rep(c.image_latents), rep(c.text_embeds), rep(c.uncond_embeds), rep(c.style_latents)
        )
        # 2. one initial noise per frame, shared by its k samples
        pipe.scheduler.set_timesteps(cfg.num_inference_steps, device=pipe.device)
        noise = torch.randn(c.image_latents.shape, generator=gen).to(pipe.device)
        latents = rep(noise) * pipe.scheduler.init_noise_sigma
        scales = GuidanceScales(cfg.guidance_scale, cfg.image_guidance_scale, cfg.style_guidance_scale)
        # 3. denoise with stochastic steps (the k samples part here), recording z_t and log-probs
        traj, logps = [latents], []
        for t in pipe.scheduler.timesteps:
            out = pipe.guided_model_output(
                latents,
                t,
                cond.image_latents,
                cond.style_latents,
                cond.text_embeds,
                cond.uncond_embeds,
                scales,
            )
            latents, lp = step_log_prob(pipe.scheduler, out, t, latents, eta=cfg.eta, generator=gen)
            traj.append(latents)
            logps.append(lp)
        # what the pipeline would return: composited by the matte, colour-calibrated without refs
        calibrate = cond.style_latents is None
        edits = to_uint8(
            pipe.decode(latents, cond.image_latents, cond.text_embeds, calibrate)
        )  # (B·k, H, W, 3)
        return Rollout(
            cond=cond,
            latents=torch.stack(traj, dim=1),
            log_probs=torch.stack(logps, dim=1),
            timesteps=pipe.scheduler.timesteps.clone(),
            inputs=images,
            labels=labels,
            edits=edits.reshape(len(images), k, *edits.shape[1:]),
        )

    def rank(self, rollout: Rollout) -> None:
        """Score all B·k edits at once (z-normalised over the batch, as SPIE) and rank each frame's k."""
        from sim2real.feedback.ranking import full_ordering, pair_preferences_from_groups, pareto_preferences

        b, k = rollout.edits.shape[:2]
        flat = rollout.edits.reshape(b * k, *rollout.edits.shape[2:])
        s = self.scorer(
            np.repeat(rollout.inputs, k, axis=0), flat, np.repeat(rollout.labels, k, axis=0), self.edit
        )
        rollout.scores = {name: np.asarray(v).reshape(b, k) for name, v in s.items()}
        total = rollout.scores["total"]
        if self.cfg.preference == "pareto":
            st, se = rollout.scores["struct"], rollout.scores["sem"]
            p = pareto_preferences(st[:, 0], se[:, 0], st[:, 1], se[:, 1])  # (B,) +1: sample 0 wins
            pref = np.zeros((b, 2, 2), np.int8)
            pref[:, 0, 1], pref[:, 1, 0] = p, -p
        else:
            pref = pair_preferences_from_groups(total)  # (B, k, k)
        rollout.scores["pref"] = pref
        rollout.order = torch.as_tensor(full_ordering(total))

    def step_log_probs(self, rollout: Rollout, frames: torch.Tensor, j: int) -> torch.Tensor:
        """log p(z_{j+1} | z_j) of every sample of `frames` under the model as it is now: (b, k)."""
        from sim2real.editing.guidance import GuidanceScales
        from sim2real.editing.samplers import step_log_prob

        cfg, pipe, k = self.cfg, self.pipe, rollout.k
        rows = (frames[:, None] * k + torch.arange(k)).reshape(-1)  # (b·k,) frame-major sample rows
        c = rollout.cond
        x, x_next = rollout.latents[rows, j], rollout.latents[rows, j + 1]
        t = rollout.timesteps[j]
        scales = GuidanceScales(cfg.guidance_scale, cfg.image_guidance_scale, cfg.style_guidance_scale)
        style = None if c.style_latents is None else c.style_latents[rows]
        with self.accelerator.autocast():
            out = pipe.guided_model_output(
                x, t, c.image_latents[rows], style, c.text_embeds[rows], c.uncond_embeds[rows], scales
            )
        _, lp = step_log_prob(pipe.scheduler, out.float(), t, x, eta=cfg.eta, prev_sample=x_next)
        return lp.view(len(frames), k)

    def accumulate(self, rollout: Rollout, scale: float) -> dict:
        """Back-propagate the method's loss over a random `timestep_fraction` of the steps (D3PO)."""
        cfg = self.cfg
        usable = self.trained_steps(rollout)
        pick = torch.randperm(len(usable), generator=self.generator)[
            : max(1, round(len(usable) * cfg.timestep_fraction))
        ]
        steps = torch.as_tensor(usable)[pick]
        chunks = torch.arange(len(rollout.inputs)).split(cfg.micro_batch)
        n = len(steps) * len(chunks)
        losses, stats, nonfinite = [], [], 0
        for j in steps.tolist():
            for frames in chunks:
                loss, st = self.method(self, rollout, frames, j)
                if not torch.isfinite(loss):
                    nonfinite += 1
                    continue
                self.accelerator.backward(loss * scale / n)
                losses.append(loss.item())
                stats.append(st)
        if nonfinite:
            logger.warning(
                "step %d: %d of %d loss terms were NaN/inf and were skipped",
                self.step_count + 1,
                nonfinite,
                n,
            )
        sc = rollout.scores
        out = {
            "loss": float(np.mean(losses)) if losses else float("nan"),
            "nonfinite_terms": nonfinite,
            "struct": float(sc["struct"].mean()),
            "sem": float(sc["sem"].mean()),
            "dist": float(sc["dist"].mean()),
            "recon": float(sc["recon"].mean()),
            "ties": float((sc["pref"][:, 0, 1:] == 0).mean()),
            "sample_log_prob": float(rollout.log_probs.mean()),
        }
        for key in stats[0] if stats else ():
            out[key] = float(np.mean([s[key] for s in stats]))
        out.setdefault("win_rate", float("nan"))
        return out

    @torch.no_grad()
    def rollout_loss(self, rollout: Rollout) -> float:
        """The method's loss on a stored rollout, averaged over every timestep (no update)."""
        chunks = torch.arange(len(rollout.inputs)).split(self.cfg.micro_batch)
        losses = [
            self.method(self, rollout, f, j)[0].item() for j in self.trained_steps(rollout) for f in chunks
        ]
        return float(np.mean(losses))

    def trained_steps(self, rollout: Rollout) -> list[int]:
        """Indices of the denoising steps the loss uses: all but the last `exclude_last_steps`."""
        return list(range(rollout.latents.shape[1] - 1 - self.cfg.exclude_last_steps))

    # ------------------------------------------------------------------ evaluate
    @torch.no_grad()
    def edit_eval_frames(self, images: np.ndarray) -> np.ndarray:
        """Edits as at inference (the specialist's sampling settings, a fixed seed)."""
        s = self.sampling_settings()
        out = self.pipe(
            images,
            self.instruction,
            style_images=self.refs,
            num_inference_steps=s["num_inference_steps"],
            guidance_scale=s["guidance_scale"],
            image_guidance_scale=s["image_guidance_scale"],
            style_guidance_scale=s["style_guidance_scale"],
            generator=torch.Generator().manual_seed(self.seed + 12345),
            eta=s["eta"],
            progress=False,
        )
        return out.images

    def evaluate(self) -> dict:
        """Raw (un-normalised) scores of the current model on the held-out frames, and a sample grid."""
        images, labels = self.frames.eval_images, self.frames.eval_labels
        edits = self.edit_eval_frames(images)
        s = self.scorer(images, edits, labels, self.edit)
        rec = {name: float(np.mean(s[name])) for name in ("struct", "sem", "dist", "recon")}
        self.metrics.log(kind="eval", step=self.step_count, **rec)
        write_grid(self.out / "samples" / f"step_{self.step_count:05d}.png", images, edits, self.refs)
        logger.info("eval step %d: %s", self.step_count, ", ".join(f"{k} {v:.4f}" for k, v in rec.items()))
        return rec

    # ------------------------------------------------------------------ save
    def save_checkpoint(self) -> Path:
        from sim2real.utils import atomic_path

        folder = self.out / "checkpoints"
        path = folder / f"step_{self.step_count:06d}.pt"
        state = {
            "step": self.step_count,
            "trainable": {n: p.detach().cpu() for n, p in self._trainable_state().items()},
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(state, tmp)
        for old in sorted(folder.glob("step_*.pt"))[: -self.cfg.keep_checkpoints]:
            old.unlink()
        return path

    def load_checkpoint(self) -> bool:
        """Continue from the newest checkpoint in `<out>/checkpoints` (metrics past it are dropped)."""
        found = sorted((self.out / "checkpoints").glob("step_*.pt"))
        if not found:
            return False
        state = torch.load(found[-1], map_location="cpu", weights_only=False)
        params = self._trainable_state()
        if sorted(state["trainable"]) != sorted(params):
            raise Sim2RealError(
                f"{found[-1]} was written by a different model setup (LoRA rank, trainable modules); "
                "use a new --out or overwrite=true"
            )
        with torch.no_grad():
            for name, value in state["trainable"].items():
                params[name].copy_(value)
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step_count = int(state["step"])
        kept = [r for r in self.metrics.read() if r.get("step", 0) <= self.step_count]
        self.metrics.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        logger.info("resumed from %s (step %d of %d)", found[-1], self.step_count, self.cfg.steps)
        return True

    def export(self, folder: str | Path) -> Path:
        """Merge LoRA into the UNet and write an `EditPipeline` folder into `folder` (kept files stay).

        After this the trainer cannot train further (the adapters are fused and removed).
        """
        import shutil

        folder = Path(folder)
        unet = self.pipe.unet
        unet.fuse_lora()
        unet.unload_lora()
        tmp = folder / ".editor.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.pipe.save_pretrained(tmp)
        for child in tmp.iterdir():
            dest = folder / child.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(child, dest)
        tmp.rmdir()
        return folder


def plot_curve(records: list[dict], path: Path) -> Path | None:
    """Training curve: raw scores of the rollouts (per step) and of the held-out edits (per epoch)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("struct", "sem")
    if not records:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2))
    for ax, key in zip(axes, keys, strict=True):
        for kind, style in (("train", "-"), ("eval", "o-")):
            rows = [r for r in records if r.get("kind") == kind and key in r]
            ax.plot(
                [r["step"] for r in rows],
                [r[key] for r in rows],
                style,
                label=f"{kind} ({'rollouts' if kind == 'train' else 'held-out'})",
            )
        ax.set_xlabel("update")
        ax.set_ylabel(f"{key} (lower is better)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_grid(path: Path, inputs: np.ndarray, edits: np.ndarray, refs: np.ndarray, scale: int = 2) -> Path:
    """Rows: input | edit | one reference (cycled), upscaled `scale`× for viewing."""
    import cv2

    from sim2real.utils import atomic_path

    rows = []
    for i, (a, b) in enumerate(zip(inputs, edits, strict=True)):
        rows.append(np.concatenate([a, b, refs[i % len(refs)]], axis=1))  # (H, 3W, 3)
    grid = np.concatenate(rows, axis=0)
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return path


def load_editor(base: str | Path | None = None) -> EditPipeline:
    """The editor to specialise: a folder written by `EditPipeline.save_pretrained` (a base editor or
    another specialist), or the shipped base editor when `base` is None."""
    from sim2real.editing.pipeline import EditPipeline

    if base is not None:
        return EditPipeline.from_pretrained(base)
    try:
        from sim2real.training.base_editor import load_base_editor
    except ImportError as e:
        raise Sim2RealError(
            "no shipped base editor in this install; pass --base DIR (an editor folder)"
        ) from e
    return load_base_editor()
