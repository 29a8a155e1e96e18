"""HIVE's reward fine-tuning as a specialist method: `sim2real specialize --method hive-weighted|hive-condition`.

    sim2real specialize --refs real/*.png --edit background --out runs/bg_hive --method hive-condition
    sim2real specialize ... --method hive-weighted hive.eta=0.5 hive.rankings=my_rankings.json

HIVE (Zhang et al.) fine-tunes an instruction editor OFFLINE from a learned reward, in three stages
that `fit_hive` runs on the D3PO trainer's machinery (frames, sampler, feedback, LoRA, checkpoints,
evaluation, export), with the same budget knob (number of sampled edits):

1. sample: `train.steps × train.grad_accum × train.frames_per_step` frames, each edited k =
   `train.samples_per_frame` times from the frozen BASE editor (same noise per frame, η-stochastic
   steps), ranked by the AI-feedback scores. D3PO samples the same number of edits, on-policy.
2. reward model (`sim2real.training.reward_model`): Bradley–Terry on those rankings (or on a human
   rankings file, `hive.rankings`), `hive.val_fraction` of the inputs held out for agreement.
3. fine-tune for `train.steps` updates on the sampled edits with the editor's own denoising target
   (here the clean residual, `prediction_type="sample"`, as the base-editor trainer's `_target`; HIVE's
   ε − ε_θ is the ε-parameterised case of the same loss):
   * `hive-weighted`: `w·‖target − f_θ(z_t, t, c)‖²`, w = exp(R/η) normalised per batch as
     `B·softmax(R/η)` (mean weight 1: the learning rate means the same for every batch, and only
     reward differences inside the batch matter, as with any exp(R/η) up to a constant);
   * `hive-condition`: plain loss with c̃ = instruction + ", the image quality is N out of five",
     N from five quantile bins of the rewards; the specialist asks for "five out of five".
   Rewards are first centred per input (`hive.center=group`: BT leaves each input's offset free,
   so only differences between edits of the same input carry information) and divided by their
   standard deviation over the sampled set, so η is in reward standard deviations.

Vocabulary: the tiny word-level tokenizer lacks "image quality is one … five out"; `hive-condition`
adds the missing words to the tokenizer and new rows to the text encoder's embedding matrix (seeded
random rows with the existing rows' scale, frozen like the rest of the text encoder, so the LoRA-
tuned UNet learns to read them). The specialist folder carries the extended tokenizer and encoder.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from sim2real.errors import Sim2RealError
from sim2real.training.d3po import Rollout, register_method
from sim2real.training.reward_model import RewardModelConfig

if TYPE_CHECKING:
    from sim2real.editing.pipeline import EditPipeline
    from sim2real.training.d3po import SpecialistTrainer

logger = logging.getLogger(__name__)

N_BINS = 5
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five")
QUALITY_WORDS = ("the", "image", "quality", "is", "out", "of", ",", *NUMBER_WORDS[1:])


@dataclass
class HiveConfig:
    """HIVE's settings (the budget, optimizer, LoRA and sampling come from `train`: D3POConfig).

    eta: η of the exponential reward weight exp(R/η), in units of the rewards' standard deviation.
    center: `group` subtracts each input's mean reward (see module docstring) or `none` (HIVE's as is).
    noise_draws: independent (t, ε) draws per sampled edit in each update (the denoising loss is a
        Monte-Carlo average over t; D3PO uses every denoising step of its trajectories instead).
    dropout_p: InstructPix2Pix conditioning dropout per pattern during fine-tuning (as the base editor).
    rankings: a `sim2real-rankings/1` JSON file (human rankings) to train the reward model on
        instead of the AI-feedback rankings of the sampled edits.
    reward_model: a folder written by `RewardModel.save_pretrained` to use as is (no training).
    val_fraction: share of the sampled inputs held out from reward-model training; their pairwise
        agreement with the AI-feedback ranking is logged (`kind: reward_model` in metrics.jsonl).
    export_rankings: write the AI-feedback rankings of the sampled edits as `hive/rankings/rankings.json`
        (the documented format) so a person can re-rank them.
    steps: fine-tuning updates (None = `train.steps`). The budget (sampled edits) is fixed by
        `train.steps` as for D3PO; an offline update costs no sampling (measured ~3 s per update of
        4 frames × 2 edits × 4 noise draws vs ~15-30 s for a D3PO update), so more passes over the
        sampled edits are cheap.
    learning_rate: AdamW learning rate of the fine-tuning (None = `train.learning_rate`).
    reward: the reward model head and its training.
    """

    eta: float = 1.0
    center: Literal["group", "none"] = "group"
    noise_draws: int = 4
    dropout_p: float = 0.05
    rankings: str | None = None
    reward_model: str | None = None
    val_fraction: float = 0.2
    export_rankings: bool = True
    steps: int | None = None
    learning_rate: float | None = None
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)

    def __post_init__(self) -> None:
        if self.eta <= 0 or self.noise_draws < 1:
            raise ValueError(f"need eta > 0 and noise_draws >= 1; got {self.eta=}, {self.noise_draws=}")
        if (self.steps is not None and self.steps < 0) or (
            self.learning_rate is not None and self.learning_rate <= 0
        ):
            raise ValueError(
                f"need steps >= 0 and learning_rate > 0; got {self.steps=}, {self.learning_rate=}"
            )
        if self.center not in ("group", "none"):
            raise ValueError(f"center must be group or none; got {self.center=}")
        if not 0.0 <= self.dropout_p <= 0.25 or not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"need 0 <= dropout_p <= 0.25, 0 < val_fraction < 1; got {self.dropout_p=}, {self.val_fraction=}"
            )


# --- pure functions -----------------------------------------------------------------------------------------


def reward_weights(rewards: torch.Tensor, eta: float) -> torch.Tensor:
    """exp(R/η) normalised over the batch to mean 1: `B·softmax(R/η)`; `(B,)` → `(B,)`, no gradient."""
    if eta <= 0:
        raise ValueError(f"eta must be > 0; got {eta=}")
    r = rewards.detach().reshape(-1)
    return len(r) * torch.softmax(r / eta, dim=0)


def weighted_reward_loss(per_sample: torch.Tensor, rewards: torch.Tensor, eta: float) -> torch.Tensor:
    """HIVE's ℓ_WR for one batch: mean_i w_i·‖target − f_θ‖²_i with w = `reward_weights(rewards, eta)`.

    per_sample: `(B,)` denoising errors (with gradients); rewards: `(B,)`.
    """
    if per_sample.shape != rewards.shape or per_sample.ndim != 1:
        raise ValueError(
            f"need (B,) errors and rewards; got {tuple(per_sample.shape)=} {tuple(rewards.shape)=}"
        )
    return (reward_weights(rewards, eta).to(per_sample.dtype) * per_sample).mean()


def center_rewards(rewards: np.ndarray, mode: Literal["group", "none"] = "group") -> np.ndarray:
    """`(N, k)` rewards → centred per group (`group`) and divided by the std over all N·k (both modes)."""
    r = np.asarray(rewards, dtype=np.float64)
    if mode == "group":
        r = r - r.mean(axis=1, keepdims=True)
    return r / max(float(r.std()), 1e-8)


def quantile_bins(rewards: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Quality levels 1…n_bins from the empirical quantiles of `rewards` (any shape): a reward in
    the bottom 1/n_bins of the distribution gets 1, one in the top 1/n_bins gets n_bins (HIVE)."""
    r = np.asarray(rewards, dtype=np.float64)
    edges = np.quantile(r, np.arange(1, n_bins) / n_bins)
    return (1 + np.digitize(r, edges, right=True)).astype(np.int64)


