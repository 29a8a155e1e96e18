"""Action MSE of a policy on recorded data — the paper's zero-shot metric (Fig. 8).

Definition (`zero_shot_mse`), used unchanged for validation and the fine-tuning curve:

1. Cut the dataset into Diffusion Policy windows (`policies.dataset.window_indices`: horizon T,
   pad_before To-1, pad_after Ta-1, edge padding), and keep every `stride`-th window (default: all).
2. For each window, sample the action chunk from its To observations (centre crop, the checkpoint's
   sampler and step count) with noise drawn from one `torch.Generator` seeded with `seed` at the start,
   consumed in window order and `batch_size` chunks — so the number is reproducible.
3. Take the executed actions, chunk[To-1 : To-1+Ta] (Diffusion Policy's indexing), and the recorded
   actions at the same steps; both in the policy's normalised action space ([-1, 1] by the training
   set's min-max).
4. `mse` = mean over windows, Ta steps and the 2 action dimensions of the squared difference.
   `mse_px` is the same in world pixels² (both unnormalised), `rmse_px` its square root.

What an untrained network scores depends on how widely the recorded actions spread in the policy's
normalised space: its samples have |a| ≈ 0.7 (DDIM 10; DDPM 100 puts a third of them at the ±1 clip), so
against targets with E[a²] ≈ 0.07 (our `tabletop` render under sim statistics) it scores ≈ 0.65–0.8,
and ≈ 1.2–1.4 against targets spread over [-1, 1]. The paper's random-init figure is 1.251.
"""

from __future__ import annotations

import numpy as np
import torch

from policies.dataset import Normalizer, SequenceDataset
from policies.model import DiffusionPolicy
from sim2real.utils import tqdm


def squared_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-window mean squared error over steps and dims: (B, Ta, Da), (B, Ta, Da) → (B,)."""
    return (pred - target).pow(2).flatten(1).mean(1)


@torch.no_grad()
def action_mse(
    model: DiffusionPolicy,
    normalizer: Normalizer,
    dataset: SequenceDataset,
    stride: int = 1,
    batch_size: int = 64,
    seed: int = 0,
    max_windows: int = 0,
    desc: str = "action mse",
) -> dict[str, float]:
    """The metric above → {"mse", "mse_px", "rmse_px", "n_windows"}."""
    ids = np.arange(0, len(dataset), max(stride, 1))
    if max_windows > 0:
        ids = ids[:max_windows]
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    se, se_px = [], []
    for i in tqdm(range(0, len(ids), batch_size), desc=desc, leave=False):
        batch = dataset.batch(ids[i : i + batch_size])
        chunk = model.predict_action(batch["image"].to(device), batch["agent_pos"].to(device), generator)
        pred = model.executed(chunk).cpu()
        target = model.executed(batch["action"])
        se.append(squared_error(pred, target))
        px = [normalizer.unnormalize("action", x) for x in (pred, target)]
        se_px.append(squared_error(*px))
    model.train(was_training)
    if not se:
        return {"mse": float("nan"), "mse_px": float("nan"), "rmse_px": float("nan"), "n_windows": 0}
    mse, mse_px = torch.cat(se).mean().item(), torch.cat(se_px).mean().item()
    return {"mse": mse, "mse_px": mse_px, "rmse_px": mse_px**0.5, "n_windows": len(ids)}
