"""Sequence windows over a Push-T zarr store, as Diffusion Policy's SequenceSampler cuts them.

A window is `horizon` consecutive frames of one episode. Windows start from `-pad_before` to
`len - horizon + pad_after` (pad_before = To - 1, pad_after = Ta - 1); frames outside the episode are
copies of its first / last frame (edge padding). So every frame is the current observation of some
window, and the last windows repeat the final action (the "stay put" end of a demonstration).

    image      (B, To, 3, H, W) float in [-1, 1]     from data/img (uint8, held in memory once)
    agent_pos  (B, To, 2)        min-max → [-1, 1]    data/state[:, :2]
    action     (B, T, 2)         min-max → [-1, 1]    data/action

Normalisation statistics come from the training episodes only and travel with the checkpoint
(`Normalizer.save` / `Normalizer.load`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sim2real.errors import Sim2RealError

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# the store


@dataclass
class PushTData:
    """The arrays a policy needs, in memory: img (N, H, W, 3) uint8, state (N, 5), action (N, 2)."""

    img: np.ndarray
    state: np.ndarray
    action: np.ndarray
    episode_ends: np.ndarray
    path: str = ""

    @property
    def n_episodes(self) -> int:
        return len(self.episode_ends)

    def episode_bounds(self, i: int) -> tuple[int, int]:
        return (int(self.episode_ends[i - 1]) if i > 0 else 0), int(self.episode_ends[i])


def load_pusht(path: str | Path, image_size: int = 96) -> PushTData:
    """Read and validate a store into memory; every problem is a one-line Sim2RealError."""
    from sim2real.data.replay import open_replay

    store = open_replay(path, require=("img", "state", "action"))  # names missing arrays / bad layout
    if store.n_episodes == 0 or store.n_frames == 0:
        raise Sim2RealError(f"{path}: empty dataset (no episodes)")
    img = store.data["img"]
    if tuple(img.shape[1:]) != (image_size, image_size, 3) or img.dtype != np.uint8:
        raise Sim2RealError(
            f"{path}: data/img must be uint8 (N, {image_size}, {image_size}, 3); got {img.dtype} {tuple(img.shape)}"
        )
    img, state, action = (np.asarray(store.data[k][:]) for k in ("img", "state", "action"))
    if state.ndim != 2 or state.shape[1] < 2 or action.ndim != 2 or action.shape[1] != 2:
        raise Sim2RealError(
            f"{path}: need data/state (N, 5) and data/action (N, 2); got {state.shape}, {action.shape}"
        )
    if not (np.isfinite(state).all() and np.isfinite(action).all()):
        raise Sim2RealError(f"{path}: data/state or data/action holds NaN/inf")
    return PushTData(img, state.astype(np.float32), action.astype(np.float32), store.episode_ends, str(path))


def split_episodes(n_episodes: int, val_ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded episode-level split → (train ids, val ids); at least one of each when n > 1 and ratio > 0."""
    perm = np.random.default_rng(seed).permutation(n_episodes)
    n_val = int(round(n_episodes * val_ratio))
    if val_ratio > 0 and n_episodes > 1:
        n_val = min(max(n_val, 1), n_episodes - 1)
    else:
        n_val = 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ----------------------------------------------------------------------------------------------------
# windows


def window_indices(
    episode_ends: np.ndarray, episodes: np.ndarray, horizon: int, pad_before: int, pad_after: int
) -> np.ndarray:
    """Frame index of every step of every window: (W, horizon) int64, edge-padded within its episode.

    Same windows as Diffusion Policy's `create_indices` + `sample_sequence`: start s runs over
    [-pad_before, len - horizon + pad_after]; step j reads frame clip(s + j, 0, len - 1) + episode start.
    """
    pad_before = min(max(pad_before, 0), horizon - 1)
    pad_after = min(max(pad_after, 0), horizon - 1)
    out = []
    for e in episodes:
        start = int(episode_ends[e - 1]) if e > 0 else 0
        length = int(episode_ends[e]) - start
        starts = np.arange(-pad_before, length - horizon + pad_after + 1)
        if len(starts) == 0:
            continue
        steps = np.clip(starts[:, None] + np.arange(horizon)[None], 0, length - 1)
        out.append(steps + start)
    if not out:
        return np.zeros((0, horizon), np.int64)
    return np.concatenate(out).astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# normalisation


