"""`sim2real import`: real data in — a folder of frames as a reference set, or Diffusion Policy's real
Push-T recordings as one of our zarr stores.

    sim2real import refs --from "real_frames/*.jpg" --out refs/            # quote globs
    sim2real import diffusion-policy --from data/pusht_real/real_pusht_20230105 --out real.zarr camera=1

Framing (both kinds): an optional `roi` (x, y, w, h in source pixels) is cut first; then `crop=center`
takes the centred square and area-resizes it to `size`×`size` (the same as `load_images`, which
`specialize` and `edit` use), or `crop=none` pads the short side with black to a square instead, so
nothing is cut off. Sim frames are square top-down views of the 512×512 table: pick `roi` so the real
table fills the square the same way.

Diffusion Policy's real layout (`diffusion_policy/real_world/real_env.py`):

    SRC/replay_buffer.zarr   data/timestamp (N,) s, data/action (N, 6|2) commanded TCP pose [m, rotvec],
                             data/robot_eef_pose (N, 6|2) measured TCP pose, data/stage, …;
                             meta/episode_ends (E,)
    SRC/videos/<episode>/<camera>.mp4   one video per camera per episode, recorded from the episode start

Step k of an episode takes the first video frame whose time is at or after
`timestamp[k] - timestamp[episode start]` (Diffusion Policy's `read_video`: the first frame in each
control window, a later one when frames were dropped); up to `max_pad_frames` steps past the end of the
video repeat its last frame, more is a length mismatch. Positions map to the sim's pixels with
`ActionMapConfig` (see its docstring: an assumption to calibrate). Real data has no label maps, so
the store has no `data/mask` (attrs["mask"] says why) and `data/state` holds the agent position in
columns 0–1 with the block pose (columns 2–4) unobserved and set to 0 (attrs["state_observed"]).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from sim2real.data.images import expand_image_paths, read_rgb
from sim2real.data.replay import ReplayWriter
from sim2real.errors import Sim2RealError
from sim2real.utils import MetricsLogger, atomic_path, tqdm, write_json

logger = logging.getLogger(__name__)

ImportKind = Literal["refs", "diffusion-policy"]
CropMode = Literal["center", "none"]


@dataclass
class ActionMapConfig:
    """Robot end-effector xy (metres, robot base frame) → sim pixels (0–512, x right, y down).

        px = offset_px + matrix @ xy            when `matrix` is given (a calibrated affine map), else
        p  = xy[::-1] if swap_xy else xy;  px = (256, 256) + px_per_m · (±1, ±1) ⊙ (p − center_m)

    The defaults are an ASSUMPTION, not a calibration: they centre Diffusion Policy's teleop clip box
    (x 0.25–0.77 m, y −0.45–0.40 m in `demo_real_robot.py`) on the 512-px sim table at 600 px/m, so
    the whole workspace lands inside the sim square, with the robot x axis along sim x. Fit your own
    with `fit_action_map` from a few (robot xy, sim px) pairs, e.g. the T-block's corners seen in the
    camera, and pass the result as `action_map.matrix` / `action_map.offset_px`.

    px_per_m: scale (sim pixels per metre).
    center_m: robot-frame xy (m) that lands on the sim centre (256, 256).
    swap_xy: exchange the robot x and y axes before scaling (camera turned 90°).
    flip_x, flip_y: mirror the sim x / y axis (sim y points down the image).
    matrix: 2×2 px per m; with `offset_px` it replaces all of the above.
    offset_px: sim pixel of robot xy (0, 0); required with `matrix`.
    """

    px_per_m: float = 600.0
    center_m: list[float] = field(default_factory=lambda: [0.51, -0.025])
    swap_xy: bool = False
    flip_x: bool = False
    flip_y: bool = False
    matrix: list[list[float]] | None = None
    offset_px: list[float] | None = None

    def __post_init__(self) -> None:
        if len(self.center_m) != 2:
            raise ValueError(f"action_map.center_m must be [x, y]; got {self.center_m=}")
        if self.px_per_m <= 0:
            raise ValueError(f"action_map.px_per_m must be > 0; got {self.px_per_m=}")
        if (self.matrix is None) != (self.offset_px is None):
            raise ValueError("action_map.matrix and action_map.offset_px must be given together")
        if self.matrix is not None and (
            np.asarray(self.matrix).shape != (2, 2) or np.asarray(self.offset_px).shape != (2,)
        ):
            raise ValueError(f"action_map.matrix must be 2×2 and offset_px [x, y]; got {self.matrix=}")

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(A (2, 2), b (2,)) with px = A @ xy + b."""
        if self.matrix is not None:
            return np.asarray(self.matrix, np.float64), np.asarray(self.offset_px, np.float64)
        perm = np.array([[0.0, 1.0], [1.0, 0.0]]) if self.swap_xy else np.eye(2)
        signs = np.diag([-1.0 if self.flip_x else 1.0, -1.0 if self.flip_y else 1.0])
        a = self.px_per_m * signs @ perm
        return a, np.array([256.0, 256.0]) - a @ np.asarray(self.center_m, np.float64)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        """(N, ≥2) robot poses (only xy is used) → (N, 2) float32 sim pixels."""
        a, b = self.affine()
        return (np.asarray(xy, np.float64)[:, :2] @ a.T + b).astype(np.float32)


