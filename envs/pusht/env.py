"""Gymnasium Push-T env (`sim2real/PushT-v0`) on our pymunk-7 physics and OpenCV renderer.

    import gymnasium as gym, envs.pusht
    env = gym.make("sim2real/PushT-v0", obs_type="pixels_agent_pos", appearance="tabletop")
    obs, info = env.reset(seed=0)

Observation types, as in gym-pusht: `state` (agent x, y, block x, y, angle), `pixels`
(uint8 H×W×3) and `pixels_agent_pos` ({"pixels", "agent_pos"}). Action: PD target (x, y) in world
pixels. Reward clip(coverage / 0.95, 0, 1); terminated at coverage > 0.95; `gym.make` truncates after
`physics.max_steps` (300) steps.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.pusht.appearance import Appearance, load_appearance
from envs.pusht.physics import PushTPhysicsConfig, PushTSim, sample_initial_state
from envs.pusht.render import render_rgb, render_state

ObsType = Literal["state", "pixels", "pixels_agent_pos"]


class PushTEnv(gym.Env):
    """Push the T-block onto the goal pose.

    obs_type: state | pixels | pixels_agent_pos.
    appearance: preset name or an `Appearance` (how pixel observations and `render()` look).
    observation_size: side of pixel observations (96 like Diffusion Policy).
    render_size: side of `render()` frames.
    physics: physics constants (defaults = Diffusion Policy's).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        obs_type: ObsType = "state",
        render_mode: str | None = "rgb_array",
        appearance: str | Appearance = "sim",
        observation_size: int = 96,
        render_size: int = 96,
        physics: PushTPhysicsConfig | None = None,
    ):
        if obs_type not in ("state", "pixels", "pixels_agent_pos"):
            raise ValueError(f"obs_type must be state, pixels or pixels_agent_pos; got {obs_type=}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or rgb_array; got {render_mode=}")
        self.obs_type, self.render_mode = obs_type, render_mode
        self.appearance = load_appearance(appearance) if isinstance(appearance, str) else appearance
        self.observation_size, self.render_size = observation_size, render_size
        self.physics = physics or PushTPhysicsConfig()
        self.sim = PushTSim(self.physics)
        ws = float(self.physics.world_size)
        self.action_space = spaces.Box(0.0, ws, shape=(2,), dtype=np.float64)
        state_space = spaces.Box(
            low=np.zeros(5), high=np.array([ws, ws, ws, ws, 2 * math.pi]), shape=(5,), dtype=np.float64
        )
        self._state_high = state_space.high
        pixels = spaces.Box(0, 255, shape=(observation_size, observation_size, 3), dtype=np.uint8)
        if obs_type == "state":
            self.observation_space = state_space
        elif obs_type == "pixels":
            self.observation_space = pixels
        else:
            agent_pos = spaces.Box(0.0, ws, shape=(2,), dtype=np.float64)
            self.observation_space = spaces.Dict({"pixels": pixels, "agent_pos": agent_pos})
        self._noise_rng = np.random.default_rng(0)
        self._state = np.zeros(5)

    # ---- gym API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = options or {}
        start = options.get("reset_to_state")
        start = sample_initial_state(self.np_random) if start is None else np.asarray(start, float)
        self._noise_rng = np.random.default_rng(int(self.np_random.integers(2**63)))
        self._state = self.sim.reset(start)
        return self._obs(), self._info()

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(2)
        self.sim.step(action)
        self._state = self.sim.state()
        coverage = self.sim.coverage()
        reward = float(np.clip(coverage / self.physics.success_threshold, 0.0, 1.0))
        terminated = coverage > self.physics.success_threshold
        return self._obs(), reward, terminated, False, self._info(coverage)

    def render(self):
        if self.render_mode is None:
            return None
        rgb, _ = render_state(
            self._state, self.appearance, self.render_size, goal_pose=self.physics.goal_pose
        )
        return rgb

    # ---- helpers ------------------------------------------------------------------------------
    def render_with_labels(self, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rgb, labels) of the current state at `size` (default: the observation size)."""
        return render_state(
            self._state,
            self.appearance,
            size or self.observation_size,
            rng=self._noise_rng,
            goal_pose=self.physics.goal_pose,
        )

    def _obs(self):
        state = np.clip(self._state, 0.0, self._state_high)  # an overshooting agent stays in the box
        if self.obs_type == "state":
            return state
        pixels = render_rgb(
            self._state, self.appearance, self.observation_size, self._noise_rng, self.physics.goal_pose
        )
        if self.obs_type == "pixels":
            return pixels
        return {"pixels": pixels, "agent_pos": state[:2].copy()}

    def _info(self, coverage: float | None = None) -> dict:
        coverage = self.sim.coverage() if coverage is None else coverage
        return {
            "pos_agent": self._state[:2].copy(),
            "vel_agent": np.array(self.sim.agent.velocity),
            "block_pose": self.sim.block_pose(),
            "goal_pose": np.asarray(self.physics.goal_pose, float),
            "n_contacts": self.sim.n_contacts,
            "coverage": coverage,
            "is_success": coverage > self.physics.success_threshold,
        }
