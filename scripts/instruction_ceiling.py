"""How much of the base-editor colour criterion can the *instruction* decide? A ceiling for text-only editors.

    python scripts/instruction_ceiling.py --train 20000 --test 2000

Edit success (scripts/eval_base_editor.py) asks the edited region's mean Lab colour to move at least
halfway from the input's to the target rendering's. The instruction names the target in words
("make the table dark grey-blue wood"), and many target draws share those words. The pair generator
says them in coarse or (for half of the pairs) fine detail ("make the table very dark muted blue
wood"); every oracle is computed for each, as if all instructions used it. This script estimates
what an editor that knows only the words (plus the input frame) can reach at best, by oracles that
never see the target rendering:

* words: predict each edited part's mean Lab (table, T) as the mean over training pairs with the same
  words for that part; combine the parts by the pair's own pixel counts.
* words+light: the same, per input lighting bin (the editor sees the input, so it sees its lighting).
* words (best point): per words, the one colour that meets the criterion on the most training pairs
  (the best a deterministic text-only editor can do on the training distribution).
* words+input (Bayes): per pair, the colour that meets the criterion for the most target colours the
  words could mean, given this input's colour (the tolerance is half the input's distance).

It prints the fraction of held-out test pairs (seed 10 000, the eval's stream) whose ratio is ≤ 0.5
for each oracle and kind of words, split by edit kind, and writes a CSV.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from envs.pusht.appearance import describe_appearance
from sim2real.data.pairs import EditPairGenerator
from sim2real.training.editor_metrics import to_lab

DETAILS = ("coarse", "fine")  # how closely the instruction names the colours (describe_appearance)


def collect(seed: int, n: int, desc: str) -> list[dict]:
    gen = EditPairGenerator(seed=seed)
    rows = []
    for _ in tqdm(range(n), desc=desc, mininterval=5):
        p = gen.sample()
        lab_t, lab_i = to_lab(p.target[None])[0], to_lab(p.input[None])[0]
        words = {d: describe_appearance(p.target_appearance, d) for d in DETAILS}
        src = p.source
        light = (round(float(src.light_strength) * 4), round(float(src.vignette) * 5))
        row = {"kind": p.kind, "light": light}
        for part, label, key in (("table", 0, "table"), ("t", 1, "t")):
            m = p.labels == label
            row[f"{part}_n"] = int(m.sum())
            row[f"{part}_tgt"] = lab_t[m].mean(0) if m.any() else np.zeros(3)
            for d in DETAILS:
                row[f"{part}_words_{d}"] = words[d][key]
        row["tgt"] = lab_t[p.edit_mask].mean(0)
        row["inp"] = lab_i[p.edit_mask].mean(0)
        rows.append(row)
    return rows


def ceilings(train: list[dict], test: list[dict], detail: str) -> list[dict]:
    """The four oracles' colour-ok rates on `test` when the instructions use `detail` words."""
    for r in train + test:
        for part in ("table", "t"):
            r[f"{part}_words"] = r[f"{part}_words_{detail}"]
    tables: dict[str, dict] = {"words": defaultdict(list), "words+light": defaultdict(list)}
    for r in train:
        for part in ("table", "t"):
            tables["words"][(part, r[f"{part}_words"])].append(r[f"{part}_tgt"])
            tables["words+light"][(part, r[f"{part}_words"], r["light"])].append(r[f"{part}_tgt"])
    means = {k: {kk: np.mean(v, 0) for kk, v in t.items()} for k, t in tables.items()}
    # words (best point): per words, the colour that meets the criterion on the most training pairs
    # (a deterministic editor can do no better on the training distribution)
    judges: dict = defaultdict(list)
    for r in train:
        if r["kind"] != "both":
            part = "table" if r["kind"] == "background" else "t"
            judges[(part, r[f"{part}_words"])].append((r["tgt"], 0.5 * np.linalg.norm(r["inp"] - r["tgt"])))
    means["words (best point)"] = dict(means["words"])
    for key, js in judges.items():
        tgt = np.array([j[0] for j in js])
        tol = np.array([j[1] for j in js])
        cands = tgt[:400]
        hits = (np.linalg.norm(cands[:, None] - tgt[None], axis=-1) <= tol[None]).sum(1)
        means["words (best point)"][key] = cands[int(hits.argmax())]

    def predict(r: dict, oracle: str) -> np.ndarray:
        parts = {"background": ("table",), "foreground": ("t",), "both": ("table", "t")}[r["kind"]]
        total, weight = np.zeros(3), 0
        for part in parts:
            key_w = (part, r[f"{part}_words"])
            key = key_w + (r["light"],) if oracle == "words+light" else key_w
            pred = means[oracle].get(key, means["words"].get(key_w, r["inp"]))
            total += pred * r[f"{part}_n"]
            weight += r[f"{part}_n"]
        return total / max(weight, 1)

    # (part, words) -> up to 300 target colours those words were said of
    pools = {k: np.array(v[:300]) for k, v in tables["words"].items()}
    rng = np.random.default_rng(0)

    def bayes_ratio(r: dict) -> float:
        """The per-pair best colour given words and input: the candidate that meets the criterion for
        the most targets those words could mean (posterior samples from the training pairs)."""
        parts = {"background": ("table",), "foreground": ("t",), "both": ("table", "t")}[r["kind"]]
        samples, weight = 0.0, 0
        for part in parts:
            pool = pools.get((part, r[f"{part}_words"]))
            if pool is None:
                return np.inf
            samples = samples + pool[rng.integers(len(pool), size=300)] * r[f"{part}_n"]
            weight += r[f"{part}_n"]
        samples = samples / max(weight, 1)  # (300, 3) region means the instruction is consistent with
        tol = 0.5 * np.linalg.norm(r["inp"] - samples, axis=-1)
        hits = (np.linalg.norm(samples[:, None] - samples[None], axis=-1) <= tol[None]).sum(1)
        best = samples[int(hits.argmax())]
        return float(np.linalg.norm(best - r["tgt"]) / max(np.linalg.norm(r["inp"] - r["tgt"]), 1e-6))

    results = []
    for oracle in ("words", "words+light", "words (best point)", "words+input (Bayes)"):
        ratios = np.array(
            [bayes_ratio(r) for r in test]
            if oracle == "words+input (Bayes)"
            else [
                np.linalg.norm(predict(r, oracle) - r["tgt"]) / max(np.linalg.norm(r["inp"] - r["tgt"]), 1e-6)
                for r in test
            ]
        )
        kinds = np.array([r["kind"] for r in test])
        row = {
            "words": detail,
            "oracle": oracle,
            "colour_ok": float((ratios <= 0.5).mean()),
            "colour_ok_first48": float((ratios[:48] <= 0.5).mean()),  # the eval's 48 test pairs
            "ratio_median": float(np.median(ratios)),
        }
        for k in ("background", "foreground", "both"):
            row[f"colour_ok_{k}"] = float((ratios[kinds == k] <= 0.5).mean())
        results.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=20000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--out", default="runs/instruction_ceiling")
    args = ap.parse_args()
    train = collect(0, args.train, "training pairs")
    test = collect(10_000, args.test, "test pairs")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [row for detail in DETAILS for row in ceilings(train, test, detail)]
    d_in = np.array([np.linalg.norm(r["inp"] - r["tgt"]) for r in test])
    print(
        f"input→target mean-Lab distance: median {np.median(d_in):.1f}, <10 ΔE on {(d_in < 10).mean():.0%} of pairs"
    )
    with open(out / "ceiling.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in results)
    print(f"wrote {out / 'ceiling.csv'}")


if __name__ == "__main__":
    main()