def fit_action_map(robot_xy: np.ndarray, sim_px: np.ndarray) -> ActionMapConfig:
    """Least-squares affine map from ≥3 non-collinear (robot xy m, sim px) pairs → an ActionMapConfig."""
    robot_xy, sim_px = np.asarray(robot_xy, np.float64), np.asarray(sim_px, np.float64)
    if robot_xy.shape != sim_px.shape or robot_xy.ndim != 2 or robot_xy.shape[1] != 2 or len(robot_xy) < 3:
        raise Sim2RealError(f"need >= 3 matching (x, y) pairs; got {robot_xy.shape} and {sim_px.shape}")
    design = np.concatenate([robot_xy, np.ones((len(robot_xy), 1))], axis=1)  # (N, 3)
    if np.linalg.matrix_rank(design) < 3:
        raise Sim2RealError(
            "the calibration points are collinear; use 3 or more points spread over the table"
        )
    sol, *_ = np.linalg.lstsq(design, sim_px, rcond=None)  # (3, 2)
    return ActionMapConfig(matrix=sol[:2].T.tolist(), offset_px=sol[2].tolist())


@dataclass
class ImportConfig:
    """Settings of `sim2real import` (configs/import.yaml; override with key=value).

    kind: `refs` (a folder/glob of PNG/JPG frames → a reference set folder) or `diffusion-policy`
        (Diffusion Policy's real Push-T recordings → one zarr store).
    src: the frames (folder, file or quoted glob), or the dataset folder holding replay_buffer.zarr + videos/.
    out: output folder (refs) or zarr store (diffusion-policy).
    overwrite: replace an existing output (otherwise an existing output is an error).
    size: side of the square output frames (the sim's 96).
    crop: `center` = centred square crop (as `load_images`); `none` = pad to a square with black.
    roi: [x, y, w, h] in source pixels cut before the framing (e.g. the table); None = whole frame.
    masks: (refs) write automatic label maps and overlays to check them (`auto_ref_masks`).
    t_color_hint: (refs) RGB of the real T-block for the automatic masks (None = largest saturated blob).
    camera: (diffusion-policy) camera index, i.e. videos/<episode>/<camera>.mp4; None = the only one.
    max_episodes: (diffusion-policy) import only the first N episodes (None = all).
    max_pad_frames: (diffusion-policy) steps past the video's end that may repeat its last frame.
    time_offset_s: (diffusion-policy) added to step times before looking up video frames (camera lag).
    chunk_frames: (diffusion-policy) frames per zarr chunk of the images.
    action_map: (diffusion-policy) robot xy → sim pixels; see ActionMapConfig (calibrate it).
    """

    kind: ImportKind = "refs"
    src: str = ""
    out: str = ""
    overwrite: bool = False
    size: int = 96
    crop: CropMode = "center"
    roi: list[int] | None = None
    masks: bool = True
    t_color_hint: list[int] | None = None
    camera: int | None = None
    max_episodes: int | None = None
    max_pad_frames: int = 10
    time_offset_s: float = 0.0
    chunk_frames: int = 128
    action_map: ActionMapConfig = field(default_factory=ActionMapConfig)

    def __post_init__(self) -> None:
        if not str(self.src) or not str(self.out):
            raise ValueError("src and out must be given (--from SRC --out OUT)")
        if self.size < 8:
            raise ValueError(f"size must be >= 8; got {self.size=}")
        if self.roi is not None and (len(self.roi) != 4 or min(self.roi[2:]) < 1 or min(self.roi[:2]) < 0):
            raise ValueError(f"roi must be [x, y, w, h] with x, y >= 0 and w, h >= 1; got {self.roi=}")
        if self.t_color_hint is not None and len(self.t_color_hint) != 3:
            raise ValueError(f"t_color_hint must be an RGB triple; got {self.t_color_hint=}")
        if self.max_episodes is not None and self.max_episodes < 1:
            raise ValueError(f"max_episodes must be >= 1 or null; got {self.max_episodes=}")
        if self.max_pad_frames < 0 or self.chunk_frames < 1:
            raise ValueError(
                f"need max_pad_frames >= 0, chunk_frames >= 1; got {self.max_pad_frames=}, {self.chunk_frames=}"
            )