def quality_prompt(instruction: str, level: int) -> str:
    """`instruction` + ", the image quality is N out of five" (HIVE's c_R as text)."""
    if not 1 <= level <= N_BINS:
        raise ValueError(f"level must be in 1..{N_BINS}; got {level=}")
    return f"{instruction.strip().rstrip('.')}, the image quality is {NUMBER_WORDS[level]} out of five"


# --- vocabulary ---------------------------------------------------------------------------------------------


def ensure_words(pipe: EditPipeline, words: tuple[str, ...] = QUALITY_WORDS, seed: int = 0) -> list[str]:
    """Add `words` missing from a word-level tokenizer, with new text-embedding rows; returns those added.

    Existing ids are kept (the tokenizer is rebuilt over the old vocabulary in id order plus the new
    words). New rows: seeded normal with the existing rows' per-dimension std, so they are distinct
    and on scale; deterministic, so a resumed run rebuilds the same rows. A tokenizer that is not
    word-level (e.g. a real CLIP BPE) knows these words already and is left as it is.
    """
    from tokenizers.models import WordLevel

    from sim2real.editing.text import SPECIAL_TOKENS, build_word_tokenizer

    tok = pipe.tokenizer
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or not isinstance(backend.model, WordLevel):
        return []
    vocab = tok.get_vocab()
    missing = [w for w in dict.fromkeys(words) if w not in vocab]
    if not missing:
        return []
    old = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w not in SPECIAL_TOKENS]
    new = build_word_tokenizer(old + missing, max_length=tok.model_max_length)
    if any(new.get_vocab()[w] != i for w, i in vocab.items()):
        raise Sim2RealError("cannot extend this tokenizer without renumbering its vocabulary")
    enc = pipe.text_encoder
    emb = enc.get_input_embeddings().weight
    n_old = emb.shape[0]
    std = emb.detach().float().std(dim=0)  # (D,)
    enc.resize_token_embeddings(len(new), mean_resizing=False)  # rows set below
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = enc.get_input_embeddings().weight
        rows = torch.randn(len(new) - n_old, w.shape[1], generator=g) * std
        w[n_old:] = rows.to(device=w.device, dtype=w.dtype)
    enc.requires_grad_(False)
    pipe.tokenizer = new
    logger.info("hive: added %d words to the tokenizer and text encoder: %s", len(missing), " ".join(missing))
    return missing


