"""Held-out agreement of HIVE's reward model with the AI-feedback ranking, on edits of the base editor.

    python scripts/eval_reward_model.py --refs 'real/*.png' --ref-masks 'masks/*.png' --out results/rm \
        --frames 64 --k 4

Samples `--frames` sim frames × `--k` edits from the base editor exactly as `specialize --method
hive-*` does (same config `specialize_background` + overrides, η = 1, shared noise per frame), ranks
each frame's k edits with the AI-feedback total, splits by INPUT frame (`--val-fraction` held out),
trains the reward model on the rest with Bradley–Terry and reports pairwise agreement on the held-out
inputs per epoch (0.5 = chance; ties in the feedback ranking form no pair). Writes `agreement.csv`,
`summary.json` and the rankings in the documented JSON format (`rankings/rankings.json`).
Extra trailing `key=value` arguments are overrides of the specialize config (e.g. `hive.reward.epochs=80`).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from sim2real.config import compose
from sim2real.training.d3po import SpecialistTrainer, load_editor
from sim2real.training.hive import SampledEdits, rankings_of, sample_base_edits
from sim2real.training.reward_model import RewardModel, fit_reward_model, pairwise_agreement, save_rankings
from sim2real.training.specialize import FrameSource, SpecializeConfig, load_refs, ref_labels_for

log = logging.getLogger("eval_reward_model")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", nargs="+", required=True)
    ap.add_argument("--ref-masks", nargs="*", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    overrides = [f"train.samples_per_frame={args.k}", f"frame_pool={args.frames}", *args.overrides]
    cfg = compose(
        "specialize_background", overrides, SpecializeConfig, refs=args.refs, out=str(out / "run"),
        ref_masks=args.ref_masks, method="hive-weighted", seed=args.seed,
    )  # fmt: skip
    refs, _ = load_refs(cfg.refs, cfg.image_size)
    labels = ref_labels_for(refs, cfg.ref_masks, cfg.t_color_hint)
    cache = out / "sampled_edits.pt"
    t0 = time.time()
    trainer = SpecialistTrainer(
        cfg.train, load_editor(cfg.base), FrameSource(None, cfg.image_size, cfg.frame_pool, 1, cfg.seed),
        refs, labels, cfg.edit, cfg.instruction, cfg.feedback, out / "run", cfg.method, cfg.seed,
    )  # fmt: skip
    if cache.exists():
        edits = SampledEdits.load(cache)
    else:
        edits = sample_base_edits(trainer, args.frames)
        edits.save(cache)
    sample_s = time.time() - t0
    data = rankings_of(edits, cfg.instruction)
    save_rankings(out / "rankings" / "rankings.json", data, scores=edits.scores["total"])
    train, val = data.split(args.val_fraction, seed=args.seed)
    rm = RewardModel(trainer.pipe, cfg.hive.reward)
    t1 = time.time()
    hist = fit_reward_model(rm, train, val)
    n_pairs = int((val.ranks[:, :, None] < val.ranks[:, None, :]).sum())
    summary = {
        "frames": len(data),
        "k": edits.k,
        "train_groups": len(train),
        "heldout_groups": len(val),
        "heldout_pairs": n_pairs,
        "heldout_agreement_final": hist.val_agreement[-1],
        "heldout_agreement_best_epoch": int(np.argmax(hist.val_agreement)) + 1,
        "heldout_agreement_best": float(np.max(hist.val_agreement)),
        "train_agreement_final": hist.train_agreement[-1],
        "untrained_heldout_agreement": pairwise_agreement(
            RewardModel(trainer.pipe, cfg.hive.reward).score_groups(val), val.ranks
        ),
        "reward_config": cfg.hive.reward.__dict__,
        "sample_s": sample_s,
        "fit_s": time.time() - t1,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "agreement.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss", "train_agreement", "heldout_agreement"])
        for e, row in enumerate(zip(hist.loss, hist.train_agreement, hist.val_agreement, strict=True), 1):
            w.writerow([e, *row])
    log.info("%s", json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
