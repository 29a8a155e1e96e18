"""Reproduce the sim-to-real experiment end to end (paper Sec. 4.3, Figs. 5, 7, 8 and Table 1).

    python scripts/reproduce_sim2real.py --out results/sim2real            # quick preset, 2 CPU cores
    python scripts/reproduce_sim2real.py --out results/sim2real_gpu --preset paper   # a GPU machine

Stages (each is a `sim2real` command; a finished stage is skipped, so rerunning is cheap and an
interrupted run continues where it stopped; every stage's wall time goes to `<out>/stages.jsonl`):

  1. render    sim training episodes (`sim` look) and a stand-in "real" set (`tabletop` look, a
               disjoint seed range — no real Push-T camera data is available here), 5 reference frames
  2. bg        background specialist from the 5 refs (D3PO from AI feedback)
  3. fg        T-block specialist, trained on frames the background specialist already edited
  4. edit      repaint the sim training set: background, then T-block, same refs as visual prompt
  5. policies  random init / plain sim / edited sim → zero-shot action MSE on the stand-in real set,
               and a one-epoch fine-tuning curve on real data for the edited-sim policy
  6. figures   Fig. 7 (edits), Fig. 8 (MSE table + curve), Table 1 and Fig. 5 (eval_specialist.py)

Real users replace stage 1's stand-in with their frames (`sim2real import refs …`) and their dataset
(`sim2real import diffusion-policy …`); the other stages are the same commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
S2R = [sys.executable, "-m", "sim2real.cli"]
SHIPPED_BASE = HERE.parent / "sim2real" / "assets" / "base_editor"


@dataclass
class Preset:
    """Sizes of one reproduction. `quick` fits ~30 min on two CPU cores; `paper` wants a GPU."""

    sim_episodes: int
    real_episodes: int
    pool_episodes: int  # sim episodes the background specialist edits to train the T-block one
    specialize: list[str]  # overrides of both specialize runs
    edit: list[str]  # overrides of `sim2real edit`
    policy: list[str]  # overrides of pretrain-policy
    finetune: list[str]
    eval_frames: int


PRESETS = {
    "quick": Preset(
        sim_episodes=10,
        real_episodes=8,
        pool_episodes=2,
        specialize=["specialize/preset=quick"],
        edit=["num_inference_steps=4", "batch_size=32"],
        policy=["steps=600", "time_limit_min=5"],
        finetune=["finetune_eval_every=10"],
        eval_frames=16,
    ),
    # plumbing check only (tests/test_reproduce.py): every stage, tiny sizes, meaningless numbers
    "smoke": Preset(
        sim_episodes=2,
        real_episodes=2,
        pool_episodes=1,
        specialize=[
            "specialize/preset=quick",
            "train.steps=1",
            "train.frames_per_step=2",
            "train.samples_per_frame=2",
            "train.micro_batch=2",
            "train.num_inference_steps=2",
            "frame_pool=8",
            "eval_frames=2",
        ],
        edit=["num_inference_steps=1", "batch_size=64"],
        policy=["steps=2", "zero_shot_stride=25", "val_windows=16"],
        finetune=["finetune_eval_every=100", "finetune_eval_stride=25"],
        eval_frames=2,
    ),
    "paper": Preset(
        sim_episodes=200,
        real_episodes=40,
        pool_episodes=10,
        specialize=["train.steps=40", "train.device=cuda"],
        edit=["device=cuda", "batch_size=256"],
        policy=["policy=paper", "steps=20000", "device=cuda"],
        finetune=["finetune_eval_every=20"],
        eval_frames=64,
    ),
}


class Stages:
    """Runs commands as named stages and logs their wall times to `stages.jsonl`.

    A stage is done when its marker `<out>/.done/<name>` exists (written after all its commands
    succeeded) — not when its output exists, because resumable commands (`render`, `edit`) write
    into their final path as they go. An interrupted stage is rerun, and its command resumes.
    """

    def __init__(self, out: Path):
        self.out = out
        self.log = out / "stages.jsonl"
        self.done = out / ".done"
        self.done.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, output: Path, *commands: list[str]) -> None:
        marker = self.done / name
        if marker.exists():
            print(f"[{name}] done before ({output}): skipped")
            self._record(name, 0.0, skipped=True)
            return
        t0 = time.time()
        for cmd in commands:
            print(f"[{name}] $ {shlex.join(str(c) for c in cmd)}", flush=True)
            subprocess.run([str(c) for c in cmd], check=True)
        marker.write_text(f"{output}\n")
        self._record(name, time.time() - t0, skipped=False)

    def _record(self, name: str, seconds: float, skipped: bool) -> None:
        with open(self.log, "a") as f:
            f.write(
                json.dumps(
                    {"stage": name, "seconds": round(seconds, 1), "skipped": skipped, "time": time.time()}
                )
                + "\n"
            )


def take_refs(real: Path, folder: Path, n: int = 5) -> list[Path]:
    """`n` reference frames spread over the stand-in real set's episodes, as PNGs."""
    import cv2

    from sim2real.data.replay import open_replay

    store = open_replay(real, require=("img",))
    ends = np.asarray(store.episode_ends)
    starts = np.concatenate([[0], ends[:-1]])
    picks = [
        int(starts[i % len(ends)] + (ends[i % len(ends)] - starts[i % len(ends)]) // 2) for i in range(n)
    ]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(picks):
        path = folder / f"ref_{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(np.asarray(store.data["img"][frame]), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("results/sim2real"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--base", type=Path, default=None, help="base editor folder (default: the shipped one)")
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="torch CPU threads of every stage (default: 2; use 1 on a machine other jobs share — "
        "waiting OpenMP threads made stages several times slower under load)",
    )
    args = ap.parse_args()
    p, out = PRESETS[args.preset], args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SIM2REAL_PROGRESS", "0")
    st = Stages(out)
    base = ["--base", args.base] if args.base else []
    threads = f"num_threads={args.threads}"
    sim, real, pool, refs_dir = out / "sim.zarr", out / "real.zarr", out / "pool.zarr", out / "refs"

    # 1. data: sim episodes, a disjoint stand-in real set, 5 reference frames from it
    st.run("render_sim", sim, S2R + ["render", "--out", sim, "--episodes", p.sim_episodes, "--seed", 0])
    st.run(
        "render_real",
        real,
        S2R
        + [
            "render",
            "--out",
            real,
            "--episodes",
            p.real_episodes,
            "--seed",
            50_000,
            "--appearance",
            "tabletop",
        ],
    )
    refs = sorted(refs_dir.glob("ref_*.png")) or take_refs(real, refs_dir)
    ref_args = ["--refs", *refs]

    # 2-3. specialists: background, then the T-block on background-edited frames
    bg, fg = out / "spec_bg", out / "spec_fg"
    st.run(
        "specialize_bg",
        bg / "specialist.json",
        S2R
        + [
            "specialize",
            *ref_args,
            "--edit",
            "background",
            "--out",
            bg,
            "--sim",
            sim,
            *base,
            *p.specialize,
            f"train.{threads}",
        ],
    )
    st.run(
        "edit_pool",
        pool,
        S2R + ["render", "--out", out / "pool_sim.zarr", "--episodes", p.pool_episodes, "--seed", 90_000],
        S2R
        + [
            "edit",
            "--in",
            out / "pool_sim.zarr",
            "--out",
            pool,
            "--specialist",
            bg,
            *ref_args,
            *p.edit,
            threads,
        ],
    )
    st.run(
        "specialize_fg",
        fg / "specialist.json",
        S2R
        + [
            "specialize",
            *ref_args,
            "--edit",
            "foreground",
            "--out",
            fg,
            "--sim",
            pool,
            *base,
            *p.specialize,
            f"train.{threads}",
        ],
    )

    # 4. repaint the whole sim training set
    edited = out / "edited.zarr"
    st.run(
        "edit_sim",
        edited,
        S2R
        + [
            "edit",
            "--in",
            sim,
            "--out",
            edited,
            "--specialist",
            bg,
            "--specialist",
            fg,
            *ref_args,
            *p.edit,
            threads,
        ],
    )

    # 5. policies: random init, plain sim, edited sim; zero-shot on the stand-in real set
    for name, train, extra in (
        ("random", sim, ["steps=0"]),
        ("sim", sim, p.policy),
        ("edited", edited, p.policy),
    ):
        run = out / f"policy_{name}"
        st.run(
            f"policy_{name}",
            run / "zero_shot.json",
            S2R + ["pretrain-policy", "--train", train, "--eval-real", real, "--out", run, *extra, threads],
        )
    if not args.skip_finetune:
        ft = out / "policy_edited_finetune"
        st.run(
            "finetune_real",
            ft / "finetune_curve.csv",
            S2R
            + [
                "pretrain-policy",
                "--train",
                edited,
                "--out",
                ft,
                "--init",
                out / "policy_edited",
                "steps=0",
                f"finetune_real={real}",
                *p.finetune,
                threads,
            ],
        )

    # 6. figures and tables, each from its own script reading the stage outputs
    figs = out / "figures"
    st.run("fig7", figs / "fig7_edits.png", [sys.executable, HERE / "fig7_edits.py", "--run", out])
    st.run("fig8", figs / "fig8_policy.csv", [sys.executable, HERE / "fig8_policy.py", "--run", out])
    st.run(
        "table1_fig5",
        figs / "table1" / "table.csv",
        [
            sys.executable,
            HERE / "eval_specialist.py",
            "--bg",
            bg,
            "--fg",
            fg,
            "--refs",
            *refs,
            "--out",
            figs / "table1",
            "--frames",
            str(p.eval_frames),
            "--base",
            args.base or SHIPPED_BASE,
            "--threads",
            str(args.threads),
        ],
    )
    total = sum(json.loads(line)["seconds"] for line in st.log.read_text().splitlines())
    print(f"done: figures in {figs}; stage times in {st.log} (this log's total {total / 60:.1f} min)")


if __name__ == "__main__":
    main()