# --- the offline set of sampled edits -------------------------------------------------------------------------


@dataclass
class SampledEdits:
    """G frames × k edits sampled from the base editor, with what fine-tuning needs.

    x0: (G·k, C, h, w) clean diffused variable of each edit (frame-major); image_latents (G, C, h, w);
    style_latents (G, C, h, w) or None; inputs (G, H, W, 3), labels (G, H, W), edits (G, k, H, W, 3)
    uint8; scores: (G, k) arrays (struct, sem, dist, recon, total: lower is better).
    """

    x0: torch.Tensor
    image_latents: torch.Tensor
    style_latents: torch.Tensor | None
    inputs: np.ndarray
    labels: np.ndarray
    edits: np.ndarray
    scores: dict[str, np.ndarray]

    @property
    def k(self) -> int:
        return self.edits.shape[1]

    def save(self, path: Path) -> None:
        from sim2real.utils import atomic_path

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(self.__dict__, tmp)

    @classmethod
    def load(cls, path: Path) -> SampledEdits:
        return cls(**torch.load(path, map_location="cpu", weights_only=False))

    @classmethod
    def concat(cls, parts: list[SampledEdits]) -> SampledEdits:
        """One set of the parts' frames in order (all with the same k)."""
        cat = lambda xs: torch.cat(xs) if xs[0] is not None else None  # noqa: E731
        return cls(
            x0=cat([p.x0 for p in parts]),
            image_latents=cat([p.image_latents for p in parts]),
            style_latents=cat([p.style_latents for p in parts]),
            inputs=np.concatenate([p.inputs for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            edits=np.concatenate([p.edits for p in parts]),
            scores={n: np.concatenate([p.scores[n] for p in parts]) for n in parts[0].scores},
        )


@torch.no_grad()
def sample_base_edits(trainer: SpecialistTrainer, n_frames: int) -> SampledEdits:
    """Edit `n_frames` training frames k times each with the frozen base editor and rank them."""
    from sim2real.utils import tqdm

    fps, parts = trainer.cfg.frames_per_step, []
    for _ in tqdm(range(math.ceil(n_frames / fps)), desc="hive: sample base edits"):
        images, labels = trainer.frames.sample(fps, trainer.rng)
        with trainer.reference():
            r = trainer.sample(images, labels)
        trainer.rank(r)
        k = r.k
        c = r.cond
        parts.append(
            SampledEdits(
                x0=r.latents[:, -1].cpu(),
                image_latents=c.image_latents[::k].cpu(),
                style_latents=None if c.style_latents is None else c.style_latents[::k].cpu(),
                inputs=r.inputs,
                labels=r.labels,
                edits=r.edits,
                scores={n: r.scores[n] for n in ("struct", "sem", "dist", "recon", "total")},
            )
        )
    return SampledEdits.concat(parts)


# --- the losses as trainer methods ------------------------------------------------------------------------------


def _denoising_errors(trainer: SpecialistTrainer, rollout: Rollout, rows: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖target − f_θ(z_t, t, c)‖² `(n,)` of the rollout's clean samples at a random t."""
    from sim2real.editing.guidance import conditioning_dropout
    from sim2real.training.base_editor import _target

    pipe, gen, dev = trainer.pipe, trainer.generator, trainer.pipe.device
    hcfg: HiveConfig = trainer.hive_cfg
    c = rollout.cond
    x0 = rollout.latents[rows, -1].to(dev)  # (n, C, h, w)
    noise = torch.randn(x0.shape, generator=gen).to(dev)
    t = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (len(rows),), generator=gen).to(dev)
    z_t = pipe.scheduler.add_noise(x0, noise, t)
    dropped = conditioning_dropout(
        c.image_latents[rows], c.text_embeds[rows], c.uncond_embeds[rows], p=hcfg.dropout_p, generator=gen
    )
    style = None if c.style_latents is None else c.style_latents[rows]
    with trainer.accelerator.autocast():
        pred = pipe.model_output(
            z_t, t, dropped.image_latents, style, dropped.text_embeds, style_keep=dropped.style_keep
        )
    return ((pred.float() - _target(pipe, x0, noise, t).float()) ** 2).mean(dim=(1, 2, 3))  # (n,)


def _rows(rollout: Rollout, frames: torch.Tensor) -> torch.Tensor:
    return (frames[:, None] * rollout.k + torch.arange(rollout.k)).reshape(-1)  # frame-major sample rows


def _require_rewards(trainer: SpecialistTrainer, rollout: Rollout) -> None:
    if "reward" not in rollout.scores or getattr(trainer, "hive_cfg", None) is None:
        raise Sim2RealError("HIVE methods train offline from a reward model: run them through hive.fit_hive")


def hive_weighted_method(
    trainer: SpecialistTrainer, rollout: Rollout, frames: torch.Tensor, j: int
) -> tuple[torch.Tensor, dict]:
    """ℓ_WR on the rollout's sampled edits (`j` unused: the denoising loss draws its own t)."""
    _require_rewards(trainer, rollout)
    rows = _rows(rollout, frames)
    err = _denoising_errors(trainer, rollout, rows)
    r = torch.as_tensor(rollout.scores["reward"], dtype=err.dtype).reshape(-1)[rows]
    w = reward_weights(r, trainer.hive_cfg.eta)
    loss = weighted_reward_loss(err, r, trainer.hive_cfg.eta)
    return loss, {"mse": err.mean().item(), "weight_max": w.max().item(), "win_rate": float("nan")}


def hive_condition_method(
    trainer: SpecialistTrainer, rollout: Rollout, frames: torch.Tensor, j: int
) -> tuple[torch.Tensor, dict]:
    """ℓ_CR: the plain denoising loss; the quality text is already in the rollout's text embeddings."""
    _require_rewards(trainer, rollout)
    err = _denoising_errors(trainer, rollout, _rows(rollout, frames))
    return err.mean(), {"mse": err.mean().item(), "win_rate": float("nan")}


register_method("hive-weighted", hive_weighted_method)
register_method("hive-condition", hive_condition_method)


# --- setup → fit → step ---------------------------------------------------------------------------------------


@dataclass
class HiveData:
    """What every update draws from: the sampled edits, their rewards, and the text conditions."""

    edits: SampledEdits
    rewards: np.ndarray  # (G, k) centred, in std units
    levels: np.ndarray  # (G, k) quality levels 1..5 (hive-condition) or zeros
    text_embeds: torch.Tensor  # (G, k, L, D) per edit
    uncond_embeds: torch.Tensor  # (1, L, D)

    def rollout(self, groups: np.ndarray) -> Rollout:
        """The chosen frames' k edits as a `Rollout` (only the clean sample z_0 in `latents`)."""
        e, k = self.edits, self.edits.k
        rows = torch.as_tensor((groups[:, None] * k + np.arange(k)).reshape(-1))
        g = torch.as_tensor(groups).repeat_interleave(k)
        from sim2real.editing.pipeline import Conditions

        cond = Conditions(
            e.image_latents[g],
            self.text_embeds[torch.as_tensor(groups)].flatten(0, 1),
            self.uncond_embeds.expand(len(rows), -1, -1),
            None if e.style_latents is None else e.style_latents[g],
        )
        scores = {n: v[groups] for n, v in e.scores.items()}
        scores["reward"] = self.rewards[groups]
        return Rollout(
            cond=cond,
            latents=e.x0[rows][:, None],  # (B·k, 1, C, h, w)
            log_probs=torch.zeros(len(rows), 0),
            timesteps=torch.zeros(0, dtype=torch.long),
            inputs=e.inputs[groups],
            labels=e.labels[groups],
            edits=e.edits[groups],
            scores=scores,
        )


def rankings_of(edits: SampledEdits, instruction: str):
    """The AI-feedback ranking of the sampled edits as a `RankingSet` (lower total = better)."""
    from sim2real.training.reward_model import RankingSet, ranks_from_scores

    n = len(edits.inputs)
    return RankingSet(edits.inputs, edits.edits, [instruction] * n, ranks_from_scores(edits.scores["total"]))


def build_reward_model(trainer: SpecialistTrainer, cfg: HiveConfig, data, folder: Path):
    """Load (`cfg.reward_model` or an earlier run's), or train on human rankings or the AI rankings."""
    from sim2real.training.reward_model import (
        RewardModel,
        fit_reward_model,
        load_rankings,
        pairwise_agreement,
    )

    pipe = trainer.pipe
    for src in (cfg.reward_model, folder if (folder / "reward_model.json").exists() else None):
        if src is not None:
            logger.info("hive: reward model from %s", src)
            return RewardModel.from_pretrained(src, pipe)
    rm = RewardModel(pipe, cfg.reward)
    if cfg.rankings:
        train, val = load_rankings(cfg.rankings, size=data.inputs.shape[1]), data
        source = cfg.rankings
    else:
        train, val = data.split(cfg.val_fraction, seed=trainer.seed)
        source = "ai-feedback"
    hist = fit_reward_model(rm, train, val)
    e = hist.chosen_epoch  # picked on inputs carved from `train` (early stopping), never on `val`
    rec = {
        "source": source,
        "features": cfg.reward.features,
        "train_groups": len(train),
        "stop_groups": hist.stop_groups,
        "heldout_groups": len(val),
        "chosen_epoch": e,
        "train_agreement": hist.train_agreement[e - 1] if e else float("nan"),
        "heldout_agreement": hist.val_agreement[e - 1] if e else float("nan"),
        "heldout_agreement_curve": hist.val_agreement,
        "final_loss": hist.loss[-1] if hist.loss else float("nan"),
        "all_agreement": pairwise_agreement(rm.score_groups(data), data.ranks),
    }
    trainer.metrics.log(kind="reward_model", step=0, **rec)
    logger.info(
        "hive: reward model agreement with AI-feedback ranking: train %.3f, held-out %.3f (%d groups)",
        rec["train_agreement"],
        rec["heldout_agreement"],
        len(val),
    )
    rm.save_pretrained(folder)
    return rm


def prepare(trainer: SpecialistTrainer, cfg: HiveConfig, method: str) -> HiveData:
    """Stages 1–2: the sampled edits (cached in `<out>/hive/`), the reward model, rewards, conditions."""
    tcfg, out = trainer.cfg, trainer.out / "hive"
    path = out / "sampled_edits.pt"
    n_frames = tcfg.steps * tcfg.grad_accum * tcfg.frames_per_step
    if path.exists():
        edits = SampledEdits.load(path)
        if edits.k != tcfg.samples_per_frame or len(edits.inputs) < n_frames:
            raise Sim2RealError(
                f"{path} holds {len(edits.inputs)} frames x {edits.k} edits, but this run needs {n_frames} x "
                f"{tcfg.samples_per_frame} (settings changed); use another --out or overwrite=true"
            )
    else:
        edits = sample_base_edits(trainer, n_frames)
        edits.save(path)
    base_instruction = trainer.instruction
    ranked = rankings_of(edits, base_instruction)
    if cfg.export_rankings and not (out / "rankings" / "rankings.json").exists():
        from sim2real.training.reward_model import save_rankings

        save_rankings(out / "rankings" / "rankings.json", ranked, scores=edits.scores["total"])
    rm = build_reward_model(trainer, cfg, ranked, out / "reward_model")
    rewards = center_rewards(rm.score_groups(ranked), cfg.center)  # (G, k)
    pipe = trainer.pipe
    with torch.no_grad():
        uncond = pipe.encode_prompt([""]).cpu()  # (1, L, D)
        if method == "hive-condition":
            ensure_words(pipe, seed=trainer.seed)
            levels = quantile_bins(rewards)
            per_level = pipe.encode_prompt(
                [quality_prompt(base_instruction, n) for n in range(1, N_BINS + 1)]
            )
            text = per_level.cpu()[torch.as_tensor(levels - 1)]  # (G, k, L, D)
            trainer.instruction = quality_prompt(base_instruction, N_BINS)  # what the specialist asks for
        else:
            levels = np.zeros_like(rewards, dtype=np.int64)
            text = pipe.encode_prompt([base_instruction]).cpu()[None].expand(*rewards.shape, -1, -1)
    return HiveData(edits, rewards, levels, text, uncond)


def fit_hive(trainer: SpecialistTrainer, cfg: HiveConfig, resume: bool = True) -> None:
    """Train a HIVE specialist with `trainer` (built with method hive-weighted or hive-condition)."""
    from sim2real.utils import tqdm

    method = trainer.method_name
    if method not in ("hive-weighted", "hive-condition"):
        raise Sim2RealError(f"fit_hive trains hive-weighted or hive-condition; got method {method!r}")
    trainer.hive_cfg = cfg
    if resume:
        trainer.load_checkpoint()
    else:  # a fresh run must not reuse an earlier run's sampled edits or reward model
        import shutil

        shutil.rmtree(trainer.out / "hive", ignore_errors=True)
    if trainer.step_count == 0:
        trainer.evaluate()  # the curve starts at the base editor, with the plain instruction
    data = prepare(trainer, cfg, method)
    steps = trainer.cfg.steps if cfg.steps is None else cfg.steps
    if cfg.learning_rate is not None:
        for group in trainer.optimizer.param_groups:
            group["lr"] = cfg.learning_rate
    bar = tqdm(
        range(trainer.step_count, steps),
        desc=f"specialize {trainer.edit} ({method})",
        initial=trainer.step_count,
        total=steps,
    )
    for _ in bar:
        stats = train_step(trainer, data)
        trainer.step_count += 1
        trainer.metrics.log(kind="train", step=trainer.step_count, **stats)
        bar.set_postfix(loss=f"{stats['loss']:.4f}")
        if trainer.step_count % trainer.cfg.eval_every == 0 or trainer.step_count == steps:
            trainer.evaluate()
        if trainer.step_count % trainer.cfg.checkpoint_every == 0 or trainer.step_count == steps:
            trainer.save_checkpoint()


def train_step(trainer: SpecialistTrainer, data: HiveData) -> dict:
    """One update: `grad_accum` batches of `frames_per_step` frames × k sampled edits, `noise_draws` t each."""
    import time

    t0 = time.time()
    tcfg, hcfg = trainer.cfg, trainer.hive_cfg
    n_groups = len(data.edits.inputs)
    records = []
    for _ in range(tcfg.grad_accum):
        groups = np.sort(
            trainer.rng.choice(n_groups, size=tcfg.frames_per_step, replace=n_groups < tcfg.frames_per_step)
        )
        rollout = data.rollout(groups)
        chunks = torch.arange(len(groups)).split(tcfg.micro_batch)
        n = hcfg.noise_draws * len(chunks) * tcfg.grad_accum
        for _ in range(hcfg.noise_draws):
            for frames in chunks:
                loss, st = trainer.method(trainer, rollout, frames, 0)
                if not torch.isfinite(loss):
                    logger.warning("step %d: non-finite HIVE loss term skipped", trainer.step_count + 1)
                    continue
                trainer.accelerator.backward(loss / n)
                records.append({"loss": loss.item()} | {k: v for k, v in st.items() if k != "win_rate"})
        records[-1]["reward_batch_std"] = float(rollout.scores["reward"].std())
    grad_norm = trainer.accelerator.clip_grad_norm_(trainer.params, tcfg.max_grad_norm)
    skipped = not bool(torch.isfinite(torch.as_tensor(grad_norm)))
    if skipped:
        logger.warning("step %d: gradient norm is %s; update skipped", trainer.step_count + 1, grad_norm)
    else:
        trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    keys = dict.fromkeys(k for r in records for k in r)
    stats = {k: float(np.mean([r[k] for r in records if k in r])) for k in keys}
    return stats | {"grad_norm": float(grad_norm), "skipped": skipped, "step_time_s": time.time() - t0}
