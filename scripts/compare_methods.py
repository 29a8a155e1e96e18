"""Compare specialist methods (D3PO, HIVE weighted / condition) against the base editor on the same frames.

    python scripts/compare_methods.py --refs real/*.png --ref-masks masks/*.png --out results/compare \
        --specialist d3po=runs/d3po --specialist hive-weighted=runs/hw --specialist hive-condition=runs/hc

Every method edits the SAME held-out sim frames (rendered from `--seed`, never used in training)
with the same refs and sampling seed, each with its own instruction and sampling settings
(`specialist.json`); the base editor uses the first specialist's plain instruction and settings.
Columns are `scripts/eval_specialist.py`'s (Table 1 adapted: Canny / chamfer input→output over the
frame and outside the table, L2 outside, style similarity ↑ inside the table for each encoder,
ΔE to the refs' table colour, PSNR ↑ to the same state rendered in the stand-in real look), plus
the AI-feedback scores the specialists were trained on (`fb_*`, raw, lower is better).
For a `hive-condition` specialist, `--levels` adds rows asking for other quality levels
("one out of five", …): if the condition took, quality should rise with the level.
Writes `table.csv`, `table.md` and `grid.png` under `--out`.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import time
from pathlib import Path

import numpy as np
import torch

from sim2real.data.images import expand_image_paths, load_images
from sim2real.feedback.masks import auto_ref_masks, load_ref_masks, region_mask
from sim2real.feedback.score import FeedbackConfig, FeedbackScorer
from sim2real.feedback.semantic import get_encoder
from sim2real.training.base_editor import SHIPPED
from sim2real.training.hive import quality_prompt
from sim2real.training.specialize import read_specialist

log = logging.getLogger("compare_methods")


def _eval_specialist_module():
    """scripts/eval_specialist.py as a module (its metric columns and editor wrapper are reused)."""
    path = Path(__file__).with_name("eval_specialist.py")
    spec = importlib.util.spec_from_file_location("eval_specialist", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def feedback_columns(scorer: FeedbackScorer, inp, out, labels) -> dict:
    s = scorer(inp, out, labels, "background")
    return {f"fb_{k}": float(np.mean(s[k])) for k in ("struct", "dist", "recon", "sem")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default=str(SHIPPED), help="base editor folder (default: the shipped one)")
    ap.add_argument("--specialist", action="append", required=True, help="NAME=DIR; repeat")
    ap.add_argument("--refs", nargs="+", required=True)
    ap.add_argument(
        "--ref-masks", nargs="*", default=None, help="label maps of the refs (default: automatic)"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1000, help="held-out states (training uses other seeds)")
    ap.add_argument("--target-appearance", default="tabletop", help="'' to skip the oracle target")
    ap.add_argument("--encoders", nargs="*", default=["texture"], help="name or name=path")
    ap.add_argument(
        "--levels", nargs="*", type=int, default=[1, 3], help="extra quality levels for hive-condition"
    )
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    ev = _eval_specialist_module()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    specs = [s.split("=", 1) for s in args.specialist]
    editors = {name: ev.Editor(folder) for name, folder in specs}
    first = next(iter(editors.values()))
    size = first.pipe.config.resolution
    refs = load_images(args.refs, size=size)
    if args.ref_masks:  # globs as `specialize --ref-masks` takes them
        ref_labels = load_ref_masks([str(p) for p in expand_image_paths(args.ref_masks)], size=size)
    else:
        ref_labels = auto_ref_masks(refs)
    images, labels, target = ev.held_out_frames(args.frames, size, args.seed, args.target_appearance or None)
    encoders = {n: get_encoder(n, p or None) for n, _, p in (e.partition("=") for e in args.encoders)}
    fb = read_specialist(specs[0][1])
    plain = fb["instruction"].split(", the image quality is")[0]
    base = ev.Editor(args.base, plain, first.sampling)
    scorer = FeedbackScorer(_feedback_config(specs[0][1]), refs, ref_labels)
    region = region_mask(labels, "background")

    runs = [("identity", lambda x: x), ("base", lambda x: base(x, refs, args.seed))]
    for name, ed in editors.items():
        runs.append((name, lambda x, ed=ed: ed(x, refs, args.seed)))
        if read_specialist(dict(specs)[name]).get("method") == "hive-condition":
            for level in args.levels:
                alt = ev.Editor(dict(specs)[name], quality_prompt(plain, level), ed.sampling)
                runs.append((f"{name}@{level}/5", lambda x, alt=alt: alt(x, refs, args.seed)))
    rows, outputs = [], {"input": images}
    for name, fn in runs:
        t = time.time()
        edited = fn(images)
        outputs[name] = edited
        row = {"method": name}
        row |= ev.metrics(images, edited, labels, region, refs, ref_labels, encoders, ["background"], target)
        row |= feedback_columns(scorer, images, edited, labels)
        row["s_per_frame"] = (time.time() - t) / len(images)
        rows.append(row)
        log.info("%-22s %s", name, "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "method"))
    ev.write_csv(out / "table.csv", rows)
    write_markdown(out / "table.md", rows)
    ev.write_grid(out / "grid.png", {k: v for k, v in outputs.items() if "@" not in k}, refs)
    log.info("wrote %s (table.csv, table.md, grid.png)", out)


def _feedback_config(folder: str) -> FeedbackConfig:
    """The feedback settings the specialist was trained with (its config.yaml), for the fb_* columns."""
    from omegaconf import OmegaConf

    from sim2real.config import build

    cfg = OmegaConf.to_container(OmegaConf.load(Path(folder) / "config.yaml"))
    return build(FeedbackConfig, cfg["feedback"])


def write_markdown(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for r in rows:
        lines.append(
            "| " + " | ".join(r[k] if k == "method" else f"{r.get(k, float('nan')):.4g}" for k in keys) + " |"
        )
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