def run_import(cfg: ImportConfig) -> Path:
    """Dispatch on `cfg.kind`; returns the written folder or store."""
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite and (not out.is_dir() or any(out.iterdir())):
        raise Sim2RealError(f"{out} exists; pass overwrite=true to replace it")
    if cfg.kind == "refs":
        return import_refs(cfg)
    return import_diffusion_policy(cfg)


# ---- framing ------------------------------------------------------------------------------------


def frame_to_square(
    img: np.ndarray, size: int, crop: CropMode = "center", roi: list[int] | None = None
) -> tuple[np.ndarray, list[int]]:
    """uint8 (H, W, 3) → ((size, size, 3), [x, y, w, h] of the source square that was resized).

    crop=center cuts the centred square (exactly what `load_images` does); crop=none pads the short side
    with black instead (the square then reaches outside the source: negative x/y or w > W). Area
    filter when shrinking, cubic when enlarging.
    """
    x0, y0 = 0, 0
    if roi is not None:
        x, y, w, h = roi
        if x + w > img.shape[1] or y + h > img.shape[0]:
            raise Sim2RealError(f"roi {roi} reaches outside the {img.shape[1]}x{img.shape[0]} frame")
        img, x0, y0 = img[y : y + h, x : x + w], x, y
    h, w = img.shape[:2]
    m = min(h, w) if crop == "center" else max(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    if crop == "center":
        img = img[top : top + m, left : left + m]
    elif h != w:
        img = cv2.copyMakeBorder(img, -top, m - h + top, -left, m - w + left, cv2.BORDER_CONSTANT, value=0)
    if m != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if m > size else cv2.INTER_CUBIC)
    return np.ascontiguousarray(img), [x0 + left, y0 + top, m, m]


# ---- refs ---------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_png(path: Path, rgb_or_labels: np.ndarray) -> None:
    img = rgb_or_labels if rgb_or_labels.ndim == 2 else cv2.cvtColor(rgb_or_labels, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), img):
        raise Sim2RealError(f"could not write {path}")


