"""Policy checkpoints: a folder with weights (safetensors), config and normalisation stats.

    <run>/checkpoint/
        model.safetensors        EMA weights: what evaluation, `--init` and `eval-policy` load
        train_model.safetensors  raw weights (resume)
        trainer.pt               optimizer, lr scheduler, EMA state (resume)
        trainer_state.json       step, seed, …
        policy_config.json       PolicyConfig
        normalizer.json          min-max stats of agent_pos and action (required to load)

The folder is written to a temporary name and renamed into place, so a crash leaves the previous one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from policies.config import PolicyConfig
from policies.dataset import Normalizer
from policies.model import DiffusionPolicy
from sim2real.errors import Sim2RealError
from sim2real.utils import atomic_path

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoint"


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (holding `checkpoint/`) or a checkpoint folder → the checkpoint folder."""
    path = Path(path)
    if (path / CKPT_DIR / "model.safetensors").exists():
        return path / CKPT_DIR
    if (path / "model.safetensors").exists():
        return path
    raise Sim2RealError(
        f"{path}: no policy checkpoint (expected model.safetensors or {CKPT_DIR}/model.safetensors)"
    )


def save_checkpoint(
    run_dir: Path,
    model: DiffusionPolicy,
    ema_model: DiffusionPolicy,
    normalizer: Normalizer,
    trainer: dict | None = None,
    state: dict | None = None,
) -> Path:
    final = Path(run_dir) / CKPT_DIR
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_file(_contiguous(ema_model.state_dict()), tmp / "model.safetensors")
        save_file(_contiguous(model.state_dict()), tmp / "train_model.safetensors")
        if trainer is not None:
            torch.save(trainer, tmp / "trainer.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state or {}, indent=2) + "\n")
        (tmp / "policy_config.json").write_text(json.dumps(model.cfg.to_dict(), indent=2) + "\n")
        (tmp / "normalizer.json").write_text(json.dumps(normalizer.to_dict(), indent=2) + "\n")
    return final


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous() for k, v in sd.items()}


def load_policy_config(ckpt: Path) -> PolicyConfig:
    path = ckpt / "policy_config.json"
    if not path.exists():
        raise Sim2RealError(f"{ckpt}: checkpoint has no policy_config.json")
    try:
        return PolicyConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise Sim2RealError(f"{path}: {e}") from e


def load_policy(path: str | Path, weights: str = "model.safetensors") -> tuple[DiffusionPolicy, Normalizer]:
    """Build the policy of a checkpoint (EMA weights by default) with its normaliser; eval mode."""
    ckpt = resolve_checkpoint(path)
    normalizer = Normalizer.load(ckpt / "normalizer.json")  # first: no stats, no policy
    model = DiffusionPolicy(load_policy_config(ckpt))
    missing, unexpected = model.load_state_dict(load_file(ckpt / weights), strict=False)
    if missing or unexpected:
        raise Sim2RealError(
            f"{ckpt}: weights do not match the config ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    return model.eval(), normalizer
