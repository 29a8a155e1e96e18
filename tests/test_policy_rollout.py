"""Closed-loop rollouts feed the policy exactly what training windows hold (no train/rollout mismatch)."""

from __future__ import annotations

import numpy as np

from envs.pusht.expert import ScriptedExpert
from envs.pusht.physics import PushTPhysicsConfig, PushTSim
from policies.dataset import window_indices
from policies.rollout import make_envs, rollout
from sim2real.data.render_job import record_episode

SEED, TO, TA, HORIZON, STEPS = 7, 2, 8, 16, 24


def recorded_episode() -> dict[str, np.ndarray]:
    """A short scripted-expert episode as `sim2real render` writes it (frame t: observation, then action t)."""
    from envs.pusht.appearance import load_appearance

    physics = PushTPhysicsConfig(max_steps=STEPS)
    episode, _ = record_episode(
        SEED, PushTSim(physics), ScriptedExpert(physics=physics), load_appearance("sim")
    )
    return episode


def test_rollout_observations_and_executed_actions_match_training_windows():
    ep = recorded_episode()
    n = len(ep["action"])
    assert n == STEPS  # the expert needs longer than this to succeed
    # the training windows whose current observation is frame t = k * Ta (the policy's call times)
    windows = window_indices(np.array([n]), np.array([0]), HORIZON, TO - 1, TA - 1)
    current = windows[:, TO - 1]
    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def replay(pixels, agent_pos):  # executes the recorded actions of the matching window
        t = len(calls) * TA
        calls.append((pixels[0], agent_pos[0], envs[0].unwrapped.sim.state()))
        window = windows[np.flatnonzero(current == t)[0]]
        return ep["action"][window[TO - 1 : TO - 1 + TA]][None]  # (1, Ta, 2), the executed slice

    envs = make_envs(1, "sim", 96)
    rollout(replay, envs, [SEED], n_obs_steps=TO, max_steps=n, desc="replay")

    assert len(calls) == n // TA
    for k, (pixels, agent_pos, state) in enumerate(calls):
        obs = windows[np.flatnonzero(current == k * TA)[0], :TO]  # frames the dataset gives as To history
        np.testing.assert_array_equal(pixels, ep["img"][obs])  # same renderer, frames, order, padding
        np.testing.assert_allclose(agent_pos, ep["state"][obs, :2], atol=1e-3)  # float32 store
        # the recorded actions replayed from the same reset reproduce the recorded states (same control
        # rate and substeps), so action t in the store is the command issued after observing frame t
        np.testing.assert_allclose(state, ep["state"][k * TA], atol=1e-3)
