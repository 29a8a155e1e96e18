"""`sim2real render`: scripted-expert Push-T demonstrations with label masks → a zarr replay store.

    sim2real render --out sim.zarr --episodes 100 [--seed 0] [--appearance sim|tabletop] [image_size=96 …]

Episode i starts from Diffusion Policy's random reset drawn with seed `seed + i`; it ends at success
(coverage > 0.95) or after `physics.max_steps` steps. Each frame holds the observation before the
action (image, mask, state, keypoints, the previous step's contact count) and the action taken,
as Diffusion Policy's `demo_pusht.py` records them. Re-running into an existing store resumes after
its last complete episode; the same arguments always give identical arrays.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.pusht.appearance import Appearance, load_appearance
from envs.pusht.expert import ExpertConfig, ScriptedExpert
from envs.pusht.physics import PushTPhysicsConfig, PushTSim, sample_initial_state
from envs.pusht.render import render_state
from sim2real.config import to_dict
from sim2real.data.replay import ReplayWriter
from sim2real.errors import Sim2RealError
from sim2real.utils import MetricsLogger, tqdm

logger = logging.getLogger(__name__)


@dataclass
class RenderConfig:
    """Settings of `sim2real render` (configs/render.yaml; override with key=value).

    out: zarr store to write.
    episodes: total number of episodes the store should hold.
    seed: seed of episode 0; episode i uses seed + i.
    appearance: preset name in configs/appearance/ (or a YAML path).
    overwrite: replace an existing store instead of resuming it.
    image_size: side of the square frames and masks (Diffusion Policy uses 96).
    chunk_frames: frames per zarr chunk of the image-like arrays.
    physics: Push-T physics constants (Diffusion Policy's values).
    expert: scripted expert settings.
    """

    out: str = ""
    episodes: int = 0
    seed: int = 0
    appearance: str = "sim"
    overwrite: bool = False
    image_size: int = 96
    chunk_frames: int = 128
    physics: PushTPhysicsConfig = field(default_factory=PushTPhysicsConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)

    def __post_init__(self) -> None:
        if not str(self.out):
            raise ValueError("out must be given (--out X.zarr)")
        if self.episodes < 1:
            raise ValueError(f"episodes must be >= 1; got {self.episodes}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0; got {self.seed}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8; got {self.image_size=}")
        if self.chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1; got {self.chunk_frames=}")


def record_episode(
    seed: int, sim: PushTSim, expert: ScriptedExpert, appearance: Appearance, image_size: int = 96
) -> tuple[dict[str, np.ndarray], dict]:
    """Roll the expert out from the seeded random start; return (episode arrays, summary)."""
    cfg = sim.config
    state = sim.reset(sample_initial_state(np.random.default_rng(seed)))
    expert.reset(seed)
    noise_rng = np.random.default_rng([seed, 1])
    frames: dict[str, list] = {k: [] for k in ("img", "mask", "state", "keypoint", "n_contacts", "action")}
    n_contacts, coverage = 0, sim.coverage()
    for _ in range(cfg.max_steps):
        action = expert.act(state)
        img, mask = render_state(state, appearance, image_size, rng=noise_rng, goal_pose=cfg.goal_pose)
        frames["img"].append(img)
        frames["mask"].append(mask)
        frames["state"].append(state)
        frames["keypoint"].append(sim.keypoints())
        frames["n_contacts"].append([n_contacts])
        frames["action"].append(action)
        sim.step(action)
        state, n_contacts, coverage = sim.state(), sim.n_contacts, sim.coverage()
        if coverage > cfg.success_threshold:
            break
    episode = {
        "img": np.stack(frames["img"]).astype(np.uint8),
        "mask": np.stack(frames["mask"]).astype(np.uint8),
        "state": np.asarray(frames["state"], np.float32),
        "keypoint": np.asarray(frames["keypoint"], np.float32),
        "n_contacts": np.asarray(frames["n_contacts"], np.float32),
        "action": np.asarray(frames["action"], np.float32),
    }
    summary = {
        "seed": seed,
        "steps": len(frames["img"]),
        "coverage": coverage,
        "success": coverage > cfg.success_threshold,
    }
    return episode, summary


def _identity(cfg: RenderConfig, appearance: Appearance) -> dict:
    """What must match for a store to be resumed (everything that changes the arrays)."""
    return {
        "seed": cfg.seed,
        "appearance": {"name": appearance.name, **appearance.to_dict()},
        "image_size": cfg.image_size,
        "physics": to_dict(cfg.physics),
        "expert": to_dict(cfg.expert),
    }


def _open_writer(cfg: RenderConfig, identity: dict) -> ReplayWriter:
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        writer = ReplayWriter.resume(out)
        old = writer.attrs.get("render_args")
        if old != identity:
            diff = sorted(k for k in identity if (old or {}).get(k) != identity[k])
            raise Sim2RealError(
                f"{out} was rendered with different arguments ({', '.join(diff) or 'not a render store'}); "
                "pass --overwrite to replace it or choose another --out"
            )
        logger.info("resuming %s after %d complete episodes", out, writer.n_episodes)
        return writer
    import sim2real

    attrs = {
        "render_args": identity,
        "appearance": identity["appearance"],
        "seed": cfg.seed,
        "sim": identity["physics"],
        "sim2real_version": getattr(sim2real, "__version__", "unknown"),
        "created_by": "sim2real render",
        "provenance": [],
    }
    return ReplayWriter(out, attrs=attrs, overwrite=cfg.overwrite, chunk_frames=cfg.chunk_frames)


def run_render(cfg: RenderConfig) -> Path:
    """Render `cfg.episodes` expert episodes into `cfg.out` (resuming an existing store)."""
    appearance = load_appearance(cfg.appearance)
    writer = _open_writer(cfg, _identity(cfg, appearance))
    out = Path(cfg.out)
    if writer.n_episodes >= cfg.episodes:
        logger.info(
            "%s already holds %d episodes (asked for %d): nothing to do", out, writer.n_episodes, cfg.episodes
        )
        return out
    sim, expert = PushTSim(cfg.physics), ScriptedExpert(cfg.expert, cfg.physics)
    metrics = MetricsLogger(out)
    t0 = time.time()
    bar = tqdm(
        range(writer.n_episodes, cfg.episodes),
        desc="render",
        unit="episode",
        initial=writer.n_episodes,
        total=cfg.episodes,
    )
    for i in bar:
        episode, summary = record_episode(cfg.seed + i, sim, expert, appearance, cfg.image_size)
        writer.append_episode(episode)
        metrics.log(episode=i, **summary)
        bar.set_postfix(coverage=f"{summary['coverage']:.3f}", steps=summary["steps"])
    records = [r for r in metrics.read() if "episode" in r]
    stats = {
        "success_rate": float(np.mean([r["success"] for r in records])) if records else 0.0,
        "mean_final_coverage": float(np.mean([r["coverage"] for r in records])) if records else 0.0,
    }
    writer.update_attrs(expert_stats=stats)
    logger.info(
        "wrote %s: %d episodes, %d frames (%s appearance, %.1f s); expert success %.0f%%, mean final coverage %.3f",
        out,
        writer.n_episodes,
        writer.n_frames,
        appearance.name,
        time.time() - t0,
        100 * stats["success_rate"],
        stats["mean_final_coverage"],
    )
    return out
