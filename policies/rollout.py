"""`sim2real eval-policy`: closed-loop rollouts of a policy in the Push-T simulator, against a random policy.

    sim2real eval-policy --ckpt runs/policy --episodes 20 [--appearance tabletop] [key=value …]

Episode i starts from `env.reset(seed=seed + i)` (seed 100000 by default, away from the training
seeds, as Diffusion Policy's test episodes). All episodes run in lockstep so that one batched policy
call serves them all. Each call sees the last To observations (the first repeated at the start),
samples a chunk and executes its Ta actions (chunk[To-1 : To-1+Ta]). Reported: the mean over episodes
of the max coverage reached, and the success rate (coverage > 0.95 at any step, which ends the
episode), for the policy and for a uniform random policy on the same starts → `eval.json`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from policies.checkpoint import load_policy, resolve_checkpoint
from policies.dataset import Normalizer, images_to_tensor
from policies.model import DiffusionPolicy
from sim2real.utils import MetricsLogger, tqdm, write_json

log = logging.getLogger(__name__)


@dataclass
class EvalPolicyConfig:
    """Config of `eval-policy` (YAML: configs/eval_policy.yaml).

    Fields:
        ckpt: policy run folder or checkpoint folder.
        episodes: closed-loop episodes; seed: reset seed of the first (episode i uses seed + i).
        appearance: look of the observations (`sim`, `tabletop`, … from configs/appearance/); None = sim.
        max_steps: control steps per episode (10 Hz; Diffusion Policy evaluates Push-T for 300).
        num_inference_steps: override the checkpoint's sampling steps (None = keep).
        random_baseline: also roll out a uniform random policy from the same starts.
        out: JSON report (default: eval.json next to the checkpoint's run folder).
        num_threads / device: torch CPU threads, `cpu` or `cuda`.
    """

    ckpt: Path | None = None
    episodes: int = 10
    seed: int = 100000
    appearance: str | None = None
    max_steps: int = 300
    num_inference_steps: int | None = None
    random_baseline: bool = True
    out: Path | None = None
    num_threads: int = 2
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.ckpt is None:
            raise ValueError("ckpt is required")
        self.ckpt = Path(self.ckpt)
        self.out = Path(self.out) if self.out else None
        if self.episodes < 1 or self.max_steps < 1:
            raise ValueError(f"episodes and max_steps must be >= 1; got {self.episodes=}, {self.max_steps=}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be cpu or cuda; got {self.device=}")


# a batch policy: (pixels (B, To, H, W, 3) uint8, agent_pos (B, To, 2) world px) → actions (B, Ta, 2) world px
BatchPolicy = Callable[[np.ndarray, np.ndarray], np.ndarray]


def diffusion_batch_policy(model: DiffusionPolicy, normalizer: Normalizer, seed: int = 0) -> BatchPolicy:
    """Wrap a policy: normalise observations, sample a chunk, return its executed actions in world pixels."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device

    def act(pixels: np.ndarray, agent_pos: np.ndarray) -> np.ndarray:
        images = images_to_tensor(torch.from_numpy(pixels)).to(device)  # (B, To, 3, H, W)
        pos = torch.from_numpy(normalizer.normalize("agent_pos", agent_pos.astype(np.float32))).to(device)
        chunk = model.predict_action(images, pos, generator)  # (B, T, 2)
        return normalizer.unnormalize("action", model.executed(chunk).cpu()).numpy()

    return act


def random_batch_policy(n_action_steps: int, seed: int, world_size: float = 512.0) -> BatchPolicy:
    rng = np.random.default_rng(seed)

    def act(pixels: np.ndarray, agent_pos: np.ndarray) -> np.ndarray:
        return rng.uniform(0.0, world_size, (len(pixels), n_action_steps, 2))

    return act


def rollout(
    policy: BatchPolicy, envs: list, seeds: list[int], n_obs_steps: int, max_steps: int, desc: str = "rollout"
) -> list[dict]:
    """Run every env from its seed until success or `max_steps`; → per-episode max coverage, success, steps."""
    obs = [env.reset(seed=s)[0] for env, s in zip(envs, seeds, strict=True)]
    hist = [deque([o] * n_obs_steps, maxlen=n_obs_steps) for o in obs]
    max_cov = [float(env.unwrapped.sim.coverage()) for env in envs]
    done, steps, success = [False] * len(envs), [0] * len(envs), [False] * len(envs)
    bar = tqdm(total=max_steps, desc=desc, leave=False)
    while not all(done):
        live = [i for i, d in enumerate(done) if not d]
        pixels = np.stack([np.stack([o["pixels"] for o in hist[i]]) for i in live])  # (B, To, H, W, 3)
        pos = np.stack([np.stack([o["agent_pos"] for o in hist[i]]) for i in live])  # (B, To, 2)
        actions = policy(pixels, pos)  # (B, Ta, 2)
        for b, i in enumerate(live):
            for a in actions[b]:
                o, _, terminated, _, info = envs[i].step(a)
                hist[i].append(o)
                steps[i] += 1
                max_cov[i] = max(max_cov[i], float(info["coverage"]))
                success[i] = success[i] or bool(info["is_success"])
                if terminated or steps[i] >= max_steps:
                    done[i] = True
                    break
        bar.update(max(steps) - bar.n)
    bar.close()
    return [
        {"seed": s, "max_coverage": c, "success": ok, "steps": n}
        for s, c, ok, n in zip(seeds, max_cov, success, steps, strict=True)
    ]


def summarize(episodes: list[dict]) -> dict:
    cov = np.array([e["max_coverage"] for e in episodes])
    return {
        "mean_max_coverage": float(cov.mean()),
        "std_max_coverage": float(cov.std()),
        "success_rate": float(np.mean([e["success"] for e in episodes])),
        "episodes": episodes,
    }


def make_envs(n: int, appearance: str, image_size: int) -> list:
    from envs.pusht.env import PushTEnv  # the simulator is needed here only

    # an unknown appearance is a one-line Sim2RealError from envs.pusht.appearance.load_appearance
    return [
        PushTEnv(obs_type="pixels_agent_pos", appearance=appearance, observation_size=image_size)
        for _ in range(n)
    ]


def run_eval_policy(cfg: EvalPolicyConfig) -> dict:
    """Roll out the checkpoint and a random policy; print and write eval.json."""
    torch.set_num_threads(cfg.num_threads)
    ckpt = resolve_checkpoint(cfg.ckpt)
    model, normalizer = load_policy(ckpt)
    model.to(cfg.device)
    if cfg.num_inference_steps:
        model.cfg.num_inference_steps = cfg.num_inference_steps
    appearance = cfg.appearance or "sim"
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    envs = make_envs(cfg.episodes, appearance, model.cfg.image_size)
    t0 = time.time()
    policy_eps = rollout(
        diffusion_batch_policy(model, normalizer, cfg.seed),
        envs,
        seeds,
        model.cfg.n_obs_steps,
        cfg.max_steps,
        "policy",
    )
    report = {
        "ckpt": str(ckpt), "appearance": appearance, "episodes": cfg.episodes, "seed": cfg.seed,
        "max_steps": cfg.max_steps, "sampler": model.cfg.sampler, "num_inference_steps": model.cfg.num_inference_steps,
        "policy": summarize(policy_eps), "seconds": time.time() - t0,
    }  # fmt: skip
    if cfg.random_baseline:
        rand = random_batch_policy(model.cfg.n_action_steps, cfg.seed)
        report["random"] = summarize(
            rollout(rand, envs, seeds, model.cfg.n_obs_steps, cfg.max_steps, "random")
        )
    out = cfg.out or (ckpt.parent if ckpt.name == "checkpoint" else ckpt) / "eval.json"
    write_json(out, report)
    MetricsLogger(out.parent).log(
        eval_appearance=appearance, eval_mean_max_coverage=report["policy"]["mean_max_coverage"],
        eval_success_rate=report["policy"]["success_rate"],
    )  # fmt: skip
    line = f"policy: mean max coverage {report['policy']['mean_max_coverage']:.3f}, success {report['policy']['success_rate']:.2f}"
    if "random" in report:
        line += f" | random: {report['random']['mean_max_coverage']:.3f}, success {report['random']['success_rate']:.2f}"
    print(f"{line} ({cfg.episodes} episodes, appearance {appearance}) → {out}")
    return report
