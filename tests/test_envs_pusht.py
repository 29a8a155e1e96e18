"""Push-T physics, renderer, appearances, gymnasium env and scripted expert."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import shapely
import shapely.geometry as sg
from gymnasium.utils.env_checker import check_env

import envs.pusht  # noqa: F401  (registers the env id)
from envs.pusht.appearance import (
    Appearance,
    color_name,
    delta_e,
    describe_appearance,
    in_held_out_band,
    load_appearance,
    sample_appearance,
)
from envs.pusht.expert import ScriptedExpert, corner_error
from envs.pusht.physics import (
    T_AREA,
    PushTPhysicsConfig,
    PushTSim,
    coverage_of,
    sample_initial_state,
    tee_world,
)
from envs.pusht.render import render_state
from sim2real.errors import Sim2RealError

GOAL = (256.0, 256.0, math.pi / 4)


# ---- physics ---------------------------------------------------------------------------------------
def test_goal_pose_gives_full_coverage_and_t_area():
    assert coverage_of(GOAL) == pytest.approx(1.0)
    assert sg.Polygon(tee_world(GOAL)).area == pytest.approx(T_AREA)
    sim = PushTSim()
    sim.reset([60, 60, *GOAL])
    assert sim.coverage() == pytest.approx(1.0, abs=1e-6)
    assert sim.reward() == 1.0
    assert coverage_of((256, 256, math.pi / 4 + 0.3)) < 0.95


def test_block_moves_only_while_pushed():
    sim = PushTSim()
    sim.reset([256, 200, 256, 300, 0.0])  # agent above the bar's top edge (y = 300)
    before = sim.block_pose()
    sim.step([256, 200])  # hold still: nothing moves
    np.testing.assert_allclose(sim.block_pose(), before, atol=1e-6)
    for _ in range(5):
        sim.step([256, 330])  # push down into the bar
    after = sim.block_pose()
    assert after[1] - before[1] > 10, after - before  # pushed along +y
    assert abs(after[0] - before[0]) < 1.0 and abs(after[2]) < 0.05  # centred push: no turn
    assert sim.n_contacts >= 1
    sim.step([256, 100])  # the agent leaves (its PD lag still touches the block briefly)
    rest = sim.block_pose()
    sim.step([256, 100])  # out of contact: damping 0 means the block does not coast
    np.testing.assert_allclose(sim.block_pose(), rest, atol=1e-6)


def test_off_centre_push_turns_the_block():
    sim = PushTSim()
    sim.reset([300, 270, 256, 300, 0.0])  # above the bar's right half
    for _ in range(5):
        sim.step([300, 340])
    assert abs(sim.block_pose()[2]) > 0.05


def test_physics_is_deterministic():
    runs = []
    for _ in range(2):
        sim = PushTSim()
        sim.reset(sample_initial_state(np.random.default_rng(3)))
        rng = np.random.default_rng(1)
        for _ in range(30):
            sim.step(rng.uniform(0, 512, 2))
        runs.append(sim.state())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_physics_config_checks_fields():
    with pytest.raises(ValueError, match="sim_hz"):
        PushTPhysicsConfig(sim_hz=100, control_hz=7)


# ---- renderer ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sim", "tabletop"])
@pytest.mark.parametrize("size", [96, 64])
def test_render_shapes_and_labels(name, size):
    state = np.array([150.0, 420.0, 260.0, 280.0, 0.7])
    rgb, labels = render_state(state, load_appearance(name), size, rng=np.random.default_rng(0))
    assert rgb.shape == (size, size, 3) and rgb.dtype == np.uint8
    assert labels.shape == (size, size) and labels.dtype == np.uint8
    present = set(np.unique(labels))
    assert {0, 1, 2} <= present
    assert (3 in present) == load_appearance(name).show_goal


def test_labels_match_t_polygon_and_agent_disk():
    rng = np.random.default_rng(0)
    c = (np.arange(96) + 0.5) * 512 / 96
    xs, ys = np.meshgrid(c, c)
    for _ in range(20):
        state = np.r_[rng.uniform(20, 490, 2), rng.uniform(80, 430, 2), rng.uniform(0, 2 * np.pi)]
        _, labels = render_state(state, "sim", 96)
        t = shapely.contains_xy(sg.Polygon(tee_world(state[2:])), xs, ys)
        disk = (xs - state[0]) ** 2 + (ys - state[1]) ** 2 < 15**2
        np.testing.assert_array_equal(labels == 2, disk)
        agree = ((labels == 1) == (t & ~disk)).mean()
        assert agree > 0.999  # only pixel centres exactly on an edge may differ


def test_rgb_agrees_with_labels_in_sim_look():
    state = np.array([100.0, 100.0, 300.0, 330.0, 2.0])
    a = load_appearance("sim")
    rgb, labels = render_state(state, a, 96)
    inner = rgb[labels == 2].astype(int)
    colours = np.array([a.agent_color, a.agent_highlight_color])
    assert (np.abs(inner[:, None, :] - colours[None]).sum(-1).min(1) < 60).mean() > 0.9
    table = rgb[labels == 0].astype(int)
    assert (np.abs(table - 255).sum(-1) < 30).mean() > 0.85  # white table; the rest: walls, AA edges


def test_noise_is_seeded():
    state = np.array([100.0, 100.0, 300.0, 330.0, 2.0])
    a = load_appearance("tabletop")
    one = render_state(state, a, rng=np.random.default_rng(5))[0]
    two = render_state(state, a, rng=np.random.default_rng(5))[0]
    other = render_state(state, a, rng=np.random.default_rng(6))[0]
    np.testing.assert_array_equal(one, two)
    assert np.any(one != other)
    np.testing.assert_array_equal(render_state(state, a)[0], render_state(state, a)[0])  # no rng: f(state)


# ---- appearances -----------------------------------------------------------------------------------
def test_presets_and_unknown_name():
    sim, tabletop = load_appearance("sim"), load_appearance("tabletop")
    assert sim.t_outline_color == [119, 136, 153] and sim.agent_color == [65, 105, 225]
    assert tabletop.table_texture == "wood" and in_held_out_band(tabletop)
    assert not in_held_out_band(sim)
    assert describe_appearance(tabletop)["t"].startswith("orange")
    assert "wood" in describe_appearance(tabletop)["table"]
    with pytest.raises(Sim2RealError, match="unknown appearance 'nope'"):
        load_appearance("nope")
    with pytest.raises(ValueError, match="table_texture"):
        Appearance(table_texture="glass")


def test_sampler_is_reproducible_broad_and_avoids_held_out_band():
    draws = [sample_appearance(np.random.default_rng(7)) for _ in range(2)]
    assert draws[0] == draws[1]
    rng = np.random.default_rng(0)
    samples = [sample_appearance(rng) for _ in range(300)]
    assert not any(in_held_out_band(a) for a in samples)
    assert {a.table_texture for a in samples} == {"flat", "wood", "marble", "fabric", "noise"}
    assert len({describe_appearance(a)["t_color"] for a in samples}) >= 8
    ref = load_appearance("tabletop")
    assert min(delta_e(a.t_color, ref.t_color) for a in samples) >= 25.0
    # without the band, the same family does reach tabletop-like looks
    free = [sample_appearance(rng, held_out=False) for _ in range(300)]
    assert any(in_held_out_band(a) for a in free)


def test_sampler_kinds_keep_the_other_part():
    base = load_appearance("sim")
    bg = sample_appearance(np.random.default_rng(1), kinds=("background",))
    assert bg.t_color == base.t_color
    fg = sample_appearance(np.random.default_rng(1), kinds=("foreground",))
    assert fg.table_color == base.table_color and fg.table_texture == base.table_texture


def test_describe_words():
    a = Appearance(table_texture="flat", table_color=[170, 200, 240], t_color=[20, 90, 30])
    d = describe_appearance(a)
    assert d["table"] == "light blue" and d["t"] == "dark green"
    dark_wood = Appearance(table_texture="wood", table_color=[70, 45, 25], table_color2=[50, 30, 15])
    assert describe_appearance(dark_wood)["table"] == "dark wood"
    marble = Appearance(
        table_texture="marble", table_color=[240, 240, 240], table_color2=[200, 200, 200], table_contrast=0.3
    )
    assert describe_appearance(marble)["table"] == "white marble"


def test_fine_words_name_lightness_saturation_and_a_woods_hue():
    a = Appearance(
        table_texture="flat", table_color=[170, 200, 240], table_color2=[170, 200, 240], t_color=[240, 20, 20]
    )
    assert describe_appearance(a)["table"] == "light blue" and describe_appearance(a)["t"] == "red"
    fine = describe_appearance(a, "fine")  # HLS lightness 0.80 → "very light"; saturation 0.88 → "bright"
    assert fine["table"] == "very light blue" and fine["t"] == "bright red"
    assert color_name([150, 90, 90], "fine") == "muted red"  # saturation 0.25
    assert color_name([10, 10, 60], "fine") == "very dark blue"  # lightness 0.14
    assert color_name([40, 70, 150]) == "blue" and color_name([40, 70, 150], "fine") == "dark blue"
    assert color_name([250, 240, 245], "fine") == color_name([250, 240, 245]) == "white"  # greys: same words
    dark_wood = Appearance(table_texture="wood", table_color=[70, 45, 25], table_color2=[50, 30, 15])
    assert describe_appearance(dark_wood)["table"] == "dark wood"
    assert describe_appearance(dark_wood, "fine")["table"] == "very dark brown wood"  # a wood's hue is said
    with pytest.raises(ValueError, match="detail"):
        color_name([1, 2, 3], "exact")
    # the fine words tell apart colours the coarse words lump together
    rng = np.random.default_rng(0)
    samples = [sample_appearance(rng) for _ in range(300)]
    coarse = {describe_appearance(a)["t_color"] for a in samples}
    fine = {describe_appearance(a, "fine")["t_color"] for a in samples}
    assert len(fine) > 2 * len(coarse)


# ---- gymnasium env ---------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.*symmetric and normalized")  # world-pixel actions, like DP
@pytest.mark.parametrize("obs_type", ["state", "pixels", "pixels_agent_pos"])
def test_check_env(obs_type):
    env = gym.make("sim2real/PushT-v0", obs_type=obs_type, appearance="tabletop")
    check_env(env.unwrapped, skip_render_check=False)


def test_env_reset_is_seeded_and_reports_success():
    env = gym.make("sim2real/PushT-v0", obs_type="pixels_agent_pos")
    a, _ = env.reset(seed=4)
    b, _ = env.reset(seed=4)
    np.testing.assert_array_equal(a["pixels"], b["pixels"])
    obs, info = env.reset(options={"reset_to_state": [60, 60, *GOAL]})
    obs, reward, terminated, truncated, info = env.step([60, 60])
    assert reward == 1.0 and terminated and info["is_success"]
    assert env.spec.max_episode_steps == 300


# ---- expert ----------------------------------------------------------------------------------------
def _rollout(seed: int, max_steps: int = 300) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    sim, expert = PushTSim(), ScriptedExpert()
    state = sim.reset(sample_initial_state(np.random.default_rng(seed)))
    expert.reset(seed)
    actions, agents = [], []
    for _ in range(max_steps):
        action = expert.act(state)
        actions.append(action)
        agents.append(state[:2])
        sim.step(action)
        state = sim.state()
        if sim.coverage() > 0.95:
            break
    return sim.coverage(), actions, agents


def test_expert_solves_a_seeded_episode_without_teleporting():
    coverage, actions, agents = _rollout(0)
    assert coverage > 0.95
    targets = np.array(actions)
    assert np.all((targets >= 0) & (targets <= 512))
    jumps = np.linalg.norm(np.diff(targets, axis=0), axis=1)
    assert jumps.max() <= 25.0 + 1e-6  # bounded target moves, like a mouse
    assert np.linalg.norm(targets[0] - agents[0]) <= 25.0 + 1e-6


def test_corner_error_zero_at_goal():
    assert corner_error(GOAL, GOAL) == 0.0
    assert corner_error((266, 256, math.pi / 4), GOAL) == pytest.approx(10.0)


@pytest.mark.slow
def test_expert_success_rate_over_50_seeds():
    results = [_rollout(seed)[0] for seed in range(50)]
    assert np.mean([c > 0.95 for c in results]) >= 0.6
