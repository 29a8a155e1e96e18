"""`sim2real import` / `sim2real export` through the real CLI: refs folders, Diffusion Policy's real
Push-T layout (a tiny synthetic store with mp4s written here) and the LeRobot export."""

from __future__ import annotations

import json
import sys

import cv2
import numpy as np
import pytest
from cli_helpers import run_cli as _cli

from sim2real.data import open_replay
from sim2real.data.images import load_images
from sim2real.data.importers import ActionMapConfig, fit_action_map, frame_to_square

# ---- helpers ------------------------------------------------------------------------------------


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # one line, no traceback
    return err


CELL, GRID = 24, 4  # a 96×96 code area: 16 cells of 24 px, one bit each


def _code_frame(index: int, w: int = 128, h: int = 96) -> np.ndarray:
    """BGR frame whose centre 96×96 square spells `index` in 16 black/white cells; red side bars."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 2] = 200  # red everywhere outside the code square (BGR)
    x0, y0 = (w - 96) // 2, (h - 96) // 2
    code = np.zeros((96, 96, 3), np.uint8)
    for b in range(GRID * GRID):
        if index >> b & 1:
            r, c = divmod(b, GRID)
            code[r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = 255
    img[y0 : y0 + 96, x0 : x0 + 96] = code
    return img


def _decode(img: np.ndarray) -> int:
    """Inverse of `_code_frame` on a 96×96 RGB import (cell centres, threshold 128)."""
    value = 0
    for b in range(GRID * GRID):
        r, c = divmod(b, GRID)
        patch = img[r * CELL + 6 : (r + 1) * CELL - 6, c * CELL + 6 : (c + 1) * CELL - 6]
        value |= int(patch.mean() > 128) << b
    return value


def _write_mp4(path, frames, fps=30.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()


def make_dp_dataset(root, lengths=(8, 6), cameras=(0, 1), hz=10.0, fps=30.0, video_frames=None, dims=6):
    """Diffusion Policy's real layout: replay_buffer.zarr (zarr 2) + videos/<episode>/<camera>.mp4.

    Episode e's video frame j spells 1000·e + j (camera c adds 100·c); steps run at `hz` and start at
    a wall-clock timestamp, as RealEnv records them. Positions: x = 0.3 + 0.01·k, y = −0.1 − 0.01·k.
    """
    import zarr

    n = int(sum(lengths))
    group = zarr.open_group(str(root / "replay_buffer.zarr"), mode="w", zarr_format=2)
    k = np.concatenate([np.arange(m) for m in lengths]).astype(np.float64)
    starts = np.repeat(1.7e9 + 100.0 * np.arange(len(lengths)), lengths)
    pose = np.zeros((n, dims))
    pose[:, 0], pose[:, 1] = 0.3 + 0.01 * k, -0.1 - 0.01 * k
    action = pose.copy()
    action[:, :2] += 0.005  # commanded targets lead the measured pose
    data = group.require_group("data")
    data.create_array("timestamp", data=starts + k / hz)
    data.create_array("action", data=action)
    data.create_array("robot_eef_pose", data=pose)
    data.create_array("stage", data=np.zeros(n, np.int64))
    group.require_group("meta").create_array("episode_ends", data=np.cumsum(lengths).astype(np.int64))
    for e, m in enumerate(lengths):
        count = video_frames[e] if video_frames else int(round(m / hz * fps))
        for c in cameras:
            frames = [_code_frame(1000 * e + 100 * c + j) for j in range(count)]
            _write_mp4(root / "videos" / str(e) / f"{c}.mp4", frames, fps)
    return root


# ---- framing and the action map -----------------------------------------------------------------


def test_center_crop_matches_load_images_and_pad_keeps_everything(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out, box = frame_to_square(img, 96, "center")
    np.testing.assert_array_equal(out, load_images([tmp_path / "a.png"], size=96)[0])
    assert box == [40, 0, 120, 120]
    padded, box = frame_to_square(img, 100, "none")
    assert box == [0, -40, 200, 200]
    assert padded[:19].max() == 0 and padded[-19:].max() == 0 and padded[25:75].mean() > 60  # black bars
    roi_out, box = frame_to_square(img, 32, "center", roi=[10, 20, 64, 64])
    assert box == [10, 20, 64, 64]
    np.testing.assert_array_equal(
        roi_out, cv2.resize(img[20:84, 10:74], (32, 32), interpolation=cv2.INTER_AREA)
    )


def test_action_map_defaults_flips_and_fit():
    default = ActionMapConfig()
    box = np.array([[0.25, -0.45], [0.77, 0.40], [0.51, -0.025]])  # DP's teleop clip box and its centre
    px = default.apply(box)
    np.testing.assert_allclose(px[2], [256, 256], atol=1e-3)
    assert px.min() >= 0 and px.max() <= 512
    flipped = ActionMapConfig(swap_xy=True, flip_y=True, px_per_m=100.0, center_m=[0.0, 0.0])
    np.testing.assert_allclose(flipped.apply(np.array([[0.1, 0.2]])), [[256 + 20, 256 - 10]], atol=1e-4)
    # a rotated + scaled map is recovered from 4 point pairs
    theta = 0.3
    a = 500 * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    xy = np.array([[0.2, -0.3], [0.7, -0.2], [0.6, 0.3], [0.3, 0.25]])
    fitted = fit_action_map(xy, xy @ a.T + [10.0, 20.0])
    np.testing.assert_allclose(fitted.apply(xy), xy @ a.T + [10.0, 20.0], atol=1e-3)
    with pytest.raises(Exception, match="collinear"):
        fit_action_map(np.array([[0, 0], [1, 1], [2, 2]]), np.array([[0, 0], [1, 1], [2, 2]]))


# ---- import refs --------------------------------------------------------------------------------


def _tabletop_frames(tmp_path, n=3):
    """Photos of a wooden-ish table with an orange T (non-square, PNG and JPG)."""
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(n):
        img = np.full((150, 200, 3), (90, 140, 180), np.uint8)  # BGR tan
        x, y = 60 + 10 * i, 40
        cv2.rectangle(img, (x, y), (x + 80, y + 20), (40, 120, 230), -1)  # T bar
        cv2.rectangle(img, (x + 30, y + 20), (x + 50, y + 80), (40, 120, 230), -1)  # T stem
        cv2.imwrite(str(folder / f"frame_{i}.{'png' if i % 2 else 'jpg'}"), img)
    return folder


def test_import_refs_writes_refs_masks_overlays_and_provenance(monkeypatch, tmp_path, capsys):
    src, out = _tabletop_frames(tmp_path), tmp_path / "refs"
    assert _cli(monkeypatch, "import", "refs", "--from", src, "--out", out, "t_color_hint=[230,120,40]") == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "masks",
        "metrics.jsonl",
        "overlays",
        "ref_000.png",
        "ref_001.png",
        "ref_002.png",
        "refs.json",
    ]
    refs = load_images([out], size=96)  # the folder is directly usable as --refs
    assert refs.shape == (3, 96, 96, 3)
    np.testing.assert_array_equal(refs, load_images([src], size=96))  # same framing as load_images
    meta = json.loads((out / "refs.json").read_text())
    first = meta["refs"][0]
    assert first["source_size"] == [200, 150] and first["square"] == [25, 0, 150, 150]
    assert len(first["sha256"]) == 64 and first["source"].endswith("frame_0.jpg")
    assert meta["framing"]["crop"] == "center"
    masks = np.stack([cv2.imread(str(out / r["mask"]), cv2.IMREAD_UNCHANGED) for r in meta["refs"]])
    assert masks.shape == (3, 96, 96) and masks.max() <= 3
    assert all(0.05 < r["t_block_fraction"] < 0.4 for r in meta["refs"])  # the T was found
    assert cv2.imread(str(out / "overlays" / "ref_000.png")).shape[1] > 2 * 96 * 4 - 1
    # an existing output needs overwrite=true
    assert _cli(monkeypatch, "import", "refs", "--from", src, "--out", out) == 2
    assert "exists; pass overwrite=true" in _error(capsys)
    assert (
        _cli(
            monkeypatch,
            "import",
            "refs",
            "--from",
            f"{src}/*.png",
            "--out",
            out,
            "overwrite=true",
            "crop=none",
            "masks=false",
        )
        == 0
    )
    meta = json.loads((out / "refs.json").read_text())
    assert len(meta["refs"]) == 1 and meta["refs"][0]["square"] == [0, -25, 200, 200]
    assert not (out / "masks").exists()


def test_import_errors_are_one_line(monkeypatch, tmp_path, capsys):
    assert _cli(monkeypatch, "import", "photos", "--from", tmp_path, "--out", tmp_path / "o") == 2
    assert "kind must be one of refs, diffusion-policy" in _error(capsys)
    assert _cli(monkeypatch, "import", "refs", "--from", tmp_path / "nothing", "--out", tmp_path / "o") == 2
    assert "no such image file or folder" in _error(capsys)
    assert (
        _cli(monkeypatch, "import", "diffusion-policy", "--from", tmp_path, "--out", tmp_path / "o.zarr") == 2
    )
    assert "missing replay_buffer.zarr" in _error(capsys)
    assert not (tmp_path / "o.zarr").exists()


# ---- import diffusion-policy --------------------------------------------------------------------


def test_import_diffusion_policy_aligns_frames_and_maps_actions(monkeypatch, tmp_path, capsys):
    src = make_dp_dataset(tmp_path / "dp", lengths=(8, 6))
    out = tmp_path / "real.zarr"
    # two cameras: the importer will not guess
    assert _cli(monkeypatch, "import", "diffusion-policy", "--from", src, "--out", out) == 2
    assert "cameras [0, 1]: pick one with camera=N" in _error(capsys)
    assert _cli(monkeypatch, "import", "diffusion-policy", "--from", src, "--out", out, "camera=1") == 0
    store = open_replay(out)  # validates our layout
    assert store.n_episodes == 2 and list(store.episode_ends) == [8, 14]
    assert store.data["img"].shape == (14, 96, 96, 3) and "mask" not in store.data
    img = store.data["img"][:]
    # step k at 10 Hz ↔ video frame 3k at 30 fps; camera 1 adds 100; episode 1 adds 1000
    want = [100 + 3 * k for k in range(8)] + [1100 + 3 * k for k in range(6)]
    assert [_decode(f) for f in img] == want
    assert np.abs(img[..., 0].astype(int) - img[..., 1]).max() < 60  # grey only: the red side bars were cut
    # positions: x = 0.3 + 0.01 k, y = -0.1 - 0.01 k through the default map (600 px/m around (0.51, -0.025))
    k = np.array(list(range(8)) + list(range(6)), np.float64)
    agent = np.stack([256 + 600 * (0.3 + 0.01 * k - 0.51), 256 + 600 * (-0.1 - 0.01 * k + 0.025)], axis=1)
    state = store.data["state"][:]
    np.testing.assert_allclose(state[:, :2], agent, atol=1e-3)
    assert np.all(state[:, 2:] == 0)
    np.testing.assert_allclose(store.data["action"][:], agent + 600 * 0.005, atol=1e-3)
    assert store.data["robot_eef_pose"].shape == (14, 6) and store.data["timestamp"].dtype == np.float64
    attrs = store.attrs
    assert attrs["camera"] == 1 and attrs["mask"].startswith("absent")
    assert attrs["state_observed"] == ["agent_x", "agent_y"]
    np.testing.assert_allclose(attrs["action_map"]["A"], [[600, 0], [0, 600]])
    # the policy's loader accepts it
    from policies.dataset import load_pusht

    assert load_pusht(out).state.shape == (14, 5)


def test_import_diffusion_policy_length_and_video_errors(monkeypatch, tmp_path, capsys):
    # episode 1's video is 0.3 s long but the episode lasts 0.6 s (6 steps): 3 steps have no frame
    short = make_dp_dataset(tmp_path / "short", lengths=(4, 6), cameras=(0,), video_frames=[12, 9])
    args = ("import", "diffusion-policy", "--from", short, "--out", tmp_path / "a.zarr")
    assert _cli(monkeypatch, *args, "max_pad_frames=2") == 2
    assert "mismatched lengths (3 steps without a frame, max_pad_frames=2)" in _error(capsys)
    assert not (tmp_path / "a.zarr").exists()  # nothing half-written
    assert _cli(monkeypatch, *args, "max_pad_frames=3") == 0  # as Diffusion Policy: repeat the last frame
    img = open_replay(tmp_path / "a.zarr").get_episode(1)["img"]
    assert [_decode(f) for f in img] == [1000, 1003, 1006, 1008, 1008, 1008]
    # a missing video is named before any decoding
    (short / "videos" / "1" / "0.mp4").unlink()
    assert _cli(monkeypatch, "import", "diffusion-policy", "--from", short, "--out", tmp_path / "b.zarr") == 2
    assert "missing video videos/1/0.mp4 for episode 1" in _error(capsys)
    # max_episodes=1 imports only the complete first episode
    assert (
        _cli(
            monkeypatch,
            "import",
            "diffusion-policy",
            "--from",
            short,
            "--out",
            tmp_path / "b.zarr",
            "max_episodes=1",
        )
        == 0
    )
    assert open_replay(tmp_path / "b.zarr").n_frames == 4


def test_import_diffusion_policy_rejects_inconsistent_stores(monkeypatch, tmp_path, capsys):
    import zarr

    src = make_dp_dataset(tmp_path / "dp", lengths=(4,), cameras=(0,), dims=2)
    group = zarr.open_group(str(src / "replay_buffer.zarr"), mode="r+")
    group["meta/episode_ends"][0] = 9  # more steps than the arrays hold
    assert _cli(monkeypatch, "import", "diffusion-policy", "--from", src, "--out", tmp_path / "o.zarr") == 2
    assert "data/timestamp has 4 steps but meta/episode_ends ends at 9" in _error(capsys)
    group["meta/episode_ends"][0] = 4
    del group["data/robot_eef_pose"]
    assert _cli(monkeypatch, "import", "diffusion-policy", "--from", src, "--out", tmp_path / "o.zarr") == 2
    assert "missing array(s) data/robot_eef_pose" in _error(capsys)


# ---- export lerobot -----------------------------------------------------------------------------


def _tiny_store(path, lengths=(3, 2), real=False):
    from sim2real.data import ReplayWriter

    writer = ReplayWriter(path, attrs={"state_observed": ["agent_x", "agent_y"]} if real else {})
    rng = np.random.default_rng(0)
    for m in lengths:
        writer.append_episode(
            {
                "img": rng.integers(0, 256, (m, 96, 96, 3), dtype=np.uint8),
                "state": rng.uniform(0, 512, (m, 5)).astype(np.float32),
                "action": rng.uniform(0, 512, (m, 2)).astype(np.float32),
            }
        )
    return path


def _lerobot_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("lerobot") is not None


@pytest.mark.skipif(
    _lerobot_importable(), reason="lerobot is installed: the missing-package error cannot happen"
)
def test_export_without_lerobot_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    src = _tiny_store(tmp_path / "s.zarr")
    assert _cli(monkeypatch, "export", "lerobot", "--from", src, "--out", tmp_path / "le") == 2
    assert "needs the optional `lerobot` package" in _error(capsys)
    assert not (tmp_path / "le").exists()
    assert _cli(monkeypatch, "export", "parquet", "--from", src, "--out", tmp_path / "le") == 2
    assert "kind must be one of lerobot" in _error(capsys)


class _FakeLeRobotDataset:
    """Records what the exporter hands LeRobot's writer (the API of lerobot ≥ 0.3)."""

    made: list = []

    @classmethod
    def create(cls, repo_id, fps, features, root, robot_type=None, use_videos=True):
        self = cls()
        self.args = dict(repo_id=repo_id, fps=fps, features=features, root=root, use_videos=use_videos)
        self.episodes, self.buffer, self.finalized = [], [], False
        root.mkdir(parents=True)
        cls.made.append(self)
        return self

    def add_frame(self, frame):
        for key, value in frame.items():
            if key != "task":
                spec = self.args["features"][key]
                assert value.shape == tuple(spec["shape"]), key
        self.buffer.append(frame)

    def save_episode(self):
        self.episodes.append(self.buffer)
        self.buffer = []

    def finalize(self):
        self.finalized = True


