"""Throughput of the feedback scores: a batch of 64 frames at 96x96, `texture` + Canny (issue 4: < 1 s on 2 cores).

Times `FeedbackScorer(...)(inputs, edits, labels, edit)` (structure + semantic + advantages, reference
embeddings cached as in training) and its parts, on tabletop/sim renders. Median of --repeats runs.

    python scripts/bench_feedback.py --batch 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np
import torch

from sim2real.feedback.score import FeedbackConfig, FeedbackScorer
from sim2real.feedback.semantic import semantic_score
from sim2real.feedback.structure import canny_score, chamfer_score


def frames(n: int, appearance: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from envs.pusht.render import render_state
    from sim2real.feedback.twoafc import _random_state

    rng = np.random.default_rng(seed)
    out = [render_state(_random_state(rng), appearance, size=96, rng=rng) for _ in range(n)]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def timed(fn, repeats: int) -> dict:
    """Median wall seconds and median CPU seconds of the process (all threads) over `repeats` calls.

    On a shared, overloaded box the wall time mostly measures waiting for a core; the CPU time is
    what the work itself costs (with 1 thread it is the wall time on one dedicated core).
    """
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": round(statistics.median(wall), 4), "cpu_s": round(statistics.median(cpu), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)

    inputs, labels = frames(args.batch, "sim", 0)
    edits, _ = frames(args.batch, "tabletop", 0)  # same states, the real-looking appearance
    refs, ref_labels = frames(5, "tabletop", 1)
    cfg = FeedbackConfig()
    scorer = FeedbackScorer(cfg, refs, ref_labels)
    emb = scorer.ref_embeddings("background")
    from sim2real.feedback.masks import region_mask

    masks = region_mask(labels, "background")
    res = {
        "batch": args.batch,
        "threads": args.threads,
        "FeedbackScorer call (canny + texture + advantages)": timed(
            lambda: scorer(inputs, edits, labels, "background"), args.repeats
        ),
        "canny_score": timed(lambda: canny_score(inputs, edits, cfg.canny), args.repeats),
        "chamfer_score": timed(lambda: chamfer_score(inputs, edits, cfg.canny), args.repeats),
        "semantic_score (texture, refs cached)": timed(
            lambda: semantic_score(inputs, edits, masks, scorer.encoder, ref_embeddings=emb), args.repeats
        ),
    }
    res["load_average_1min"] = round(os.getloadavg()[0], 2)
    for k, v in res.items():
        print(f"{k:52s} {v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
