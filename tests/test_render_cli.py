"""`sim2real render` end to end through the real CLI and config system (short episodes)."""

from __future__ import annotations

import numpy as np
import pytest
from cli_helpers import run_cli

from sim2real.data import open_replay, render_job

SHORT = ["physics.max_steps=12", "expert.n_candidates=8"]


def _cli(monkeypatch, *args) -> int:
    return run_cli(monkeypatch, "render", *args)


def test_render_writes_the_layout(monkeypatch, tmp_path):
    out = tmp_path / "s.zarr"
    assert _cli(monkeypatch, "--out", out, "--episodes", 2, *SHORT, "image_size=32") == 0
    store = open_replay(out, require=("img", "state", "action", "keypoint", "n_contacts", "mask"))
    n = store.n_frames
    assert store.n_episodes == 2 and n == 24  # nobody solves Push-T in 12 steps
    shapes = {k: (a.shape, str(a.dtype)) for k, a in store.data.items()}
    assert shapes == {
        "img": ((n, 32, 32, 3), "uint8"),
        "mask": ((n, 32, 32), "uint8"),
        "state": ((n, 5), "float32"),
        "action": ((n, 2), "float32"),
        "keypoint": ((n, 9, 2), "float32"),
        "n_contacts": ((n, 1), "float32"),
    }
    attrs = store.attrs
    assert attrs["seed"] == 0 and attrs["appearance"]["name"] == "sim" and attrs["sim"]["k_p"] == 100.0
    assert attrs["sim2real_version"] and attrs["appearance"]["t_color"] == [142, 163, 183]
    masks = store.data["mask"][:]
    assert set(np.unique(masks)) == {0, 1, 2, 3}
    states = store.data["state"][:]
    ep0 = store.get_episode(0)
    assert np.all(np.linalg.norm(np.diff(ep0["action"], axis=0), axis=1) <= 25.0 + 1e-4)
    assert np.all((states[:, :4] >= 0) & (states[:, :4] <= 512))
    assert (tmp_path / "s.zarr" / "metrics.jsonl").exists()


def test_same_arguments_identical_arrays_and_resume_after_interrupt(monkeypatch, tmp_path):
    full, resumed = tmp_path / "full.zarr", tmp_path / "resumed.zarr"
    assert _cli(monkeypatch, "--out", full, "--episodes", 3, "--appearance", "tabletop", *SHORT) == 0

    real = render_job.record_episode
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during episode 1
        return real(*args, **kwargs)

    monkeypatch.setattr(render_job, "record_episode", flaky)
    assert _cli(monkeypatch, "--out", resumed, "--episodes", 3, "--appearance", "tabletop", *SHORT) == 130
    assert open_replay(resumed).n_episodes == 1
    monkeypatch.setattr(render_job, "record_episode", real)
    assert _cli(monkeypatch, "--out", resumed, "--episodes", 3, "--appearance", "tabletop", *SHORT) == 0
    a, b = open_replay(full), open_replay(resumed)
    np.testing.assert_array_equal(a.episode_ends, b.episode_ends)
    for key in a.data:
        np.testing.assert_array_equal(a.data[key][:], b.data[key][:], err_msg=key)


def test_bad_arguments_give_one_line_errors(monkeypatch, tmp_path, capsys):
    out = tmp_path / "s.zarr"
    assert _cli(monkeypatch, "--out", out, "--episodes", -1) == 2
    assert "episodes must be >= 1" in capsys.readouterr().err
    assert _cli(monkeypatch, "--out", out, "--episodes", 1, "--appearance", "nope") == 2
    assert "unknown appearance 'nope'" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _cli(monkeypatch, "--out", tmp_path / "file" / "s.zarr", "--episodes", 1, *SHORT) == 2
    assert "cannot write" in capsys.readouterr().err
    assert _cli(monkeypatch, "--out", out, "--episodes", 1, *SHORT) == 0
    capsys.readouterr()
    assert _cli(monkeypatch, "--out", out, "--episodes", 1, "--seed", 5, *SHORT) == 2
    err = capsys.readouterr().err
    assert "different arguments (seed)" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _cli(monkeypatch, "--out", out, "--episodes", 1, "--seed", 5, "--overwrite", *SHORT) == 0
    assert open_replay(out).attrs["seed"] == 5
    assert _cli(monkeypatch, "--out", out, "--episodes", 1, "no_such_field=3") == 2
    assert "config 'render'" in capsys.readouterr().err


def test_run_render_direct_config_checks():
    with pytest.raises(ValueError, match="out must be given"):
        render_job.RenderConfig(episodes=1)
    with pytest.raises(ValueError, match="image_size"):
        render_job.RenderConfig(out="x.zarr", episodes=1, image_size=2)
