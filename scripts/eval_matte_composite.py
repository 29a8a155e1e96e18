"""Compare edit mattes on shared decodes: decode held-out pairs once, composite them with each editor's
matte (and colour head), and score every composite with the edit-success metrics.

    python scripts/eval_matte_composite.py --pairs 600 --split validation shipped runs/rimcomp14/model
    python scripts/eval_matte_composite.py --pairs 200 shipped --toggle-rims --oracle

The decode before the matte (`EditPipeline(..., composite=False)`) depends on every module but the
matte, so editors that differ in the matte alone (`sim2real pretrain-matte`
runs) can be compared on one set of decodes: the numbers are the ones `scripts/eval_base_editor.py`
gives at the same setting (same pairs, same noise), at a fraction of the time. Editors whose
decoding modules differ from the first one's are refused. Decodes are cached under `--cache`.

`--toggle-rims` also scores each matte with its rim transfer (`EditMatte(rim_transfer=…)`) flipped;
`--oracle` also composites with the exact shares of the edited parts (`edit_coverage`) and the first
editor's colour head: what a perfect matte would score on these decodes.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sim2real.data.pairs import EditPairGenerator
from sim2real.errors import Sim2RealError
from sim2real.training.base_editor import load_base_editor
from sim2real.training.editor_metrics import pair_metrics, summary

FIELDS = ["editor", "variant", "split", "words", "pairs", "success", "colour_ok", "outside_ok"]
FIELDS += ["boundary_f1", "psnr_outside_median"]


def decoding_state(pipe) -> dict:
    """Every weight the decode depends on: all modules but the matte."""
    return {
        f"{m}.{k}": v for m, mod in pipe.modules.items() if m != "matte" for k, v in mod.state_dict().items()
    }


def same_decoder(a, b) -> bool:
    sa, sb = decoding_state(a), decoding_state(b)
    ca, cb = ({k: v for k, v in asdict(p.config).items() if not k.startswith("matte")} for p in (a, b))
    return (
        ca == cb
        and dict(a.scheduler.config) == dict(b.scheduler.config)
        and sa.keys() == sb.keys()
        and all(torch.equal(sa[k], sb[k]) for k in sa)
    )


def decodes(pipe, pairs: dict, setting: tuple, path: Path) -> torch.Tensor:
    """The raw decodes (B, 3, H, W) in [-1, 1], cached at `path`."""
    if path.exists():
        try:
            return torch.from_numpy(np.load(path)["decoded"])
        except (OSError, ValueError, KeyError) as e:
            raise Sim2RealError(
                f"cached decodes {path} are unreadable ({e}); delete the file to decode again"
            ) from e
    steps, text, image = setting
    out = pipe(
        pairs["input"],
        pairs["instruction"],
        num_inference_steps=int(steps),
        guidance_scale=text,
        image_guidance_scale=image,
        generator=torch.Generator().manual_seed(0),  # as eval_base_editor.py
        progress=True,
        output_type="pt",
        composite=False,
    ).images.float()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, decoded=out.numpy())
    tmp.replace(path)
    return out


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def score(name: str, variant: str, out: torch.Tensor, pairs: dict, extra: dict) -> dict:
    m = pair_metrics(pairs["input"], to_uint8(out), pairs["target"], pairs["edit_mask"], pairs["labels"])
    row = {
        "editor": name,
        "variant": variant,
        **extra,
        **summary(m),
    }
    print(
        f"{name:>40} {variant:>18}  success {m.success.sum():4d}/{len(out)} ({row['success']:.3f})  colour ok "
        f"{row['colour_ok']:.3f}  outside ok {row['outside_ok']:.3f}  F1 {row['boundary_f1']:.3f}"
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("editors", nargs="+", help="editor folders ('shipped': the shipped base editor)")
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--split", choices=("test", "validation"), default="validation")
    ap.add_argument("--words", choices=("coarse", "fine"), default="fine")
    ap.add_argument("--setting", nargs=3, type=float, default=(20, 1.5, 1.5), metavar=("STEPS", "S_T", "S_I"))
    ap.add_argument(
        "--toggle-rims", action="store_true", help="also score each matte with rim transfer flipped"
    )
    ap.add_argument("--oracle", action="store_true", help="also composite with the exact shares")
    ap.add_argument("--cache", default="runs/matte_composite", help="folder for the cached decodes")
    ap.add_argument("--out", default=None, help="CSV to write (default: CACHE/scores.csv)")
    args = ap.parse_args()
    seed = {"test": 10_000, "validation": 20_000}[args.split]  # as eval_base_editor.py
    pairs = EditPairGenerator(
        seed=seed, with_style=True, with_coverage=args.oracle, fine_words=float(args.words == "fine")
    ).batch(args.pairs)
    pipes = {}
    for name in args.editors:
        try:
            pipes[name] = load_base_editor(None if name == "shipped" else name)
        except (OSError, ValueError) as e:
            raise SystemExit(f"error: cannot load editor {name!r}: {e}") from e
        if pipes[name].matte is None:
            raise SystemExit(f"error: {name} has no edit matte to compare")
    first_name, first = next(iter(pipes.items()))
    for name, pipe in pipes.items():
        if not same_decoder(first, pipe):
            raise SystemExit(f"error: {name} decodes differently from {first_name} (not a matte-only change)")
    steps, text, image = args.setting
    key = f"{args.split}_{args.words}_{args.pairs}_{int(steps)}_{text:g}_{image:g}.npz"
    decoded = decodes(first, pairs, (steps, text, image), Path(args.cache) / key)
    extra = {"split": args.split, "words": args.words, "pairs": args.pairs}
    rows = []
    with torch.no_grad():
        cond = first.prepare_conditions(pairs["input"], pairs["instruction"], None)
        image_in = first.codec.decode(cond.image_latents).clamp(-1, 1).float()
        for name, pipe in pipes.items():
            matte, rims = pipe.matte, bool(pipe.matte.config.rim_transfer)
            variants = [rims, not rims] if args.toggle_rims else [rims]
            for on in variants:
                matte.register_to_config(rim_transfer=on)
                out = matte.composite(decoded, image_in, cond.text_embeds, calibrate=True)
                rows.append(score(name, f"rim transfer {'on' if on else 'off'}", out, pairs, extra))
            matte.register_to_config(rim_transfer=rims)
        if args.oracle:  # the exact shares in place of the matte's α (colour head: the first editor's)
            shares = torch.as_tensor(np.asarray(pairs["coverage"])).float()
            matte, rims = first.matte, bool(first.matte.config.rim_transfer)
            for on in (False, True):
                matte.register_to_config(rim_transfer=on)
                out = matte.composite(decoded, image_in, cond.text_embeds, calibrate=True, parts=shares)
                rows.append(score("exact shares", f"rim transfer {'on' if on else 'off'}", out, pairs, extra))
            matte.register_to_config(rim_transfer=rims)
    out_csv = Path(args.out) if args.out else Path(args.cache) / "scores.csv"
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    print(f"wrote {out_csv}")


if __name__ == "__main__":
    try:
        main()
    except Sim2RealError as e:
        raise SystemExit(f"error: {e}") from e