def import_refs(cfg: ImportConfig) -> Path:
    """Frames → `out/ref_000.png …` (size×size RGB), `masks/ref_000.png` (label maps 0..3),
    `overlays/ref_000.png` (frame | tinted labels, to check the masks) and `refs.json` (provenance)."""
    files = expand_image_paths(str(cfg.src))
    out = Path(cfg.out)
    frames, entries = [], []
    for i, f in enumerate(files):
        src = read_rgb(f)
        img, box = frame_to_square(src, cfg.size, cfg.crop, cfg.roi)
        frames.append(img)
        entries.append(
            {
                "file": f"ref_{i:03d}.png",
                "source": str(f.resolve()),
                "sha256": _sha256(f),
                "source_size": [int(src.shape[1]), int(src.shape[0])],  # (w, h)
                "square": box,  # [x, y, w, h] of the source square resized to size×size
            }
        )
    images = np.stack(frames)
    labels = None
    if cfg.masks:
        from sim2real.feedback.masks import TBLOCK, auto_ref_masks

        hint = tuple(int(v) for v in cfg.t_color_hint) if cfg.t_color_hint else None
        labels = auto_ref_masks(images, t_color_hint=hint)
        for entry, lab in zip(entries, labels, strict=True):
            entry["mask"] = f"masks/{entry['file']}"
            entry["overlay"] = f"overlays/{entry['file']}"
            entry["t_block_fraction"] = round(float((lab == TBLOCK).mean()), 4)
    with atomic_path(out) as tmp:
        _write_ref_folder(tmp, cfg, images, labels, entries)
    empty = [e["file"] for e in entries if e.get("t_block_fraction") == 0.0]
    logger.info(
        "wrote %s: %d refs at %dx%d (crop=%s)%s",
        out,
        len(images),
        cfg.size,
        cfg.size,
        cfg.crop,
        f"; no T-block found in {', '.join(empty)}: check overlays/ or pass --ref-masks" if empty else "",
    )
    return out


def _write_ref_folder(tmp: Path, cfg: ImportConfig, images, labels, entries: list[dict]) -> None:
    from sim2real.feedback.masks import write_mask_overlay

    tmp.mkdir(parents=True)
    if labels is not None:
        (tmp / "masks").mkdir()
        (tmp / "overlays").mkdir()
    for i, entry in enumerate(entries):
        _write_png(tmp / entry["file"], images[i])
        if labels is not None:
            _write_png(tmp / entry["mask"], labels[i])
            write_mask_overlay(tmp / entry["overlay"], images[i], labels[i])
    framing = {"size": cfg.size, "crop": cfg.crop, "roi": cfg.roi, "resize": "area down, cubic up"}
    write_json(
        tmp / "refs.json",
        {
            "created_by": "sim2real import refs",
            "framing": framing,
            "masks": "auto_ref_masks (label maps: 0 background, 1 T-block, 2 agent)"
            if labels is not None
            else None,
            "t_color_hint": cfg.t_color_hint,
            "refs": entries,
        },
    )
    MetricsLogger(tmp).log(event="import", kind="refs", n_refs=len(entries))


# ---- Diffusion Policy real Push-T ---------------------------------------------------------------


def _open_dp_source(src: Path):
    """→ (zarr root of replay_buffer.zarr, episode_ends (E,), videos folder), with one-line errors."""
    import zarr

    if not src.is_dir():
        raise Sim2RealError(f"no such dataset folder: {src}")
    zpath, videos = src / "replay_buffer.zarr", src / "videos"
    if not zpath.exists():
        raise Sim2RealError(f"{src}: missing replay_buffer.zarr (not a Diffusion Policy real dataset)")
    if not videos.is_dir():
        raise Sim2RealError(f"{src}: missing videos/ folder (videos/<episode>/<camera>.mp4)")
    try:
        root = zarr.open_group(str(zpath), mode="r")
        ends = np.asarray(root["meta/episode_ends"][:], np.int64)
        keys = set(root["data"].array_keys())
    except (KeyError, FileNotFoundError) as e:
        raise Sim2RealError(f"{zpath}: missing {e} (need data/ and meta/episode_ends)") from e
    missing = [k for k in ("timestamp", "action", "robot_eef_pose") if k not in keys]
    if missing:
        raise Sim2RealError(f"{zpath}: missing array(s) {', '.join('data/' + k for k in missing)}")
    if len(ends) == 0 or ends[0] < 1 or np.any(np.diff(ends) < 1):
        raise Sim2RealError(f"{zpath}: meta/episode_ends must be non-empty, positive and strictly increasing")
    for k in ("timestamp", "action", "robot_eef_pose"):
        if root["data"][k].shape[0] < ends[-1]:
            raise Sim2RealError(
                f"{zpath}: data/{k} has {root['data'][k].shape[0]} steps but meta/episode_ends ends at {ends[-1]}"
            )
    return root, ends, videos


