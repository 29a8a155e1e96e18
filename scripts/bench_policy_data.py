"""Is data loading the bottleneck of policy training? Windows/s of the dataset vs of a training step.

    python scripts/bench_policy_data.py --store /tmp/pol/sim100.zarr [--preset quick] [--batches 200]

Prints: load time (zarr → RAM), windows/s of `SequenceDataset.batch` (gather + uint8→float + normalise)
and windows/s of `compute_loss` + backward + AdamW for the preset, both with the same batch size.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from policies.config import PolicyConfig
from policies.dataset import Normalizer, load_pusht, policy_dataset
from policies.model import DiffusionPolicy
from sim2real.config import CONFIG_DIR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = PolicyConfig(**yaml.safe_load((CONFIG_DIR / "policy" / f"{args.preset}.yaml").read_text()))

    t0 = time.perf_counter()
    data = load_pusht(args.store)
    load_s = time.perf_counter() - t0
    eps = np.arange(data.n_episodes)
    ds = policy_dataset(data, eps, cfg, Normalizer.fit(data, eps))
    rng = np.random.default_rng(0)
    ids = [rng.integers(0, len(ds), cfg.batch_size) for _ in range(args.batches)]
    t0 = time.perf_counter()
    for b in ids:
        ds.batch(b)
    data_wps = args.batches * cfg.batch_size / (time.perf_counter() - t0)

    model = DiffusionPolicy(cfg)
    opt = torch.optim.AdamW(model.parameters(), cfg.lr)
    batch = ds.batch(ids[0])
    model.compute_loss(batch).backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        model.compute_loss(batch).backward()
        opt.step()
        opt.zero_grad()
    train_wps = args.train_steps * cfg.batch_size / (time.perf_counter() - t0)
    print(
        f"store {args.store}: {len(data.img)} frames, {len(ds)} windows, loaded in {load_s:.1f} s "
        f"({data.img.nbytes / 2**20:.0f} MiB of uint8 images)\n"
        f"data:  {data_wps:8.0f} windows/s (batch {cfg.batch_size})\n"
        f"train: {train_wps:8.1f} windows/s ({args.preset}, {args.threads} threads) → loading takes "
        f"{100 * train_wps / data_wps:.1f}% of a step"
    )


if __name__ == "__main__":
    main()
