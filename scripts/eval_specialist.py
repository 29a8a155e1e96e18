"""Evaluate specialists against the base editor (paper Table 1 adapted to Push-T) and sweep s_sty (Fig. 5).

    python scripts/eval_specialist.py --base /path/base --bg runs/bg --fg runs/fg \
        --refs real/*.png --out results/eval_specialist --frames 32

Held-out sim frames are rendered from seeds never used in training, with exact label maps. Rows:
`base:bg` (the base editor with the background instruction and the refs as visual prompt), `bg`
(background specialist), `base:bg+fg` and `bg+fg` (the two edits in sequence), and `identity` as a
floor. With `--target-appearance tabletop` (default) the same states are also rendered in the
stand-in "real" look, a ceiling and an oracle (PSNR to target) only a simulator can give.

Columns (lower is better unless marked ↑): Canny L1 and chamfer distance input→output over the
frame and outside the edited region; L2 outside the edited region; style similarity ↑ inside the
edited region (1 − cosine distance to the refs' same region) for every available encoder; mean-Lab
colour distance (ΔE76) of the edited region to the refs'; PSNR ↑ to the target rendering.
The sweep varies s_sty 1 → 6 for `base:bg` and `bg` and writes style similarity vs input consistency.
Writes `table.csv`, `sweep.csv`, `sweep.png`, `grid.png` under `--out`.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sim2real.data.images import load_images
from sim2real.editing.pipeline import EditPipeline
from sim2real.feedback.masks import auto_ref_masks, load_ref_masks, region_mask
from sim2real.feedback.semantic import cosine_distance, get_encoder
from sim2real.feedback.structure import canny_score, chamfer_score
from sim2real.training.specialize import read_specialist

log = logging.getLogger("eval_specialist")


def held_out_frames(n: int, size: int, seed: int, target: str | None):
    from envs.pusht.physics import sample_initial_state
    from envs.pusht.render import render_state

    rng = np.random.default_rng(seed)
    states = [sample_initial_state(rng) for _ in range(n)]
    sim = [render_state(s, "sim", size=size) for s in states]
    tgt = np.stack([render_state(s, target, size=size)[0] for s in states]) if target else None
    return np.stack([p[0] for p in sim]), np.stack([p[1] for p in sim]), tgt


def mean_lab(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean CIE Lab colour of each image's masked region: (B, 3)."""
    out = []
    for img, m in zip(images, masks, strict=True):
        lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        out.append(lab[m].mean(axis=0) if m.any() else np.full(3, np.nan))
    return np.stack(out)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


class Editor:
    """An editor folder with its instruction and sampling settings (a specialist's own, or given)."""

    def __init__(self, folder: str, instruction: str | None = None, sampling: dict | None = None):
        self.pipe = EditPipeline.from_pretrained(folder)
        info = read_specialist(folder) if (Path(folder) / "specialist.json").exists() else {}
        self.instruction = instruction or info.get("instruction")
        self.sampling = {
            k: v for k, v in (sampling or info.get("sampling", {})).items() if k != "style_combine"
        }

    @torch.no_grad()
    def __call__(
        self, images: np.ndarray, refs: np.ndarray, seed: int, batch: int = 16, **overrides
    ) -> np.ndarray:
        kw = self.sampling | overrides
        out = []
        for b, start in enumerate(range(0, len(images), batch)):
            g = torch.Generator().manual_seed(seed + b)
            out.append(
                self.pipe(
                    images[start : start + batch],
                    self.instruction,
                    style_images=refs,
                    generator=g,
                    progress=False,
                    **kw,
                ).images
            )
        return np.concatenate(out)


def metrics(inp, out, labels, edited: np.ndarray, refs, ref_labels, encoders, kinds, target) -> dict:
    """Table-1 columns for one method. edited: bool (B, H, W) union of the regions this method edits."""
    outside = ~edited
    row = {
        "canny_all": canny_score(inp, out).mean(),
        "canny_outside": canny_score(inp, out, mask=outside).mean(),
        "chamfer_all": chamfer_score(inp, out).mean(),
        "chamfer_outside": chamfer_score(inp, out, mask=outside).mean(),
        "l2_outside": float(
            (((inp / 255.0 - out / 255.0) ** 2).sum(-1) * outside).sum() / max(outside.sum(), 1)
        ),
    }
    for kind in kinds:
        m, rm = region_mask(labels, kind), region_mask(ref_labels, kind, check_empty=False)
        ok = rm.reshape(len(rm), -1).any(axis=1)
        for name, enc in encoders.items():
            d = cosine_distance(enc.embed(out, m), enc.embed(refs[ok], rm[ok]))
            row[f"style_{kind[:2]}_{name}"] = float(1.0 - d.mean())
        row[f"dE_{kind[:2]}"] = float(
            np.linalg.norm(mean_lab(out, m) - mean_lab(refs[ok], rm[ok]).mean(0), axis=1).mean()
        )
    if target is not None:
        row["psnr_to_target"] = float(psnr(out, target).mean())
    return {k: float(v) for k, v in row.items()}