def _pick_camera(videos: Path, camera: int | None) -> int:
    found = sorted(int(p.stem) for p in (videos / "0").glob("*.mp4") if p.stem.isdigit())
    if camera is not None:
        return camera
    if len(found) == 1:
        return found[0]
    if not found:
        raise Sim2RealError(f"missing video: no videos/0/<camera>.mp4 in {videos}")
    raise Sim2RealError(f"episode 0 has cameras {found}: pick one with camera=N")


def read_video_at(path: Path, times: np.ndarray, size: int, crop: CropMode, roi, max_pad: int) -> np.ndarray:
    """Frames of `path` at `times` (s from the video start) → uint8 (T, size, size, 3).

    Step k takes the first frame whose time >= times[k] (a tolerance of 1e-5 control periods, as
    Diffusion Policy's accumulator); at most `max_pad` trailing steps may repeat the last frame.
    """
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise Sim2RealError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    n_video = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))  # from the container header; <= 0 if unknown
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps
    due = times - 1e-5 * dt
    out = np.zeros((len(times), size, size, 3), np.uint8)
    k, i, prev_t, last = 0, 0, -np.inf, None
    try:
        while k < len(times) and cap.grab():
            t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            t = t if t > prev_t else i / fps  # backends without timestamps: constant frame rate
            prev_t, i = t, i + 1
            if t < due[k] and not 0 < n_video <= i:  # skipped, unless it is the last (padding) frame
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                raise Sim2RealError(f"cannot decode frame {i - 1} of {path}")
            last, _ = frame_to_square(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size, crop, roi)
            while k < len(times) and t >= due[k]:
                out[k], k = last, k + 1
    finally:
        cap.release()
    missing = len(times) - k
    if last is None or missing > max_pad:
        raise Sim2RealError(
            f"{path}: video has {i} frames ({i / fps:.1f} s) but the episode has {len(times)} steps "
            f"({times[-1]:.1f} s): mismatched lengths ({missing} steps without a frame, max_pad_frames={max_pad})"
        )
    out[k:] = last
    return out


