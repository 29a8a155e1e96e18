"""Held-out agreement of HIVE's reward model with the AI-feedback ranking, on edits of the base editor.

    python scripts/eval_reward_model.py --refs 'real/*.png' --ref-masks 'masks/*.png' --out results/rm \\
        --frames 320 --k 4 --folds 4 specialize/preset=quick

Samples `--frames` DISTINCT sim frames × `--k` edits from the base editor exactly as `specialize
--method hive-*` does (config `specialize_background` + overrides, η = 1, shared noise per frame,
feedback z-normalised over batches of `train.frames_per_step` frames), ranks each frame's k edits
with the AI-feedback total and caches them in `<out>/sampled_edits.pt`, saved every `--chunk`
frames (a rerun tops the cache up; `--sample-only` stops there). Then, for each of `--folds` splits
by INPUT frame (every input held out once), trains the reward model on the other inputs with
Bradley–Terry — the epoch is picked on a share of the TRAINING inputs (`hive.reward.early_stopping`),
never on the held-out ones — and reports pairwise agreement on the held-out inputs at that epoch
(0.5 = chance; ties in the feedback ranking form no pair). `--fit-frames N` uses only the first N
cached frames (agreement vs. amount of ranked data). Writes `summary.json` (per fold and mean),
`agreement.csv` (fold 0's per-epoch curves, for the record) and the rankings in the documented JSON
format (`rankings/rankings.json`). Extra trailing `key=value` arguments are overrides of the
specialize config (e.g. `hive.reward.features=latents hive.reward.epochs=60`).
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


class SequentialFrames:
    """A `FrameSource` whose `sample` hands out its pool in order: every sampled input is a new frame."""

    def __init__(self, frames: FrameSource, start: int = 0):
        self.frames, self.pos = frames, start

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(self.pos, self.pos + n) % len(self.frames.images)
        self.pos += n
        return self.frames.images[idx], self.frames.labels[idx]


def sample_cached(
    trainer: SpecialistTrainer, frames: FrameSource, n: int, chunk: int, cache: Path
) -> SampledEdits:
    """The first `n` pool frames × k edits: from `cache`, topped up `chunk` frames at a time (saved each time)."""
    have = SampledEdits.load(cache) if cache.exists() else None
    while have is None or len(have.inputs) < n:
        done = 0 if have is None else len(have.inputs)
        trainer.frames = SequentialFrames(frames, done)
        trainer.generator.manual_seed(trainer.seed + done)  # a resumed run draws new noise, reproducibly
        t0 = time.time()
        part = sample_base_edits(trainer, min(chunk, n - done))
        have = part if have is None else SampledEdits.concat([have, part])
        have.save(cache)
        log.info(
            "sampled %d / %d frames (%.1f s per frame)",
            len(have.inputs),
            n,
            (time.time() - t0) / len(part.inputs),
        )
    return have


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--refs", nargs="+", required=True)
    ap.add_argument("--ref-masks", nargs="*", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=64, help="distinct frames to sample (cached)")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--chunk", type=int, default=32, help="frames sampled between cache saves")
    ap.add_argument("--sample-only", action="store_true")
    ap.add_argument("--fit-frames", type=int, default=None, help="fit on the first N cached frames")
    ap.add_argument("--folds", type=int, default=4)
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
    frames = FrameSource(None, cfg.image_size, args.frames, 1, cfg.seed)
    t0 = time.time()
    trainer = SpecialistTrainer(
        cfg.train, load_editor(cfg.base), frames, refs, labels, cfg.edit, cfg.instruction, cfg.feedback,
        out / "run", cfg.method, cfg.seed,
    )  # fmt: skip
    edits = sample_cached(trainer, frames, args.frames, args.chunk, out / "sampled_edits.pt")
    sample_s = time.time() - t0
    data = rankings_of(edits, cfg.instruction)
    if not (out / "rankings" / "rankings.json").exists():
        save_rankings(out / "rankings" / "rankings.json", data, scores=edits.scores["total"])
    if args.sample_only:
        return
    if args.fit_frames:
        data = data.subset(np.arange(min(args.fit_frames, len(data))))
    t1 = time.time()
    folds, curves = [], None
    for f, (train, val) in enumerate(data.folds(args.folds, seed=args.seed)):
        rm = RewardModel(trainer.pipe, cfg.hive.reward)
        untrained = pairwise_agreement(rm.score_groups(val), val.ranks)
        hist = fit_reward_model(rm, train, val)
        e = hist.chosen_epoch
        folds.append({
            "fold": f,
            "train_groups": len(train) - hist.stop_groups,
            "stop_groups": hist.stop_groups,
            "heldout_groups": len(val),
            "heldout_pairs": int((val.ranks[:, :, None] < val.ranks[:, None, :]).sum()),
            "chosen_epoch": e,
            "heldout_agreement": hist.val_agreement[e - 1],
            "train_agreement": hist.train_agreement[e - 1],
            "stop_agreement": hist.stop_agreement[e - 1] if hist.stop_agreement else None,
            "untrained_heldout_agreement": untrained,
        })  # fmt: skip
        log.info("fold %d: held-out agreement %.3f at epoch %d", f, hist.val_agreement[e - 1], e)
        curves = curves or hist
    agree = np.array([f["heldout_agreement"] for f in folds])
    summary = {
        "frames": len(data),
        "k": edits.k,
        "folds": folds,
        "heldout_agreement_mean": float(agree.mean()),
        "heldout_agreement_std_over_folds": float(agree.std()),
        "heldout_pairs_total": sum(f["heldout_pairs"] for f in folds),
        "reward_config": cfg.hive.reward.__dict__,
        "sample_s": sample_s,
        "fit_s": time.time() - t1,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    with open(out / "agreement.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "loss", "train_agreement", "stop_agreement", "heldout_agreement"])
        stop = curves.stop_agreement or [float("nan")] * len(curves.loss)
        for e, row in enumerate(
            zip(curves.loss, curves.train_agreement, stop, curves.val_agreement, strict=True), 1
        ):
            w.writerow([e, *row])
    log.info("%s", json.dumps({k: v for k, v in summary.items() if k != "folds"}, indent=2))


if __name__ == "__main__":
    main()