def write_csv(path: Path, rows: list[dict]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="base editor folder")
    ap.add_argument("--bg", required=True, help="background specialist folder")
    ap.add_argument("--fg", default=None, help="foreground specialist folder (optional)")
    ap.add_argument("--refs", nargs="+", required=True)
    ap.add_argument(
        "--ref-masks", nargs="*", default=None, help="label maps of the refs (default: automatic)"
    )
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1000, help="held-out states (training uses other seeds)")
    ap.add_argument("--target-appearance", default="tabletop", help="'' to skip the oracle target")
    ap.add_argument(
        "--encoders", nargs="*", default=["texture"], help="name or name=path (dreamsim=DIR, dinov2=DIR)"
    )
    ap.add_argument("--sweep", nargs="*", type=float, default=[1, 2, 3, 4, 5, 6], help="s_sty values")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (2 thrash on a loaded 2-core box)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    bg = Editor(args.bg)
    size = bg.pipe.config.resolution
    refs = load_images(args.refs, size=size)
    ref_labels = load_ref_masks(args.ref_masks, size=size) if args.ref_masks else auto_ref_masks(refs)
    images, labels, target = held_out_frames(args.frames, size, args.seed, args.target_appearance or None)
    encoders = {}
    for spec in args.encoders:
        name, _, path = spec.partition("=")
        encoders[name] = get_encoder(name, path or None)

    base_bg = Editor(args.base, bg.instruction, bg.sampling)
    bg_region = region_mask(labels, "background")
    kinds = ["background", "foreground"]
    results, outputs = [], {"input": images}
    t0 = time.time()
    runs = [
        ("identity", lambda x: x, bg_region),
        ("base:bg", lambda x: base_bg(x, refs, args.seed), bg_region),
    ]
    runs.append(("bg", lambda x: bg(x, refs, args.seed), bg_region))
    if args.fg:
        fg = Editor(args.fg)
        base_fg = Editor(args.base, fg.instruction, fg.sampling)
        both = bg_region | region_mask(labels, "foreground")
        runs.append(("base:bg+fg", lambda x: base_fg(base_bg(x, refs, args.seed), refs, args.seed + 1), both))
        runs.append(("bg+fg", lambda x: fg(bg(x, refs, args.seed), refs, args.seed + 1), both))
    for name, fn, edited in runs:
        t = time.time()
        edited_images = fn(images)
        outputs[name] = edited_images
        row = {"method": name} | metrics(
            images, edited_images, labels, edited, refs, ref_labels, encoders, kinds, target
        )
        row["s_per_frame"] = (time.time() - t) / len(images)
        results.append(row)
        log.info("%-11s %s", name, "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "method"))
    if target is not None:
        row = {"method": f"target:{args.target_appearance}"}
        row |= metrics(images, target, labels, bg_region, refs, ref_labels, encoders, kinds, target)
        results.append(row)
    write_csv(out / "table.csv", results)

    # Fig. 5: style similarity inside the mask vs input consistency as s_sty grows
    sweep = []
    for name, ed in (("base:bg", base_bg), ("bg", bg)):
        for s in args.sweep:
            o = ed(images, refs, args.seed, style_guidance_scale=s)
            m = metrics(
                images,
                o,
                labels,
                bg_region,
                refs,
                ref_labels,
                {"texture": encoders.get("texture") or get_encoder("texture")},
                ["background"],
                None,
            )
            sweep.append({"method": name, "s_sty": s} | m)
            log.info(
                "sweep %-8s s_sty %.1f  style %.4f  canny_all %.4f  l2_outside %.5f",
                name,
                s,
                m["style_ba_texture"],
                m["canny_all"],
                m["l2_outside"],
            )
    write_csv(out / "sweep.csv", sweep)
    plot_sweep(out / "sweep.png", sweep)
    write_grid(out / "grid.png", outputs | ({"target": target} if target is not None else {}), refs)
    log.info("wrote %s (table.csv, sweep.csv, sweep.png, grid.png) in %.0f s", out, time.time() - t0)


def plot_sweep(path: Path, sweep: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name in dict.fromkeys(r["method"] for r in sweep):
        rows = [r for r in sweep if r["method"] == name]
        for ax, key, label in (
            (axes[0], "canny_all", "Canny L1 input→output (↓)"),
            (axes[1], "l2_outside", "L2 outside the table (↓)"),
        ):
            ax.plot([r[key] for r in rows], [r["style_ba_texture"] for r in rows], "o-", label=name)
            for r in rows:
                ax.annotate(f"{r['s_sty']:g}", (r[key], r["style_ba_texture"]), fontsize=7)
            ax.set_xlabel(label)
            ax.set_ylabel("style similarity in the table (↑)")
    axes[0].legend()
    fig.suptitle("s_sty sweep (numbers: s_sty)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_grid(path: Path, outputs: dict[str, np.ndarray], refs: np.ndarray, n: int = 6) -> None:
    cols = [np.concatenate(list(v[:n]), axis=0) for v in outputs.values()]
    ref_col = np.concatenate(
        [refs[i % len(refs)] for i in range(min(n, len(next(iter(outputs.values())))))], axis=0
    )
    grid = np.concatenate([*cols, ref_col], axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    (path.with_suffix(".txt")).write_text("columns: " + ", ".join([*outputs, "ref"]) + "\n")


if __name__ == "__main__":
    main()
