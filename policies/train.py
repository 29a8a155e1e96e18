"""`sim2real pretrain-policy`: train the diffusion policy on (edited) sim data, measure it zero-shot on real.

    sim2real pretrain-policy --train sim.zarr --eval-real real.zarr --out runs/policy
    sim2real pretrain-policy --train sim.zarr --eval-real real.zarr --out runs/random --init random steps=0
    sim2real pretrain-policy --train sim.zarr --out runs/ft --init runs/policy steps=0 finetune_real=real.zarr

Layers: `setup` (data, normaliser, model, optimiser, resume) → `fit` (steps) → `save_checkpoint` →
`zero_shot` (writes zero_shot.json) → `finetune` (one epoch on real data, MSE curve → finetune_curve.csv).
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file

from policies.checkpoint import CKPT_DIR, load_policy, resolve_checkpoint, save_checkpoint
from policies.config import ARCH_FIELDS, PolicyConfig
from policies.dataset import Normalizer, SequenceDataset, load_pusht, policy_dataset, split_episodes
from policies.metrics import action_mse
from policies.model import DiffusionPolicy, count_parameters
from sim2real.config import to_dict
from sim2real.errors import Sim2RealError
from sim2real.utils import MetricsLogger, atomic_path, seed_everything, tqdm, write_json

log = logging.getLogger(__name__)


@dataclass
class PolicyTrainConfig:
    """Config of `pretrain-policy` (YAML: configs/pretrain_policy.yaml, presets: configs/policy/).

    Fields:
        train: training zarr (sim or edited sim); out: run folder.
        eval_real: real zarr for the zero-shot action MSE at the end (optional).
        init: `random`, or a policy run/checkpoint folder to start from (its architecture and
            normalisation stats are kept; optimisation fields come from `policy`).
        finetune_real: real zarr to fine-tune on for one epoch after pretraining, recording the MSE on
            held-out real episodes every `finetune_eval_every` steps (Fig. 8 right).
        policy: model and optimisation preset (`policy=quick|paper`, `policy.batch_size=…`).
        steps: optimisation steps (0 = evaluate `init` as it is); time_limit_min: stop earlier (0 = off).
        val_ratio: share of training episodes held out for the validation loss/MSE; seed: split, init, order.
        log_every / eval_every / checkpoint_every: steps between those.
        val_windows: validation windows for the val loss and val MSE.
        zero_shot_stride / zero_shot_seed / eval_batch_size: the metric's window stride, noise seed, batch.
        finetune_holdout: share of real episodes held out for the curve; finetune_eval_stride: its stride.
        max_nan_steps: consecutive non-finite losses tolerated (each skipped) before giving up.
        num_threads: torch CPU threads; device: `cpu` or `cuda`.
    """

    train: Path | None = None
    out: Path | None = None
    eval_real: Path | None = None
    init: str = "random"
    finetune_real: Path | None = None
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    steps: int = 2000
    time_limit_min: float = 0.0
    val_ratio: float = 0.05
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500
    checkpoint_every: int = 500
    val_windows: int = 256
    zero_shot_stride: int = 1
    zero_shot_seed: int = 0
    eval_batch_size: int = 64
    finetune_holdout: float = 0.2
    finetune_eval_every: int = 10
    finetune_eval_stride: int = 1
    max_nan_steps: int = 10
    num_threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.train is None or self.out is None:
            raise ValueError(f"train and out are required; got {self.train=}, {self.out=}")
        self.train, self.out = Path(self.train), Path(self.out)
        self.eval_real = Path(self.eval_real) if self.eval_real else None
        self.finetune_real = Path(self.finetune_real) if self.finetune_real else None
        if isinstance(self.policy, dict):
            self.policy = PolicyConfig(**self.policy)
        if self.steps < 0 or self.time_limit_min < 0:
            raise ValueError(
                f"steps and time_limit_min must be >= 0; got {self.steps=}, {self.time_limit_min=}"
            )
        if min(self.log_every, self.eval_every, self.checkpoint_every, self.finetune_eval_every) < 1:
            raise ValueError("log_every, eval_every, checkpoint_every and finetune_eval_every must be >= 1")
        if not 0 <= self.val_ratio < 1 or not 0 < self.finetune_holdout < 1:
            raise ValueError(f"need 0 <= val_ratio < 1 and 0 < finetune_holdout < 1; got {self.val_ratio=}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda; got {self.device=}")


# ----------------------------------------------------------------------------------------------------
# setup


@dataclass
class Trainer:
    """Everything `fit` mutates."""

    model: DiffusionPolicy
    ema_model: DiffusionPolicy
    ema: EMAModel
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    normalizer: Normalizer
    step: int = 0

    def state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "ema": self.ema.state_dict(),
        }


def build_trainer(cfg: PolicyConfig, normalizer: Normalizer, total_steps: int, device: str) -> Trainer:
    model = DiffusionPolicy(cfg).to(device)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    ema = EMAModel(
        model.parameters(), decay=cfg.ema_max_decay, use_ema_warmup=True, power=cfg.ema_power, inv_gamma=1.0
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    lr_scheduler = get_scheduler(
        cfg.lr_scheduler,
        optimizer,
        num_warmup_steps=cfg.lr_warmup_steps,
        num_training_steps=max(total_steps, 1),
    )
    return Trainer(model, ema_model, ema, optimizer, lr_scheduler, normalizer)


def _policy_config(cfg: PolicyTrainConfig) -> tuple[PolicyConfig, Normalizer | None, Path | None]:
    """The preset, with the architecture of `init` when it names a checkpoint."""
    if cfg.init == "random":
        return cfg.policy, None, None
    ckpt = resolve_checkpoint(cfg.init)
    model, normalizer = load_policy(ckpt)
    merged = cfg.policy.to_dict() | {k: model.cfg.to_dict()[k] for k in ARCH_FIELDS}
    return PolicyConfig.from_dict(merged), normalizer, ckpt


def setup(cfg: PolicyTrainConfig) -> tuple[Trainer, SequenceDataset, SequenceDataset]:
    torch.set_num_threads(cfg.num_threads)
    seed_everything(cfg.seed)
    pcfg, init_norm, init_ckpt = _policy_config(cfg)
    data = load_pusht(cfg.train, pcfg.image_size)
    train_eps, val_eps = split_episodes(data.n_episodes, cfg.val_ratio, cfg.seed)
    normalizer = init_norm or Normalizer.fit(data, train_eps)
    trainer = build_trainer(pcfg, normalizer, cfg.steps, cfg.device)
    resumed = _resume(cfg.out, trainer)
    if not resumed and init_ckpt is not None:
        weights = load_file(init_ckpt / "model.safetensors")
        trainer.model.load_state_dict(weights)
        trainer.ema_model.load_state_dict(weights)
        trainer.ema.shadow_params = [p.clone().detach() for p in trainer.model.parameters()]
        log.info("initialised from %s (its normalisation stats kept)", init_ckpt)
    if not resumed:
        trainer.ema.copy_to(trainer.ema_model.parameters())
    train_set = policy_dataset(data, train_eps, pcfg, trainer.normalizer)
    val_set = policy_dataset(data, val_eps, pcfg, trainer.normalizer)
    log.info(
        "policy: encoder %.2f M, U-Net %.2f M parameters; %d train / %d val episodes, %d / %d windows",
        count_parameters(trainer.model.encoder) / 1e6, count_parameters(trainer.model.unet) / 1e6,
        len(train_eps), len(val_eps), len(train_set), len(val_set),
    )  # fmt: skip
    return trainer, train_set, val_set


def _resume(out: Path, trainer: Trainer) -> bool:
    ckpt = out / CKPT_DIR
    if not (ckpt / "trainer.pt").exists():
        return False
    trainer.model.load_state_dict(load_file(ckpt / "train_model.safetensors"))
    trainer.ema_model.load_state_dict(load_file(ckpt / "model.safetensors"))
    state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=False)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    trainer.ema.load_state_dict(state["ema"])
    trainer.normalizer = Normalizer.load(ckpt / "normalizer.json")
    trainer.step = int(json.loads((ckpt / "trainer_state.json").read_text()).get("step", 0))
    log.info("resuming %s from step %d", out, trainer.step)
    return True


# ----------------------------------------------------------------------------------------------------
# fit


def train_step(trainer: Trainer, batch: dict[str, torch.Tensor], grad_clip: float = 0.0) -> float:
    """One optimisation step; returns the loss, or NaN (and changes nothing) when it is not finite."""
    model = trainer.model
    loss = model.compute_loss(batch)
    if not torch.isfinite(loss):
        trainer.optimizer.zero_grad(set_to_none=True)
        return float("nan")
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.lr_scheduler.step()
    trainer.ema.step(model.parameters())
    return loss.item()


@torch.no_grad()
def val_loss(model: DiffusionPolicy, dataset: SequenceDataset, n_windows: int, batch_size: int) -> float:
    """Denoising loss on fixed windows with fixed noise (torch RNG forked, so training is unaffected)."""
    if len(dataset) == 0:
        return float("nan")
    ids = np.linspace(0, len(dataset) - 1, min(n_windows, len(dataset))).astype(int)
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        losses = [
            model.compute_loss(
                {k: v.to(device) for k, v in dataset.batch(ids[i : i + batch_size]).items()}
            ).item()
            for i in range(0, len(ids), batch_size)
        ]
    return float(np.mean(losses))


def fit(
    cfg: PolicyTrainConfig, trainer: Trainer, train_set: SequenceDataset, val_set: SequenceDataset
) -> dict:
    """Train until `cfg.steps` (or the time limit); checkpoints, metrics.jsonl, progress bar."""
    pcfg, device = trainer.model.cfg, cfg.device
    metrics = MetricsLogger(cfg.out)
    batches = train_set.epochs(pcfg.batch_size, cfg.seed, start_step=trainer.step)
    trainer.model.train()
    t0, nan_run, losses, seen = time.time(), 0, [], 0
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="pretrain-policy")
    while trainer.step < cfg.steps:
        if cfg.time_limit_min and time.time() - t0 > 60 * cfg.time_limit_min:
            log.warning("time limit of %.1f min reached at step %d", cfg.time_limit_min, trainer.step)
            break
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss = train_step(trainer, batch, pcfg.grad_clip)
        if math.isnan(loss):
            nan_run += 1
            log.warning("non-finite loss at step %d: step skipped (%d in a row)", trainer.step, nan_run)
            if nan_run >= cfg.max_nan_steps:
                raise Sim2RealError(
                    f"loss was not finite for {nan_run} steps in a row at step {trainer.step}; "
                    "lower policy.lr or check the data for NaN"
                )
            continue
        nan_run, trainer.step, seen = 0, trainer.step + 1, seen + len(batch["action"])
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        _periodic(cfg, trainer, val_set, metrics, losses, seen, t0)
    bar.close()
    elapsed = time.time() - t0
    trainer.ema.copy_to(trainer.ema_model.parameters())  # the saved model.safetensors is the current EMA
    save_checkpoint(
        cfg.out, trainer.model, trainer.ema_model, trainer.normalizer, trainer.state(), _state(cfg, trainer)
    )
    return {
        "steps": trainer.step,
        "train_seconds": elapsed,
        "final_loss": float(np.mean(losses[-50:])) if losses else None,
    }


def _state(cfg: PolicyTrainConfig, trainer: Trainer) -> dict:
    return {"step": trainer.step, "seed": cfg.seed, "train": str(cfg.train)}


def _periodic(
    cfg, trainer: Trainer, val_set, metrics: MetricsLogger, losses: list, seen: int, t0: float
) -> None:
    step = trainer.step
    if step % cfg.log_every == 0 or step == cfg.steps:
        dt = time.time() - t0
        metrics.log(
            step=step, loss=float(np.mean(losses[-cfg.log_every :])), lr=trainer.lr_scheduler.get_last_lr()[0],
            windows_per_s=seen / max(dt, 1e-9), elapsed_s=dt,
        )  # fmt: skip
    if step % cfg.eval_every == 0 or step == cfg.steps:
        trainer.ema.copy_to(trainer.ema_model.parameters())
        record = {
            "step": step,
            "val_loss": val_loss(trainer.ema_model, val_set, cfg.val_windows, cfg.eval_batch_size),
        }
        if len(val_set):
            stride = max(len(val_set) // cfg.val_windows, 1)
            mse = action_mse(
                trainer.ema_model,
                trainer.normalizer,
                val_set,
                stride,
                cfg.eval_batch_size,
                cfg.zero_shot_seed,
            )
            record |= {"val_mse": mse["mse"], "val_rmse_px": mse["rmse_px"]}
        metrics.log(**record)
        log.info("step %d: %s", step, {k: round(v, 4) for k, v in record.items() if k != "step"})
    if step % cfg.checkpoint_every == 0:
        trainer.ema.copy_to(trainer.ema_model.parameters())
        save_checkpoint(
            cfg.out,
            trainer.model,
            trainer.ema_model,
            trainer.normalizer,
            trainer.state(),
            _state(cfg, trainer),
        )


# ----------------------------------------------------------------------------------------------------
# evaluate and fine-tune


def zero_shot(
    cfg: PolicyTrainConfig, model: DiffusionPolicy, normalizer: Normalizer, real_path: Path
) -> dict:
    """The zero-shot action MSE on a real store (definition: policies.metrics) → zero_shot.json."""
    pcfg = model.cfg
    data = load_pusht(real_path, pcfg.image_size)
    real = policy_dataset(data, np.arange(data.n_episodes), pcfg, normalizer)
    t0 = time.time()
    res = action_mse(
        model,
        normalizer,
        real,
        cfg.zero_shot_stride,
        cfg.eval_batch_size,
        cfg.zero_shot_seed,
        desc="zero-shot mse",
    )
    result = {
        "zero_shot_mse": res["mse"], "zero_shot_mse_px": res["mse_px"], "zero_shot_rmse_px": res["rmse_px"],
        "n_windows": res["n_windows"], "n_episodes": data.n_episodes, "real": str(real_path),
        "stride": cfg.zero_shot_stride, "seed": cfg.zero_shot_seed, "sampler": pcfg.sampler,
        "num_inference_steps": pcfg.num_inference_steps, "seconds": time.time() - t0,
    }  # fmt: skip
    write_json(cfg.out / "zero_shot.json", result)
    MetricsLogger(cfg.out).log(**{k: v for k, v in result.items() if k.startswith("zero_shot")})
    return result


def finetune(cfg: PolicyTrainConfig, trainer: Trainer) -> list[dict]:
    """One epoch on the real train episodes; MSE on held-out real episodes every k steps → CSV.

    The curve is measured on the raw (non-EMA) weights, which start as the pretrained EMA weights:
    an EMA would lag far behind over one short epoch.
    """
    pcfg = trainer.model.cfg
    data = load_pusht(cfg.finetune_real, pcfg.image_size)
    ft_eps, held_eps = split_episodes(data.n_episodes, cfg.finetune_holdout, cfg.seed)
    if len(held_eps) == 0:
        raise Sim2RealError(f"{cfg.finetune_real}: fine-tuning needs at least 2 episodes (one held out)")
    ft_set = policy_dataset(data, ft_eps, pcfg, trainer.normalizer)
    held_set = policy_dataset(data, held_eps, pcfg, trainer.normalizer)
    model = copy.deepcopy(trainer.ema_model).train().requires_grad_(True)
    ft = Trainer(model, trainer.ema_model, EMAModel(model.parameters()), None, None, trainer.normalizer)
    ft.optimizer = torch.optim.AdamW(
        model.parameters(), lr=pcfg.lr, betas=pcfg.betas, weight_decay=pcfg.weight_decay
    )
    n_steps = max(len(ft_set) // pcfg.batch_size, 1)
    ft.lr_scheduler = get_scheduler("constant", ft.optimizer)
    batches = ft_set.epochs(pcfg.batch_size, cfg.seed)

    def measure(step: int) -> dict:
        res = action_mse(
            model,
            trainer.normalizer,
            held_set,
            cfg.finetune_eval_stride,
            cfg.eval_batch_size,
            cfg.zero_shot_seed,
        )
        return {
            "step": step,
            "windows_seen": step * pcfg.batch_size,
            "mse": res["mse"],
            "rmse_px": res["rmse_px"],
        }

    rows = [measure(0)]
    for step in tqdm(range(1, n_steps + 1), desc="finetune (1 epoch)"):
        train_step(ft, {k: v.to(cfg.device) for k, v in next(batches).items()}, pcfg.grad_clip)
        if step % cfg.finetune_eval_every == 0 or step == n_steps:
            rows.append(measure(step))
    with atomic_path(cfg.out / "finetune_curve.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_checkpoint(
        cfg.out / "finetuned",
        model,
        model,
        trainer.normalizer,
        None,
        {"step": n_steps, "finetune_real": str(cfg.finetune_real)},
    )
    return rows


# ----------------------------------------------------------------------------------------------------
# the command


def run_pretrain(cfg: PolicyTrainConfig) -> dict:
    """Train (or resume), checkpoint, then zero-shot MSE on `eval_real` and the optional fine-tune curve."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "config.json", to_dict(cfg))
    trainer, train_set, val_set = setup(cfg)
    summary = {"run": str(cfg.out)} | fit(cfg, trainer, train_set, val_set)
    trainer.ema.copy_to(trainer.ema_model.parameters())
    print(f"wrote {cfg.out / CKPT_DIR} (step {trainer.step}, {summary['train_seconds']:.0f} s of training)")
    if cfg.eval_real is not None:
        res = zero_shot(cfg, trainer.ema_model, trainer.normalizer, cfg.eval_real)
        summary |= res
        print(
            f"zero_shot_mse {res['zero_shot_mse']:.4f} (normalised), rmse {res['zero_shot_rmse_px']:.1f} px "
            f"over {res['n_windows']} windows of {cfg.eval_real} → {cfg.out / 'zero_shot.json'}"
        )
    if cfg.finetune_real is not None:
        rows = finetune(cfg, trainer)
        summary["finetune_curve"] = rows
        print(
            f"fine-tune MSE {rows[0]['mse']:.4f} → {rows[-1]['mse']:.4f} over one epoch → {cfg.out / 'finetune_curve.csv'}"
        )
    return summary
