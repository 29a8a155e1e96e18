"""Fig. 8 (ours): zero-shot action MSE on the (stand-in) real set for random init / plain sim / edited
sim policies, and the fine-tuning curve on real data with the edited-sim zero-shot line.
Reads a reproduce_sim2real.py run folder; writes fig8_policy.csv and fig8_policy.png.

    python scripts/fig8_policy.py --run results/sim2real
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

PAPER = {"random": 1.251, "sim": 0.192, "edited": 0.158}  # the specialists paper's Fig. 8 (real Push-T)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    args = ap.parse_args()
    figs = args.run / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ("random", "sim", "edited"):
        path = args.run / f"policy_{name}" / "zero_shot.json"
        z = json.loads(path.read_text()) if path.exists() else {}
        rows.append(
            {
                "policy": name,
                "zero_shot_mse": z.get("zero_shot_mse"),
                "zero_shot_rmse_px": z.get("zero_shot_rmse_px"),
                "paper_mse": PAPER[name],
            }
        )
    with open(figs / "fig8_policy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    names = [r["policy"] for r in rows]
    ax1.bar(names, [r["zero_shot_mse"] or 0 for r in rows], color=["#999", "#69c", "#e83"])
    for i, r in enumerate(rows):
        if r["zero_shot_mse"] is not None:
            ax1.text(i, r["zero_shot_mse"], f"{r['zero_shot_mse']:.3f}", ha="center", va="bottom", fontsize=8)
    ax1.set_ylabel("zero-shot action MSE (normalised)")
    ax1.set_title("pretraining data → stand-in real set")
    curve = args.run / "policy_edited_finetune" / "finetune_curve.csv"
    if curve.exists():
        pts = list(csv.DictReader(open(curve)))
        ax2.plot(
            [int(p["windows_seen"]) for p in pts], [float(p["mse"]) for p in pts], label="fine-tune on real"
        )
        if rows[2]["zero_shot_mse"] is not None:
            ax2.axhline(rows[2]["zero_shot_mse"], ls="--", color="#e83", label="edited-sim zero-shot")
        ax2.set_xlabel("real windows seen (one epoch)")
        ax2.set_ylabel("held-out real MSE")
        ax2.legend(fontsize=8)
    ax2.set_title("fine-tuning on real data")
    fig.tight_layout()
    fig.savefig(figs / "fig8_policy.png", dpi=120)
    print(f"wrote {figs / 'fig8_policy.csv'} and {figs / 'fig8_policy.png'}")
    for r in rows:
        print(r)


if __name__ == "__main__":
    main()
