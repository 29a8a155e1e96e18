"""sim2real.data: zarr replay writer/reader and reference-image loading."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import zarr
from PIL import Image

from sim2real.data import ReplayWriter, load_images, open_replay
from sim2real.errors import Sim2RealError


def _episode(t: int, value: int = 0) -> dict[str, np.ndarray]:
    return {
        "img": np.full((t, 8, 8, 3), value, np.uint8),
        "mask": np.full((t, 8, 8), value % 4, np.uint8),
        "state": np.full((t, 5), value, np.float32),
        "action": np.full((t, 2), value, np.float32),
        "keypoint": np.zeros((t, 9, 2), np.float32),
        "n_contacts": np.zeros((t, 1), np.float32),
    }


def test_round_trip_layout_and_format(tmp_path):
    path = tmp_path / "r.zarr"
    w = ReplayWriter(path, attrs={"seed": 3}, chunk_frames=4)
    w.append_episode(_episode(5, 1))
    w.append_episode(_episode(3, 2))
    store = open_replay(path)
    assert store.n_episodes == 2 and store.n_frames == 8
    np.testing.assert_array_equal(store.episode_ends, [5, 8])
    assert store.episode_ends.dtype == np.int64
    assert store.attrs["seed"] == 3
    ep = store.get_episode(1)
    assert ep["img"].shape == (3, 8, 8, 3) and ep["img"].dtype == np.uint8 and (ep["img"] == 2).all()
    assert store.data["state"][:].dtype == np.float32
    # zarr format 2, Blosc-compressed, time-chunked: what Diffusion Policy's zarr-2 code reads
    meta = json.loads((path / "data" / "img" / ".zarray").read_text())
    assert meta["zarr_format"] == 2 and meta["compressor"]["id"] == "blosc" and meta["chunks"][0] == 4
    assert json.loads((path / "meta" / "episode_ends" / ".zarray").read_text())["dtype"] == "<i8"
    assert (path / ".zgroup").exists()


def test_writer_refuses_existing_store_and_bad_episodes(tmp_path):
    path = tmp_path / "r.zarr"
    w = ReplayWriter(path)
    with pytest.raises(ValueError, match="common length"):
        w.append_episode({"img": np.zeros((2, 8, 8, 3), np.uint8), "state": np.zeros((3, 5), np.float32)})
    w.append_episode(_episode(2))
    with pytest.raises(ValueError, match="keys"):
        w.append_episode({"img": np.zeros((2, 8, 8, 3), np.uint8)})
    with pytest.raises(Sim2RealError, match="--overwrite"):
        ReplayWriter(path)
    ReplayWriter(path, overwrite=True)
    assert open_replay(path, require=()).n_episodes == 0


def test_partial_episode_after_a_crash_is_invisible_and_trimmed_on_resume(tmp_path):
    path = tmp_path / "r.zarr"
    w = ReplayWriter(path)
    w.append_episode(_episode(4, 1))
    # a crash after writing data but before publishing episode_ends
    root = zarr.open_group(str(path), mode="r+")
    for key in ("img", "state"):
        arr = root["data"][key]
        arr.resize((7,) + arr.shape[1:])
        arr[4:7] = 9
    store = open_replay(path)
    assert store.n_frames == 4 and store.data["img"].shape[0] == 4
    assert np.asarray(store.data["img"]).shape[0] == 4 and store.data["img"][-1].max() == 1
    w = ReplayWriter.resume(path)
    assert w.n_episodes == 1 and root["data/img"].shape[0] == 4
    w.append_episode(_episode(2, 5))
    store = open_replay(path)
    np.testing.assert_array_equal(store.episode_ends, [4, 6])
    assert (store.get_episode(1)["img"] == 5).all()


def test_reader_names_missing_or_odd_arrays(tmp_path):
    path = tmp_path / "r.zarr"
    ReplayWriter(path).append_episode(_episode(2))
    with pytest.raises(Sim2RealError, match="data/depth"):
        open_replay(path, require=("img", "depth"))
    root = zarr.open_group(str(path), mode="r+")
    root["data"].create_array("state2", shape=(1, 5), dtype="float32")
    with pytest.raises(Sim2RealError, match="data/state2 has 1 frames"):
        open_replay(path)
    del root["data/state2"]
    del root["data/action"]
    root["data"].create_array("action", shape=(2, 3), dtype="float32")
    with pytest.raises(Sim2RealError, match=r"data/action must be \(N, 2\)"):
        open_replay(path)
    with pytest.raises(Sim2RealError, match="no replay store"):
        open_replay(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w", zarr_format=2)
    with pytest.raises(Sim2RealError, match="missing group 'data/'"):
        open_replay(tmp_path / "empty.zarr")


# ---- images ----------------------------------------------------------------------------------------
def test_load_images_modes_sizes_and_globs(tmp_path, caplog):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (120, 200, 4), dtype=np.uint8), "RGBA").save(tmp_path / "b.png")
    Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8), "L").save(tmp_path / "c.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        imgs = load_images(tmp_path, size=96)
    assert imgs.shape == (3, 96, 96, 3) and imgs.dtype == np.uint8
    assert "centre-cropping" in caplog.text and "resizing" in caplog.text
    np.testing.assert_array_equal(imgs[0], np.asarray(Image.open(tmp_path / "a.png")))
    grey = imgs[2].astype(int)
    assert (grey[..., 0] == grey[..., 1]).all()  # grey stays grey in RGB
    assert load_images(str(tmp_path / "*.png"), size=32).shape == (2, 32, 32, 3)
    assert load_images([tmp_path / "a.png", tmp_path / "c.jpg"], size=16).shape == (2, 16, 16, 3)


def test_load_images_errors(tmp_path):
    with pytest.raises(Sim2RealError, match="no images match"):
        load_images(str(tmp_path / "*.png"))
    with pytest.raises(Sim2RealError, match="no images"):
        load_images(tmp_path)
    with pytest.raises(Sim2RealError, match="no such image"):
        load_images(tmp_path / "nope.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(Sim2RealError, match="cannot read image"):
        load_images(tmp_path / "broken.png")


@pytest.mark.slow
def test_diffusion_policy_zarr2_reader_opens_a_render_store(tmp_path):
    """Runs scripts/check_zarr2_compat.py: zarr 2 in its own venv (pip-installs zarr<3 on first use)."""
    import subprocess
    import sys
    from pathlib import Path

    from sim2real.data.render_job import RenderConfig, run_render

    out = tmp_path / "s.zarr"
    cfg = RenderConfig(out=str(out), episodes=2)
    cfg.physics.max_steps = 10
    run_render(cfg)
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_zarr2_compat.py"
    res = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "ok: zarr 2" in res.stdout and '"zarr": "2.' in res.stdout