class Normalizer:
    """Per-dimension min-max to [-1, 1] for `agent_pos` and `action` (Diffusion Policy's 'limits' mode).

    A dimension whose range is below 1e-4 maps to 0 (instead of dividing by ~0).
    """

    KEYS = ("agent_pos", "action")

    def __init__(self, stats: dict[str, dict[str, list[float]]]):
        missing = [k for k in self.KEYS if k not in stats or not {"min", "max"} <= set(stats[k])]
        if missing:
            raise Sim2RealError(f"normalisation stats lack {missing}")
        self.stats = {k: {m: np.asarray(stats[k][m], np.float32) for m in ("min", "max")} for k in self.KEYS}

    @classmethod
    def fit(cls, data: PushTData, episodes: np.ndarray) -> Normalizer:
        frames = np.concatenate([np.arange(*data.episode_bounds(int(e))) for e in episodes])
        pos, act = data.state[frames, :2], data.action[frames]
        return cls(
            {
                k: {"min": v.min(0).tolist(), "max": v.max(0).tolist()}
                for k, v in zip(cls.KEYS, (pos, act), strict=True)
            }
        )

    def _scale(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.stats[key]["min"], self.stats[key]["max"]
        rng = hi - lo
        ok = rng > 1e-4
        scale = np.where(ok, 2.0 / np.where(ok, rng, 1.0), 1.0).astype(np.float32)
        offset = np.where(ok, -1.0 - lo * scale, -(hi + lo) / 2).astype(np.float32)
        return scale, offset

    def normalize(self, key: str, x):
        scale, offset = self._scale(key)
        if isinstance(x, torch.Tensor):
            return x * torch.as_tensor(scale, device=x.device) + torch.as_tensor(offset, device=x.device)
        return x * scale + offset

    def unnormalize(self, key: str, y):
        scale, offset = self._scale(key)
        if isinstance(y, torch.Tensor):
            return (y - torch.as_tensor(offset, device=y.device)) / torch.as_tensor(scale, device=y.device)
        return (y - offset) / scale

    def to_dict(self) -> dict:
        return {k: {m: v.tolist() for m, v in d.items()} for k, d in self.stats.items()}

    def save(self, path: str | Path) -> None:
        from sim2real.utils import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Normalizer:
        path = Path(path)
        if not path.exists():
            raise Sim2RealError(f"{path.parent}: checkpoint has no normalisation stats ({path.name})")
        return cls(json.loads(path.read_text()))


# ----------------------------------------------------------------------------------------------------
# the dataset


def images_to_tensor(img: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) → float (..., 3, H, W) in [-1, 1]."""
    return img.movedim(-1, -3).float().div_(127.5).sub_(1.0)


class SequenceDataset:
    """Windows of some episodes of a store, gathered in memory: `batch(window_ids)` → normalised tensors.

    No DataLoader: a batch is three fancy-index gathers from arrays already in RAM (the images stay
    uint8 until gathered): 1 455 windows/s on a heavily shared CPU core, ~90× the 16 windows/s a `quick`
    training step consumes there (`scripts/bench_policy_data.py`), so the model is the bottleneck.
    """

    def __init__(
        self,
        data: PushTData,
        episodes: np.ndarray,
        horizon: int,
        n_obs_steps: int,
        n_action_steps: int,
        normalizer: Normalizer,
    ):
        self.n_obs_steps, self.horizon = n_obs_steps, horizon
        self.index = torch.from_numpy(
            window_indices(data.episode_ends, episodes, horizon, n_obs_steps - 1, n_action_steps - 1)
        )  # (W, T)
        self.img = torch.from_numpy(np.ascontiguousarray(data.img))  # (N, H, W, 3) uint8, shared
        self.agent_pos = torch.from_numpy(
            normalizer.normalize("agent_pos", data.state[:, :2]).astype(np.float32)
        )
        self.action = torch.from_numpy(normalizer.normalize("action", data.action).astype(np.float32))

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, window_ids) -> dict[str, torch.Tensor]:
        idx = self.index[torch.as_tensor(window_ids, dtype=torch.long)]  # (B, T)
        obs = idx[:, : self.n_obs_steps]  # (B, To)
        return {
            "image": images_to_tensor(self.img[obs]),  # (B, To, 3, H, W)
            "agent_pos": self.agent_pos[obs],  # (B, To, 2)
            "action": self.action[idx],  # (B, T, 2)
        }

    def epochs(self, batch_size: int, seed: int, start_step: int = 0):
        """Endless shuffled batches (reshuffled each epoch, seeded); skips `start_step` batches on resume."""
        n = len(self)
        if n == 0:
            raise Sim2RealError("no training windows: every episode is shorter than the padding allows")
        per_epoch = max(n // batch_size, 1)
        step = start_step
        while True:
            epoch, k = divmod(step, per_epoch)
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            if n < batch_size:
                perm = np.resize(perm, batch_size)
            yield self.batch(perm[k * batch_size : (k + 1) * batch_size])
            step += 1


def policy_dataset(data: PushTData, episodes, cfg, normalizer: Normalizer) -> SequenceDataset:
    """The windows a `PolicyConfig` needs (horizon T, To observation steps, Ta-padding) of some episodes."""
    return SequenceDataset(
        data, np.asarray(episodes), cfg.horizon, cfg.n_obs_steps, cfg.n_action_steps, normalizer
    )
