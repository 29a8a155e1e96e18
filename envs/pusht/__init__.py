"""Push-T: physics (pymunk 7), renderer with appearances and label masks, gymnasium env, scripted expert.

import gymnasium as gym, envs.pusht
env = gym.make("sim2real/PushT-v0", obs_type="pixels_agent_pos")
"""

from gymnasium.envs.registration import register, registry

from envs.pusht.appearance import (
    Appearance,
    describe_appearance,
    in_held_out_band,
    load_appearance,
    sample_appearance,
)
from envs.pusht.physics import PushTPhysicsConfig, PushTSim
from envs.pusht.render import render_state

ENV_ID = "sim2real/PushT-v0"
if ENV_ID not in registry:
    register(id=ENV_ID, entry_point="envs.pusht.env:PushTEnv", max_episode_steps=300)

__all__ = [
    "ENV_ID",
    "Appearance",
    "PushTPhysicsConfig",
    "PushTSim",
    "describe_appearance",
    "in_held_out_band",
    "load_appearance",
    "render_state",
    "sample_appearance",
]
