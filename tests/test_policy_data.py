"""Windows, split, normalisation and input validation of the policy dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.config import PolicyConfig
from policies.dataset import (
    Normalizer,
    load_pusht,
    policy_dataset,
    split_episodes,
    window_indices,
)
from policies.synthetic import write_synthetic_store
from sim2real.errors import Sim2RealError


def dp_reference_windows(episode_ends, horizon, pad_before, pad_after):
    """Diffusion Policy's create_indices + sample_sequence, ported literally, on a frame-index array."""
    frames = np.arange(episode_ends[-1])
    out = []
    for i in range(len(episode_ends)):
        start_idx = 0 if i == 0 else episode_ends[i - 1]
        end_idx = episode_ends[i]
        length = end_idx - start_idx
        for idx in range(-pad_before, length - horizon + pad_after + 1):
            b0 = max(idx, 0) + start_idx
            b1 = min(idx + horizon, length) + start_idx
            s0 = b0 - (idx + start_idx)
            s1 = horizon - ((idx + horizon + start_idx) - b1)
            sample = frames[b0:b1]
            data = np.zeros(horizon, np.int64)
            data[:s0] = sample[0]
            data[s1:] = sample[-1]
            data[s0:s1] = sample
            out.append(data)
    return np.stack(out)


def test_windows_pad_with_edge_frames():
    w = window_indices(np.array([5]), np.array([0]), horizon=4, pad_before=1, pad_after=2)
    assert w.tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4], [3, 4, 4, 4]]


def test_windows_match_diffusion_policy_sampler():
    ends = np.cumsum([7, 16, 3, 25])
    for pad_before, pad_after in [(1, 7), (0, 0), (3, 2)]:
        ours = window_indices(ends, np.arange(4), 16, pad_before, pad_after)
        ref = dp_reference_windows(ends, 16, pad_before, pad_after)
        np.testing.assert_array_equal(ours, ref)
    # windows never cross an episode boundary
    w = window_indices(ends, np.arange(4), 16, 1, 7)
    episode_of = np.searchsorted(ends, w, side="right")
    assert (episode_of == episode_of[:, :1]).all()


def test_split_is_episode_level_seeded_and_complete():
    tr, va = split_episodes(20, 0.2, seed=3)
    assert len(va) == 4 and set(tr) | set(va) == set(range(20)) and not set(tr) & set(va)
    np.testing.assert_array_equal(split_episodes(20, 0.2, seed=3)[1], va)
    assert not np.array_equal(split_episodes(20, 0.2, seed=4)[1], va)
    assert len(split_episodes(2, 0.01, 0)[1]) == 1  # at least one val episode
    assert len(split_episodes(1, 0.5, 0)[1]) == 0  # but never all of them


def test_normalizer_round_trip_and_range(tmp_path):
    store = write_synthetic_store(tmp_path / "s.zarr", 3)
    data = load_pusht(store)
    norm = Normalizer.fit(data, np.arange(3))
    y = norm.normalize("action", data.action)
    assert y.min() == pytest.approx(-1, abs=1e-5) and y.max() == pytest.approx(1, abs=1e-5)
    np.testing.assert_allclose(norm.unnormalize("action", y), data.action, atol=1e-3)
    t = torch.from_numpy(data.action)
    torch.testing.assert_close(norm.unnormalize("action", norm.normalize("action", t)), t, atol=1e-3, rtol=0)
    # a constant dimension maps to 0 instead of blowing up
    const = Normalizer(
        {"agent_pos": {"min": [5, 0], "max": [5, 1]}, "action": {"min": [0, 0], "max": [1, 1]}}
    )
    out = const.normalize("agent_pos", np.array([[5.0, 0.5]]))
    np.testing.assert_allclose(out, [[0.0, 0.0]], atol=1e-6)
    norm.save(tmp_path / "n.json")
    np.testing.assert_allclose(Normalizer.load(tmp_path / "n.json").normalize("action", data.action), y)
    with pytest.raises(Sim2RealError, match="no normalisation stats"):
        Normalizer.load(tmp_path / "missing.json")


def test_batch_shapes_and_content(tmp_path):
    data = load_pusht(write_synthetic_store(tmp_path / "s.zarr", 2, length=10))
    cfg = PolicyConfig()
    norm = Normalizer.fit(data, np.arange(2))
    ds = policy_dataset(data, np.arange(2), cfg, norm)
    assert len(ds) == 2 * (10 - 16 + 7 + 1 + 1)  # starts -1 … len-16+7 per episode
    b = ds.batch([0, 3])
    assert b["image"].shape == (2, 2, 3, 96, 96) and b["image"].dtype == torch.float32
    assert b["agent_pos"].shape == (2, 2, 2) and b["action"].shape == (2, 16, 2)
    assert -1 <= b["image"].min() and b["image"].max() <= 1
    # window 0 starts one frame before the episode: both obs steps show frame 0
    torch.testing.assert_close(b["image"][0, 0], b["image"][0, 1])
    expected = norm.normalize("action", data.action[[0, 0, 1, 2]])
    np.testing.assert_allclose(b["action"][0, :4].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop": ("data/action",)}, "data/action"),
        ({"size": 64}, "data/img must be uint8 \\(N, 96, 96, 3\\)"),
        ({"n_episodes": 0}, "empty dataset"),
    ],
)
def test_bad_inputs_give_one_line_errors(tmp_path, kwargs, message):
    kwargs = {"n_episodes": 2} | kwargs
    path = write_synthetic_store(tmp_path / "bad.zarr", **kwargs)
    with pytest.raises(Sim2RealError, match=message) as e:
        load_pusht(path)
    assert "\n" not in str(e.value)


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(Sim2RealError):
        load_pusht(tmp_path / "nope.zarr")
