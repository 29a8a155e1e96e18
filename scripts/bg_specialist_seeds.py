"""Background specialists at several seeds, scored like Table 1: how much of a result is the seed?

    python scripts/bg_specialist_seeds.py --run runs/repro9 --seeds 1 2 --base runs/composite9/model

Reuses a `reproduce_sim2real.py` run folder's sim data and refs; for each base editor and seed it
trains a background specialist with the quick preset (`<run>/seeds/<base name>_s<seed>/`) and scores
it with `scripts/eval_specialist.py` at style guidance 3 on the same 16 held-out frames. A finished
seed (its `table1/table.csv` exists) is skipped, so an interrupted run continues. Prints and writes
`<run>/seeds/table1_bg_seeds.csv` (one row per base × seed, plus the base's own row).
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = HERE.parent / "sim2real" / "assets" / "base_editor"
COLUMNS = ("canny_all", "chamfer_all", "l2_outside", "style_ba_texture", "dE_ba", "psnr_to_target")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a reproduce_sim2real.py output folder")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--base", type=Path, nargs="+", default=[SHIPPED], help="base editor folder(s)")
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = ap.parse_args()
    refs = sorted((args.run / "refs").glob("ref_*.png"))
    sim = args.run / "sim.zarr"
    if not refs or not sim.exists():
        sys.exit(f"error: {args.run} has no refs/ref_*.png or sim.zarr (run reproduce_sim2real.py first)")
    rows = []
    for base in args.base:
        name = base.name if base.name != "model" else base.parent.name
        for seed in args.seeds:
            out = args.run / "seeds" / f"{name}_s{seed}"
            table = out / "table1" / "table.csv"
            cmds = [
                [sys.executable, "-m", "sim2real.cli", "specialize", "--refs", *refs, "--edit", "background",
                 "--out", out, "--sim", sim, "--base", base, "specialize/preset=quick",
                 f"train.num_threads={args.threads}", f"seed={seed}"],
                [sys.executable, HERE / "eval_specialist.py", "--base", base, "--bg", out, "--refs", *refs,
                 "--out", out / "table1", "--frames", str(args.frames), "--sweep", "3",
                 "--threads", str(args.threads)],
            ]  # fmt: skip
            for step, cmd in zip(("specialize", "eval_specialist.py"), cmds, strict=True):
                if args.dry_run:
                    print(" ".join(map(str, cmd)))
                elif not table.exists():
                    if subprocess.run([str(c) for c in cmd]).returncode != 0:
                        sys.exit(f"error: {step} failed for {name}, seed {seed} (see above)")
            if args.dry_run:
                continue
            by = {r["method"]: r for r in csv.DictReader(table.open())}
            if seed == args.seeds[0]:
                rows.append([name, "-", "base:bg"] + [by["base:bg"][c] for c in COLUMNS])
            rows.append([name, seed, "bg"] + [by["bg"][c] for c in COLUMNS])
    if args.dry_run:
        return
    path = args.run / "seeds" / "table1_bg_seeds.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["base_editor", "seed", "method", *COLUMNS])
        w.writerows(rows)
    for r in rows:
        print(" | ".join(str(v) for v in r[:3]), " | ".join(f"{float(v):.4g}" for v in r[3:]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
