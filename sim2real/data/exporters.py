"""`sim2real export`: one of our zarr stores → another ecosystem's dataset format.

    sim2real export lerobot --from edited.zarr --out datasets/pusht_edited [repo_id=me/pusht_edited]

LeRobot is an optional extra (`pip install sim2real[lerobot]`, in its own environment: it pins torch
and needs torchvision); it is imported only here, and its absence is a one-line error. The export
goes through LeRobot's own writer (`LeRobotDataset.create` → `add_frame` → `save_episode` →
`finalize`), so the files on disk are whatever format that LeRobot version writes (v2.1 or v3.0).

Features, named as in LeRobot's own Push-T datasets (`lerobot/pusht`):

    observation.image              (96, 96, 3) video or image   data/img
    observation.state              (2,) float32                 data/state[:, :2]  agent x, y (sim px)
    action                         (2,) float32                 data/action        PD target x, y (sim px)
    observation.environment_state  (3,) float32                 data/state[:, 2:5] block x, y, angle
                                   (only when the store observed it: not for imported real data)
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sim2real.data.replay import open_replay
from sim2real.errors import Sim2RealError
from sim2real.utils import MetricsLogger, atomic_path, tqdm

logger = logging.getLogger(__name__)

ExportKind = Literal["lerobot"]
PUSHT_TASK = "Push the T-shaped block onto the T-shaped target."


@dataclass
class ExportConfig:
    """Settings of `sim2real export` (configs/export.yaml; override with key=value).

    kind: target format; `lerobot` (a LeRobotDataset folder).
    src: our zarr store (rendered, edited or imported).
    out: dataset folder to write (LeRobot's `root`).
    overwrite: replace an existing output folder.
    repo_id: the dataset's LeRobot id (`user/name`); written into its metadata, nothing is uploaded.
    fps: control rate of the store (Push-T: 10 Hz); LeRobot derives timestamps from it.
    task: the language instruction stored with every frame.
    use_videos: store frames as mp4 (LeRobot's default) instead of PNG images.
    max_episodes: export only the first N episodes (None = all).
    """

    kind: ExportKind = "lerobot"
    src: str = ""
    out: str = ""
    overwrite: bool = False
    repo_id: str = "local/sim2real_pusht"
    fps: int = 10
    task: str = PUSHT_TASK
    use_videos: bool = True
    max_episodes: int | None = None

    def __post_init__(self) -> None:
        if not str(self.src) or not str(self.out):
            raise ValueError("src and out must be given (--from X.zarr --out DIR)")
        if self.fps < 1:
            raise ValueError(f"fps must be >= 1; got {self.fps=}")
        if "/" not in self.repo_id:
            raise ValueError(f"repo_id must look like user/name; got {self.repo_id=}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes must be >= 1 or null; got {self.max_episodes=}")


def run_export(cfg: ExportConfig) -> Path:
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise Sim2RealError(f"{out} exists; pass overwrite=true to replace it")
    return export_lerobot(cfg)


def _lerobot_dataset_class() -> Any:
    """LeRobotDataset from whichever module path this LeRobot version uses; one-line error if absent."""
    for name in ("lerobot.datasets.lerobot_dataset", "lerobot.common.datasets.lerobot_dataset"):
        try:
            return importlib.import_module(name).LeRobotDataset
        except ModuleNotFoundError as e:
            if not (e.name or "").startswith("lerobot"):
                raise Sim2RealError(
                    f"lerobot is installed but cannot import ({e}); check its environment"
                ) from e
    raise Sim2RealError(
        "export lerobot needs the optional `lerobot` package: pip install 'sim2real[lerobot]' "
        "(in a separate environment; it pins its own torch)"
    )


def lerobot_features(store, use_videos: bool) -> tuple[dict, bool]:
    """LeRobot feature spec for a store → (features, whether observation.environment_state is included)."""
    h, w, c = store.data["img"].shape[1:]
    with_env = not store.attrs.get("state_observed")  # imported real data marks its unobserved columns
    features = {
        "observation.image": {
            "dtype": "video" if use_videos else "image",
            "shape": (int(h), int(w), int(c)),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
    }
    if with_env:
        features["observation.environment_state"] = {
            "dtype": "float32",
            "shape": (3,),
            "names": ["block_x", "block_y", "block_angle"],
        }
    return features, with_env


def export_lerobot(cfg: ExportConfig) -> Path:
    """Write `cfg.src` as a LeRobot dataset in `cfg.out` (atomically: a failed export leaves nothing)."""
    dataset_cls = _lerobot_dataset_class()
    store = open_replay(cfg.src, require=("img", "state", "action"))
    if store.n_episodes == 0:
        raise Sim2RealError(f"{cfg.src}: empty store (no episodes)")
    features, with_env = lerobot_features(store, cfg.use_videos)
    n_eps = store.n_episodes if cfg.max_episodes is None else min(cfg.max_episodes, store.n_episodes)
    out, t0 = Path(cfg.out), time.time()
    with atomic_path(out) as tmp:
        dataset = dataset_cls.create(
            repo_id=cfg.repo_id,
            fps=cfg.fps,
            features=features,
            root=tmp,
            robot_type="pusht",
            use_videos=cfg.use_videos,
        )
        for e in tqdm(range(n_eps), desc="export", unit="episode"):
            ep = store.get_episode(e, keys=("img", "state", "action"))
            for t in range(len(ep["img"])):
                dataset.add_frame(_frame(ep, t, cfg.task, with_env))
            dataset.save_episode()
        if hasattr(dataset, "finalize"):  # v3.0 writers buffer parquet footers until finalize()
            dataset.finalize()
        MetricsLogger(tmp).log(
            event="export", kind="lerobot", episodes=n_eps, frames=int(store.episode_ends[n_eps - 1])
        )
    logger.info(
        "wrote %s: LeRobot dataset %s, %d episodes, %d frames (%.1f s)",
        out,
        cfg.repo_id,
        n_eps,
        int(store.episode_ends[n_eps - 1]),
        time.time() - t0,
    )
    return out


def _frame(ep: dict[str, np.ndarray], t: int, task: str, with_env: bool) -> dict:
    state = np.asarray(ep["state"][t], np.float32)
    frame = {
        "observation.image": np.ascontiguousarray(ep["img"][t]),  # (H, W, 3) uint8
        "observation.state": state[:2].copy(),
        "action": np.asarray(ep["action"][t], np.float32),
        "task": task,  # LeRobot ≥ 0.3 takes the task per frame
    }
    if with_env:
        frame["observation.environment_state"] = state[2:5].copy()
    return frame
