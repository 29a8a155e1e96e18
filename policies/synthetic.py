"""A tiny synthetic store in the Push-T zarr layout, for tests and benchmarks (no physics, no renderer).

Each episode moves an agent disc in a straight line towards a goal drawn as a square; the action is the
next agent position. Images show both, so a policy can learn the action from pixels.

    python -c "from policies.synthetic import write_synthetic_store; write_synthetic_store('/tmp/syn.zarr', 4)"
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def synthetic_episode(rng: np.random.Generator, length: int, size: int = 96) -> dict[str, np.ndarray]:
    start, goal = rng.uniform(80, 432, 2), rng.uniform(80, 432, 2)
    pos = start[None] + (goal - start)[None] * np.linspace(0, 1, length + 1)[:, None]  # (L+1, 2)
    img = np.full((length, size, size, 3), 230, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    gx, gy = (goal * size / 512).astype(int)
    img[:, max(gy - 4, 0) : gy + 4, max(gx - 4, 0) : gx + 4] = (40, 160, 60)
    for i, (x, y) in enumerate(pos[:length] * size / 512):
        img[i][(xx - x) ** 2 + (yy - y) ** 2 < 16] = (60, 60, 220)
    state = np.concatenate([pos[:length], np.tile([256.0, 256.0, 0.8], (length, 1))], 1).astype(np.float32)
    return {"img": img, "state": state, "action": pos[1:].astype(np.float32)}


def write_synthetic_store(
    path: str | Path,
    n_episodes: int,
    length: int = 20,
    size: int = 96,
    seed: int = 0,
    drop: tuple[str, ...] = (),
) -> Path:
    """Write a zarr v2 store with `n_episodes` episodes; `drop` leaves out arrays (to test errors)."""
    import zarr

    rng = np.random.default_rng(seed)
    eps = [synthetic_episode(rng, length, size) for _ in range(n_episodes)]
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    for key, shape, dtype in (
        ("img", (size, size, 3), np.uint8),
        ("state", (5,), np.float32),
        ("action", (2,), np.float32),
    ):
        if f"data/{key}" in drop:
            continue
        arr = np.concatenate([e[key] for e in eps]) if eps else np.zeros((0, *shape), dtype)
        root.create_array(f"data/{key}", data=arr, chunks=(max(min(len(arr), 256), 1), *shape))
    ends = np.cumsum([length] * n_episodes).astype(np.int64)
    root.create_array("meta/episode_ends", data=ends, chunks=(max(len(ends), 1),))
    root.attrs["appearance"] = "synthetic"
    return Path(path)
