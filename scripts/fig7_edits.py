"""Fig. 7 (ours): sim frame → background edit → background + T-block edit, beside the base editor's
attempt with the same instructions and a reference frame. Reads a reproduce_sim2real.py run folder.

    python scripts/fig7_edits.py --run results/sim2real [--rows 4]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from sim2real.data.replay import open_replay
from sim2real.editing.edit_dataset import EditConfig, edit_frames, load_passes
from sim2real.training.base_editor import load_base_editor

COLUMNS = ("sim frame", "background spec.", "+ T-block spec.", "base: same instructions", "reference")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--base", default=None, help="base editor folder (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    run = args.run
    refs = sorted(str(p) for p in (run / "refs").glob("ref_*.png"))
    store = open_replay(run / "sim.zarr", require=("img",))
    ends = np.asarray(store.episode_ends)
    idx = [
        int(ends[i] - 1 - (ends[i] - (0 if i == 0 else ends[i - 1])) // 3)
        for i in range(min(args.rows, len(ends)))
    ]
    sim = np.stack([np.asarray(store.data["img"][i]) for i in idx])

    cfg = EditConfig(
        input=str(run / "sim.zarr"),
        out=str(run / "unused.zarr"),
        specialists=[str(run / "spec_bg"), str(run / "spec_fg")],
        refs=refs,
    )
    bg, fg = load_passes(cfg, torch.device("cpu"))
    gen = lambda: torch.Generator().manual_seed(args.seed)  # noqa: E731 - same noise for every column
    edited_bg = edit_frames(sim, bg, gen())
    edited_fg = edit_frames(edited_bg, fg, gen())

    base = load_base_editor(args.base)
    sampling = {k: v for k, v in bg.sampling.items() if k != "style_guidance_scale"}
    base_bg = base(sim, bg.info["instruction"], generator=gen(), progress=False, **sampling).images
    base_both = base(base_bg, fg.info["instruction"], generator=gen(), progress=False, **sampling).images
    ref = np.stack(
        [cv2.cvtColor(cv2.imread(refs[i % len(refs)]), cv2.COLOR_BGR2RGB) for i in range(len(idx))]
    )

    rows = [
        np.concatenate(cols, axis=1) for cols in zip(sim, edited_bg, edited_fg, base_both, ref, strict=True)
    ]
    grid = cv2.resize(np.concatenate(rows, axis=0), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    header = np.full((28, grid.shape[1], 3), 255, np.uint8)
    w = grid.shape[1] // len(COLUMNS)
    for i, name in enumerate(COLUMNS):
        cv2.putText(header, name, (i * w + 4, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    out = run / "figures" / "fig7_edits.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(np.concatenate([header, grid]), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