@pytest.mark.parametrize("real", [False, True])
def test_export_lerobot_hands_every_frame_to_the_writer(monkeypatch, tmp_path, real):
    import types

    fake = types.ModuleType("lerobot.datasets.lerobot_dataset")
    fake.LeRobotDataset = _FakeLeRobotDataset
    monkeypatch.setitem(sys.modules, "lerobot", types.ModuleType("lerobot"))
    monkeypatch.setitem(sys.modules, "lerobot.datasets", types.ModuleType("lerobot.datasets"))
    monkeypatch.setitem(sys.modules, "lerobot.datasets.lerobot_dataset", fake)
    _FakeLeRobotDataset.made = []
    src, out = _tiny_store(tmp_path / "s.zarr", real=real), tmp_path / "le"
    assert _cli(monkeypatch, "export", "lerobot", "--from", src, "--out", out, "repo_id=me/pusht") == 0
    (ds,) = _FakeLeRobotDataset.made
    assert ds.finalized and ds.args["fps"] == 10 and ds.args["repo_id"] == "me/pusht"
    assert [len(e) for e in ds.episodes] == [3, 2]
    store = open_replay(src)
    frame = ds.episodes[1][1]  # global frame 4
    np.testing.assert_array_equal(frame["observation.image"], store.data["img"][4])
    np.testing.assert_array_equal(frame["observation.state"], store.data["state"][4, :2])
    np.testing.assert_array_equal(frame["action"], store.data["action"][4])
    assert frame["task"].startswith("Push the T")
    assert ("observation.environment_state" in frame) == (not real)  # real imports have no block pose
    assert (out / "metrics.jsonl").exists()


@pytest.mark.skipif(not _lerobot_importable(), reason="lerobot (optional extra) is not installed")
def test_export_lerobot_round_trip(monkeypatch, tmp_path):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    src, out = _tiny_store(tmp_path / "s.zarr"), tmp_path / "le"
    assert _cli(monkeypatch, "export", "lerobot", "--from", src, "--out", out, "use_videos=false") == 0
    ds = LeRobotDataset("local/sim2real_pusht", root=out)
    assert ds.num_episodes == 2 and len(ds) == 5
    np.testing.assert_allclose(ds[4]["action"].numpy(), open_replay(src).data["action"][4], atol=1e-5)
