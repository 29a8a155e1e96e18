"""Compare editors' edit mattes and colour heads on pairs in coarse and in fine words, without sampling.

    python scripts/eval_colour_head.py --pairs 1000 --seed 20000 EDITOR_DIR [EDITOR_DIR …]

For each editor (a folder; `shipped` for the packaged base editor) and each kind of instruction words,
`sim2real.training.matte.evaluate` on the same pairs: `colour_ok` is how often the colour half of edit
success would hold if colour calibration set each edited part to the head's colour, `iou_share` the
matte's IoU with the pixels the edit changes. Seconds per editor instead of the minutes a sampled
evaluation (scripts/eval_base_editor.py) takes; seed 20 000 is the validation stream, 10 000 the test
stream. Writes a CSV.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

from sim2real.errors import Sim2RealError
from sim2real.training.base_editor import load_base_editor
from sim2real.training.matte import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("editors", nargs="+", help="editor folders ('shipped': the packaged base editor)")
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20_000, help="20 000: validation pairs (default)")
    ap.add_argument("--out", default="runs/eval_colour_head.csv")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.editors:
        try:
            pipe = load_base_editor(None if name == "shipped" else name)
        except Sim2RealError as e:
            raise SystemExit(f"error: {e}") from None
        if pipe.matte is None:
            raise SystemExit(f"error: {name} has no edit matte (train one: sim2real pretrain-matte)")
        for words, share in (("coarse", 0.0), ("fine", 1.0)):
            m = evaluate(pipe, args.pairs, pipe.config.resolution, seed=args.seed, fine_words=share)
            rows.append({"editor": name, "words": words, "colour_ok": m["eval_colour_ok"],
                         "iou_share": m["eval_iou_share"], "colour_delta_e": m["eval_colour_delta_e"]})  # fmt: skip
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