def import_diffusion_policy(cfg: ImportConfig) -> Path:
    """Diffusion Policy's real Push-T dataset → our zarr (img, state, action + raw poses and timestamps)."""
    src, out = Path(cfg.src), Path(cfg.out)
    root, ends, videos = _open_dp_source(src)
    camera = _pick_camera(videos, cfg.camera)
    n_eps = len(ends) if cfg.max_episodes is None else min(cfg.max_episodes, len(ends))
    for e in range(n_eps):  # fail before decoding anything
        if not (videos / str(e) / f"{camera}.mp4").is_file():
            raise Sim2RealError(f"missing video videos/{e}/{camera}.mp4 for episode {e} in {src}")
    data = {k: root["data"][k] for k in ("timestamp", "action", "robot_eef_pose")}
    attrs = _dp_attrs(cfg, src, camera)
    t0, oob = time.time(), []
    with atomic_path(out) as tmp:
        writer = ReplayWriter(tmp, attrs=attrs, chunk_frames=cfg.chunk_frames)
        for e in tqdm(range(n_eps), desc="import", unit="episode"):
            start = int(ends[e - 1]) if e > 0 else 0
            episode, frac = _dp_episode(cfg, data, start, int(ends[e]), videos / str(e) / f"{camera}.mp4")
            writer.append_episode(episode)
            oob.append(frac)
        writer.update_attrs(out_of_bounds_fraction=float(np.mean(oob)))
        MetricsLogger(tmp).log(
            event="import",
            kind="diffusion-policy",
            episodes=n_eps,
            frames=writer.n_frames,
            seconds=time.time() - t0,
        )
        n_frames = writer.n_frames
    if np.mean(oob) > 0.01:
        logger.warning(
            "%.1f%% of mapped positions fall outside the 0–512 sim table: calibrate action_map",
            100 * np.mean(oob),
        )
    logger.info(
        "wrote %s: %d episodes, %d frames from camera %d (%.1f s)",
        out,
        n_eps,
        n_frames,
        camera,
        time.time() - t0,
    )
    return out


def _dp_episode(cfg: ImportConfig, data: dict, start: int, end: int, video: Path) -> tuple[dict, float]:
    ts = np.asarray(data["timestamp"][start:end], np.float64)
    action_raw = np.asarray(data["action"][start:end], np.float64)
    pose_raw = np.asarray(data["robot_eef_pose"][start:end], np.float64)
    if (
        ts.ndim != 1
        or action_raw.ndim != 2
        or action_raw.shape[1] < 2
        or pose_raw.ndim != 2
        or pose_raw.shape[1] < 2
    ):
        raise Sim2RealError(
            f"episode at steps {start}:{end}: need timestamp (N,), action and robot_eef_pose (N, >=2); "
            f"got {ts.shape}, {action_raw.shape}, {pose_raw.shape}"
        )
    if np.any(np.diff(ts) <= 0):
        raise Sim2RealError(f"episode at steps {start}:{end}: data/timestamp is not strictly increasing")
    times = ts - ts[0] + cfg.time_offset_s
    img = read_video_at(video, times, cfg.size, cfg.crop, cfg.roi, cfg.max_pad_frames)
    action, agent = cfg.action_map.apply(action_raw), cfg.action_map.apply(pose_raw)
    state = np.zeros((len(ts), 5), np.float32)
    state[:, :2] = agent  # block pose unobserved on the real robot
    both = np.concatenate([action, agent])
    frac = float(np.mean(np.any((both < 0) | (both > 512), axis=1)))
    episode = {
        "img": img,
        "state": state,
        "action": action,
        "timestamp": ts,
        "robot_action": action_raw.astype(np.float32),
        "robot_eef_pose": pose_raw.astype(np.float32),
    }
    return episode, frac


def _dp_attrs(cfg: ImportConfig, src: Path, camera: int) -> dict:
    import sim2real

    a, b = cfg.action_map.affine()
    return {
        "created_by": "sim2real import diffusion-policy",
        "sim2real_version": getattr(sim2real, "__version__", "unknown"),
        "source": {
            "path": str(src.resolve()),
            "layout": "diffusion_policy real (replay_buffer.zarr + videos/)",
        },
        "appearance": {"name": "real"},
        "camera": camera,
        "framing": {"size": cfg.size, "crop": cfg.crop, "roi": cfg.roi, "resize": "area down, cubic up"},
        "action_map": {
            **asdict(cfg.action_map),
            "A": a.tolist(),
            "b": b.tolist(),
            "note": "px = A @ xy_m + b",
        },
        "state_observed": ["agent_x", "agent_y"],
        "state_note": "data/state[:, 2:5] (block x, y, angle) is not observed in real data and is 0",
        "mask": "absent: real recordings have no label maps",
        "raw_arrays": "timestamp (s), robot_action / robot_eef_pose: the source's poses in metres, unmapped",
        "provenance": [],
    }
