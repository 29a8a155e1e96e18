"""Push-T physics on pymunk 7, faithful to Diffusion Policy's `PushTEnv`.

Facts carried over from `diffusion_policy/env/pusht/pusht_env.py` (pymunk 6 there):

* 512×512 world, four static wall segments (5 → 506, radius 2), no gravity, `space.damping = 0`:
  every body loses all its velocity each step, so the block moves only while it is being pushed
  (quasi-static pushing).
* The agent is a KINEMATIC disk (radius 15) driven by a PD law on its velocity,
  `v += (k_p (target − p) + k_v (0 − v)) dt` with k_p 100, k_v 20, 10 substeps of 1/100 s per control
  step (10 Hz control).
* The T is two boxes (scale 30, length 4): a 120×30 bar and a 30×90 stem, mass 1, moment
  `2 · moment_for_poly(1, bar)` (Diffusion Policy computes the stem's moment from the bar's vertices;
  kept on purpose), centre of gravity at the mean of the two boxes' centroids (0, 45).
* Shape friction stays pymunk's default 0: Diffusion Policy sets `body.friction = 1`, an attribute
  pymunk ignores, so contacts there are frictionless too.
* Coverage = area(block ∩ goal) / area(goal) with shapely; reward = clip(coverage / 0.95, 0, 1);
  success when coverage > 0.95; goal pose (256, 256, π/4).

pymunk 7 changes handled here: `Space.add_collision_handler(a, b).post_solve = f` became
`Space.on_collision(a, b, post_solve=f)`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pymunk
import shapely.geometry as sg
from pymunk._chipmunk import lib as _cp_lib

# T-block in its body frame (y down, like the screen): bar then stem, Diffusion Policy's vertex order.
T_SCALE, T_LENGTH = 30.0, 4.0
T_BOXES_LOCAL = (
    np.array(
        [
            (-T_LENGTH * T_SCALE / 2, T_SCALE),
            (T_LENGTH * T_SCALE / 2, T_SCALE),
            (T_LENGTH * T_SCALE / 2, 0.0),
            (-T_LENGTH * T_SCALE / 2, 0.0),
        ]
    ),
    np.array(
        [
            (-T_SCALE / 2, T_SCALE),
            (-T_SCALE / 2, T_LENGTH * T_SCALE),
            (T_SCALE / 2, T_LENGTH * T_SCALE),
            (T_SCALE / 2, T_SCALE),
        ]
    ),
)
# The T's outline as one polygon (8 vertices, counter-clockwise on screen), for coverage and masks.
T_OUTLINE_LOCAL = np.array(
    [(-60, 0), (60, 0), (60, 30), (15, 30), (15, 120), (-15, 120), (-15, 30), (-60, 30)], dtype=np.float64
)
T_AREA = 120.0 * 30.0 + 30.0 * 90.0  # 6300 world px²


@dataclass
class PushTPhysicsConfig:
    """Physics constants of the Push-T task (Diffusion Policy's values; change them only on purpose).

    world_size: side of the square world in pixels.
    sim_hz / control_hz: physics substeps per second / actions per second (10 substeps per action).
    k_p / k_v: PD gains of the agent's velocity controller.
    damping: pymunk space damping (0 = bodies stop when no longer pushed).
    agent_radius: radius of the agent disk.
    wall_lo / wall_hi / wall_radius: the four wall segments' coordinates and thickness.
    goal_pose: (x, y, angle) of the goal T.
    success_threshold: coverage above which an episode is a success.
    max_steps: control steps per episode (the env truncates after this many).
    """

    world_size: int = 512
    sim_hz: int = 100
    control_hz: int = 10
    k_p: float = 100.0
    k_v: float = 20.0
    damping: float = 0.0
    agent_radius: float = 15.0
    wall_lo: float = 5.0
    wall_hi: float = 506.0
    wall_radius: float = 2.0
    goal_pose: list[float] = field(default_factory=lambda: [256.0, 256.0, math.pi / 4])
    success_threshold: float = 0.95
    max_steps: int = 300

    def __post_init__(self) -> None:
        if self.sim_hz % self.control_hz != 0:
            raise ValueError(
                f"sim_hz must be a multiple of control_hz; got {self.sim_hz=}, {self.control_hz=}"
            )
        if len(self.goal_pose) != 3:
            raise ValueError(f"goal_pose must be (x, y, angle); got {self.goal_pose=}")
        if not 0.0 < self.success_threshold <= 1.0:
            raise ValueError(f"success_threshold must be in (0, 1]; got {self.success_threshold=}")

    def to_dict(self) -> dict:
        return {
            k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dataclasses.asdict(self).items()
        }


def tee_world(pose, local: np.ndarray = T_OUTLINE_LOCAL) -> np.ndarray:
    """Body-frame points → world points for a T at pose (x, y, angle) (x, y = body origin)."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    out = np.empty_like(local, dtype=np.float64)
    out[:, 0] = local[:, 0] * c - local[:, 1] * s + pose[0]
    out[:, 1] = local[:, 0] * s + local[:, 1] * c + pose[1]
    return out


@lru_cache(maxsize=8)
def _goal_polygon(goal: tuple[float, float, float]) -> sg.Polygon:
    return sg.Polygon(tee_world(goal))


_REACH = math.hypot(15.0, 120.0)  # farthest T point from the body origin
_last_coverage: list = [None, 0.0]  # one-entry memo: the block is still in most control steps


def coverage_of(block_pose, goal_pose=(256.0, 256.0, math.pi / 4)) -> float:
    """Fraction of the goal T covered by a T at `block_pose` (Diffusion Policy's reward basis)."""
    key = (float(block_pose[0]), float(block_pose[1]), float(block_pose[2]), *map(float, goal_pose))
    if _last_coverage[0] == key:
        return _last_coverage[1]
    if math.hypot(key[0] - key[3], key[1] - key[4]) > 2 * _REACH:
        value = 0.0
    else:
        goal = _goal_polygon(key[3:])
        value = float(goal.intersection(sg.Polygon(tee_world(key[:3]))).area / goal.area)
    _last_coverage[:] = [key, value]
    return value


@lru_cache(maxsize=1)
def block_keypoints_local(n: int = 9, seed: int = 0) -> np.ndarray:
    """9 keypoints in the T's body frame, chosen like Diffusion Policy: farthest-point sampling over
    the T's pixels from a seeded random start, plus a uniform [0, 1) shift. (Same recipe, not the
    same floats: DP samples pygame pixels of its own drawing.)"""
    rng = np.random.default_rng(seed)
    xs, ys = np.meshgrid(np.arange(-60, 60) + 0.5, np.arange(0, 120) + 0.5)
    pts = np.stack([xs.ravel(), ys.ravel()], 1)
    inside = ((np.abs(pts[:, 0]) < 60) & (pts[:, 1] < 30)) | ((np.abs(pts[:, 0]) < 15) & (pts[:, 1] < 120))
    pts = pts[inside]
    chosen = [pts[rng.choice(len(pts))]]
    for _ in range(n - 1):
        d = np.linalg.norm(pts[:, None, :] - np.array(chosen)[None], axis=-1).min(1)
        chosen.append(pts[int(np.argmax(d))])
    return np.array(chosen) + rng.uniform(0, 1, size=(n, 2))


class PushTSim:
    """The pymunk world of Push-T. `reset(state)`, then `step(action)` once per control step.

    state = (agent x, agent y, block x, block y, block angle); action = PD target (x, y) in world px.
    """

    def __init__(self, config: PushTPhysicsConfig | None = None):
        self.config = config or PushTPhysicsConfig()
        self.n_contacts = 0  # contact points per substep in the last control step (DP's `n_contacts`)
        self._contact_points = 0
        self._build()

    # ---- construction -------------------------------------------------------------------------
    def _build(self) -> None:
        cfg = self.config
        space = pymunk.Space()
        space.gravity = 0, 0
        space.damping = cfg.damping
        lo, hi, r = cfg.wall_lo, cfg.wall_hi, cfg.wall_radius
        for a, b in (((lo, hi), (lo, lo)), ((lo, lo), (hi, lo)), ((hi, lo), (hi, hi)), ((lo, hi), (hi, hi))):
            space.add(pymunk.Segment(space.static_body, a, b, r))

        self.agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.agent.position = (256, 400)
        space.add(self.agent, pymunk.Circle(self.agent, cfg.agent_radius))

        bar, stem = (list(map(tuple, v)) for v in T_BOXES_LOCAL)
        inertia = 2 * pymunk.moment_for_poly(1.0, vertices=bar)  # DP uses the bar's vertices twice
        self.block = pymunk.Body(1.0, inertia)
        shapes = [pymunk.Poly(self.block, bar), pymunk.Poly(self.block, stem)]
        self.block.center_of_gravity = (shapes[0].center_of_gravity + shapes[1].center_of_gravity) / 2
        self.block.position = (256, 300)
        space.add(self.block, *shapes)

        space.on_collision(0, 0, post_solve=self._on_post_solve)
        self.space = space

    def _on_post_solve(self, arbiter: pymunk.Arbiter, space: pymunk.Space, data) -> None:
        # = len(arbiter.contact_point_set.points), without building the Python point objects
        self._contact_points += _cp_lib.cpArbiterGetCount(arbiter._arbiter)

    # ---- state --------------------------------------------------------------------------------
    def reset(self, state, rebuild: bool = True) -> np.ndarray:
        """Place agent and block (angle before position, like DP's non-legacy `_set_state`) and run
        one substep so the placement takes effect. The space is rebuilt first, as DP's `_setup` does,
        so no cached contact from an earlier episode changes the result (determinism)."""
        state = [float(v) for v in state]
        if rebuild:  # ~0.6 ms; the expert's scratch sim skips it between candidate pushes
            self._build()
        self.agent.position = state[:2]
        self.agent.velocity = (0, 0)
        self.block.velocity = (0, 0)
        self.block.angular_velocity = 0
        self.block.angle = state[4]
        self.block.position = state[2:4]
        self.space.reindex_shapes_for_body(self.block)
        self.space.step(1.0 / self.config.sim_hz)
        self.n_contacts = 0
        return self.state()

    def state(self) -> np.ndarray:
        """(agent x, y, block x, y, block angle mod 2π) as float64, like DP's observation."""
        a, b = self.agent.position, self.block.position
        return np.array([a.x, a.y, b.x, b.y, self.block.angle % (2 * math.pi)])

    def block_pose(self) -> np.ndarray:
        b = self.block.position
        return np.array([b.x, b.y, self.block.angle])

    # ---- dynamics -----------------------------------------------------------------------------
    def step(self, action) -> None:
        """One control step: 10 substeps of PD velocity control + physics.

        Hot loop: calls Chipmunk directly (same arithmetic as pymunk's wrappers, which build Vec2d
        objects and do add/remove bookkeeping we never need here); trajectories are bit-identical.
        """
        cfg = self.config
        dt = 1.0 / cfg.sim_hz
        n = cfg.sim_hz // cfg.control_hz
        tx, ty = float(action[0]), float(action[1])
        kp, kv = cfg.k_p, cfg.k_v
        self._contact_points = 0
        body, space = self.agent._body, self.space._space
        p, v = _cp_lib.cpBodyGetPosition(body), _cp_lib.cpBodyGetVelocity(body)
        px, py, vx, vy = p.x, p.y, v.x, v.y
        self.space._locked = True
        try:
            for _ in range(n):
                vx += (kp * (tx - px) - kv * vx) * dt
                vy += (kp * (ty - py) - kv * vy) * dt
                _cp_lib.cpBodySetVelocity(body, (vx, vy))
                _cp_lib.cpSpaceStep(space, dt)
                p = _cp_lib.cpBodyGetPosition(body)
                px, py = p.x, p.y
        finally:
            self.space._locked = False
        self.n_contacts = int(math.ceil(self._contact_points / n))

    # ---- task quantities ----------------------------------------------------------------------
    def coverage(self) -> float:
        return coverage_of(self.block_pose(), self.config.goal_pose)

    def reward(self) -> float:
        return float(np.clip(self.coverage() / self.config.success_threshold, 0.0, 1.0))

    def keypoints(self) -> np.ndarray:
        """(9, 2) float32 world positions of the block's keypoints."""
        return tee_world(self.block_pose(), block_keypoints_local()).astype(np.float32)


def sample_initial_state(rng: np.random.Generator) -> np.ndarray:
    """Random start as Diffusion Policy's reset draws it (agent 50–450, block 100–400,
    angle ~ N(0,1)·2π − π), from a NumPy Generator."""
    return np.array(
        [
            rng.integers(50, 450),
            rng.integers(50, 450),
            rng.integers(100, 400),
            rng.integers(100, 400),
            rng.standard_normal() * 2 * np.pi - np.pi,
        ],
        dtype=np.float64,
    )
