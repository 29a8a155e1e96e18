"""The policy network, one training step, the MSE metric and checkpoint loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from policies.checkpoint import load_policy, save_checkpoint
from policies.config import PolicyConfig
from policies.dataset import Normalizer, load_pusht, policy_dataset
from policies.metrics import action_mse, squared_error
from policies.model import ConditionalUnet1D, DiffusionPolicy, SpatialSoftmax
from policies.synthetic import write_synthetic_store
from policies.train import build_trainer, train_step
from sim2real.errors import Sim2RealError

TINY = dict(
    image_size=32,
    crop_size=28,
    encoder_channels=(16, 16, 32, 32),
    encoder_blocks=(1, 1, 1, 1),
    num_keypoints=8,
    feature_dim=16,
    down_dims=(16, 32),
    diffusion_step_embed_dim=16,
    n_groups=4,
    sampler="ddim",
    num_inference_steps=3,
    lr=1e-3,
    lr_warmup_steps=0,
    lr_scheduler="constant",
    batch_size=4,
)


def tiny_batch(b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.rand(b, 2, 3, 32, 32, generator=g) * 2 - 1,
        "agent_pos": torch.rand(b, 2, 2, generator=g) * 2 - 1,
        "action": torch.rand(b, 16, 2, generator=g) * 2 - 1,
    }


def test_config_checks_name_the_fields():
    with pytest.raises(ValueError, match="horizon"):
        PolicyConfig(horizon=10)
    with pytest.raises(ValueError, match="sampler"):
        PolicyConfig(sampler="euler")
    with pytest.raises(ValueError, match="num_inference_steps"):
        PolicyConfig(num_inference_steps=0)


def test_spatial_softmax_finds_a_hot_spot():
    ss = SpatialSoftmax(1, 1)
    with torch.no_grad():
        ss.keypoint_conv.weight.fill_(50.0)
        ss.keypoint_conv.bias.zero_()
    x = torch.zeros(1, 1, 5, 9)
    x[0, 0, 4, 0] = 1.0  # bottom-left corner
    np.testing.assert_allclose(ss(x).detach().numpy(), [[-1.0, 1.0]], atol=1e-3)


def test_unet_shapes_and_conditioning():
    torch.manual_seed(0)
    cfg = PolicyConfig(**TINY)
    unet = ConditionalUnet1D(cfg, global_cond_dim=10)
    x, t = torch.randn(3, 16, 2), torch.tensor([0, 5, 99])
    out = unet(x, t, torch.zeros(3, 10))
    assert out.shape == (3, 16, 2)
    assert not torch.allclose(out, unet(x, t, torch.ones(3, 10)))  # FiLM uses the condition


def test_policy_predicts_a_chunk_deterministically():
    torch.manual_seed(0)
    policy = DiffusionPolicy(PolicyConfig(**TINY)).eval()
    b = tiny_batch(2)
    a1 = policy.predict_action(b["image"], b["agent_pos"], torch.Generator().manual_seed(1))
    a2 = policy.predict_action(b["image"], b["agent_pos"], torch.Generator().manual_seed(1))
    assert a1.shape == (2, 16, 2) and a1.abs().max() <= 1.0
    torch.testing.assert_close(a1, a2)
    assert policy.executed(a1).shape == (2, 8, 2)
    torch.testing.assert_close(policy.executed(a1), a1[:, 1:9])


def test_one_train_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    cfg = PolicyConfig(**TINY)
    norm = Normalizer({"agent_pos": {"min": [0, 0], "max": [1, 1]}, "action": {"min": [0, 0], "max": [1, 1]}})
    trainer = build_trainer(cfg, norm, total_steps=10, device="cpu")
    batch = tiny_batch()

    def fixed_loss() -> float:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(123)
            return trainer.model.compute_loss(batch).item()

    before = fixed_loss()
    for _ in range(3):
        train_step(trainer, batch)
    assert fixed_loss() < before


class Oracle(nn.Module):
    """Returns the recorded chunk of the windows in the order action_mse asks for them (+ an offset)."""

    def __init__(self, dataset, stride, offset=0.0):
        super().__init__()
        self.cfg = PolicyConfig()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.ids, self.pos, self.dataset, self.offset = np.arange(0, len(dataset), stride), 0, dataset, offset

    def predict_action(self, images, agent_pos, generator=None):
        ids = self.ids[self.pos : self.pos + len(images)]
        self.pos += len(images)
        return self.dataset.batch(ids)["action"] + self.offset

    def executed(self, chunk):
        return chunk[:, 1:9]


def test_action_mse_of_a_perfect_and_an_offset_predictor(tmp_path):
    data = load_pusht(write_synthetic_store(tmp_path / "s.zarr", 3))
    norm = Normalizer.fit(data, np.arange(3))
    ds = policy_dataset(data, np.arange(3), PolicyConfig(), norm)
    res = action_mse(Oracle(ds, 2), norm, ds, stride=2, batch_size=5)
    assert res["mse"] == pytest.approx(0.0, abs=1e-10) and res["n_windows"] == len(range(0, len(ds), 2))
    res = action_mse(Oracle(ds, 1, offset=0.5), norm, ds, stride=1, batch_size=7)
    assert res["mse"] == pytest.approx(0.25, rel=1e-5)
    scale = 2.0 / (norm.stats["action"]["max"] - norm.stats["action"]["min"])  # px per normalised unit
    assert res["mse_px"] == pytest.approx(np.mean((0.5 / scale) ** 2), rel=1e-4)
    assert squared_error(torch.ones(2, 8, 2), torch.zeros(2, 8, 2)).tolist() == [1.0, 1.0]


def test_checkpoint_round_trip_and_missing_stats(tmp_path):
    torch.manual_seed(0)
    policy = DiffusionPolicy(PolicyConfig(**TINY))
    norm = Normalizer(
        {"agent_pos": {"min": [0, 0], "max": [512, 512]}, "action": {"min": [0, 0], "max": [512, 512]}}
    )
    ckpt = save_checkpoint(tmp_path, policy, policy, norm)
    loaded, loaded_norm = load_policy(tmp_path)
    for (k, a), b in zip(policy.state_dict().items(), loaded.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    assert loaded_norm.to_dict() == norm.to_dict()
    (ckpt / "normalizer.json").unlink()
    with pytest.raises(Sim2RealError, match="normalisation stats"):
        load_policy(tmp_path)
    with pytest.raises(Sim2RealError, match="no policy checkpoint"):
        load_policy(tmp_path / "nowhere")
