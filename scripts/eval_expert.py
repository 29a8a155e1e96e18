"""Success rate and final coverage of the scripted expert over seeded episodes.

python scripts/eval_expert.py --episodes 50 [--seed 0] [key=value …ExpertConfig fields]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from envs.pusht.expert import ExpertConfig, ScriptedExpert
from envs.pusht.physics import PushTPhysicsConfig, PushTSim, sample_initial_state


def run_episode(expert: ScriptedExpert, sim: PushTSim, seed: int) -> dict:
    cfg = sim.config
    rng = np.random.default_rng(seed)
    state = sim.reset(sample_initial_state(rng))
    expert.reset(seed)
    cov, steps = sim.coverage(), 0
    while steps < cfg.max_steps and cov <= cfg.success_threshold:
        sim.step(expert.act(state))
        state, cov, steps = sim.state(), sim.coverage(), steps + 1
    return {"seed": seed, "success": cov > cfg.success_threshold, "coverage": cov, "steps": steps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("overrides", nargs="*", help="ExpertConfig key=value")
    args = ap.parse_args()
    kw = {k: type(getattr(ExpertConfig(), k))(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    expert, sim = ScriptedExpert(ExpertConfig(**kw)), PushTSim(PushTPhysicsConfig())
    t0, results = time.time(), []
    for i in range(args.episodes):
        results.append(run_episode(expert, sim, args.seed + i))
        r = results[-1]
        print(
            f"seed {r['seed']:4d} success {int(r['success'])} coverage {r['coverage']:.3f} steps {r['steps']}",
            flush=True,
        )
    summary = {
        "episodes": len(results),
        "success_rate": float(np.mean([r["success"] for r in results])),
        "mean_final_coverage": float(np.mean([r["coverage"] for r in results])),
        "mean_steps": float(np.mean([r["steps"] for r in results])),
        "seconds": round(time.time() - t0, 1),
        "config": kw,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
