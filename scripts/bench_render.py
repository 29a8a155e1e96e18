"""Env steps/s with 96×96 pixel observations: ours vs gym-pusht, side by side in one run.

    python scripts/bench_render.py [--steps 2000] [--rounds 3] [--venv /tmp/sim2real-gym-pusht-venv]

gym-pusht pins pymunk<7 and the GUI opencv build, so it gets its own virtual environment, created
here on first use: `pip install --no-deps gym-pusht` plus `pygame<2.7 pymunk<7 shapely gymnasium
opencv-python-headless`. Both envs step the same seeded uniform-random actions with
`obs_type="pixels_agent_pos"`, resetting every 300 steps; rounds alternate ours/theirs so that load
from other processes hits both alike. Prints one JSON line with medians and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import venv
from pathlib import Path

import numpy as np

GYM_PUSHT_REQS = ["pygame<2.7", "pymunk<7", "shapely", "gymnasium", "opencv-python-headless", "numpy"]

# Runs inside the gym-pusht venv: prints steps/s.
THEIRS = r"""
import json, os, sys, time
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
import gymnasium as gym, numpy as np, gym_pusht  # noqa: F401
steps, seed = int(sys.argv[1]), int(sys.argv[2])
actions = np.random.default_rng(seed).uniform(0, 512, size=(steps, 2))
env = gym.make("gym_pusht/PushT-v0", obs_type="pixels_agent_pos", render_mode="rgb_array")
env.reset(seed=seed)
obs, *_ = env.step(actions[0])
assert obs["pixels"].shape == (96, 96, 3), obs["pixels"].shape
t = time.perf_counter()
for i, a in enumerate(actions):
    obs, r, term, trunc, info = env.step(a)
    if term or trunc or (i + 1) % 300 == 0:
        env.reset()
print(json.dumps({"steps_per_s": steps / (time.perf_counter() - t)}))
"""


def ensure_venv(path: Path) -> Path:
    py = path / "bin" / "python"
    if (
        py.exists()
        and subprocess.run([str(py), "-c", "import gym_pusht"], capture_output=True).returncode == 0
    ):
        return py
    print(f"creating gym-pusht venv at {path} …", file=sys.stderr)
    venv.create(path, with_pip=True)
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", "gym-pusht"], check=True)
    subprocess.run(pip + GYM_PUSHT_REQS, check=True)
    return py


def bench_ours(steps: int, seed: int, appearance: str) -> float:
    import gymnasium as gym

    import envs.pusht  # noqa: F401  (registers sim2real/PushT-v0)

    actions = np.random.default_rng(seed).uniform(0, 512, size=(steps, 2))
    env = gym.make("sim2real/PushT-v0", obs_type="pixels_agent_pos", appearance=appearance)
    env.reset(seed=seed)
    obs, *_ = env.step(actions[0])
    assert obs["pixels"].shape == (96, 96, 3)
    t = time.perf_counter()
    for i, a in enumerate(actions):
        obs, r, term, trunc, info = env.step(a)
        if term or trunc or (i + 1) % 300 == 0:
            env.reset()
    return steps / (time.perf_counter() - t)


def bench_theirs(py: Path, steps: int, seed: int) -> float:
    env = {**os.environ, "SDL_VIDEODRIVER": "dummy", "PYGAME_HIDE_SUPPORT_PROMPT": "1"}
    out = subprocess.run(
        [str(py), "-c", THEIRS, str(steps), str(seed)], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--venv", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "sim2real-gym-pusht-venv"
    )
    args = ap.parse_args()
    py = ensure_venv(args.venv)
    res: dict[str, list[float]] = {"ours_sim": [], "ours_tabletop": [], "gym_pusht": []}
    for r in range(args.rounds):
        res["ours_sim"].append(bench_ours(args.steps, args.seed + r, "sim"))
        res["gym_pusht"].append(bench_theirs(py, args.steps, args.seed + r))
        res["ours_tabletop"].append(bench_ours(args.steps, args.seed + r, "tabletop"))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.0f}/s" for k, v in res.items()), file=sys.stderr)
    med = {k: statistics.median(v) for k, v in res.items()}
    summary = {
        "steps": args.steps,
        "rounds": args.rounds,
        "steps_per_s_median": {k: round(v, 1) for k, v in med.items()},
        "ratio_sim_vs_gym_pusht": round(med["ours_sim"] / med["gym_pusht"], 2),
        "ratio_tabletop_vs_gym_pusht": round(med["ours_tabletop"] / med["gym_pusht"], 2),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
