"""Chi et al.'s CNN diffusion policy, built from torch blocks and diffusers schedulers.

    obs images (B, To, 3, H, W) in [-1, 1] ─ ResNet (GroupNorm) ─ spatial softmax ─ Linear ─┐
    agent pos  (B, To, 2) in [-1, 1] ─────────────────────────────────────────────────────────┴→ global cond
    noisy action chunk (B, T, Da) + step k + global cond ─ 1-D conditional U-Net (FiLM) → ε (B, T, Da)

The encoder follows robomimic/Diffusion Policy: a ResNet whose BatchNorms are GroupNorms (groups =
channels // 16, because EMA and small batches do not get on with BatchNorm), no global pooling but a
spatial softmax that turns each of `num_keypoints` maps into an expected (x, y), then a linear layer.
The U-Net is Diffusion Policy's `ConditionalUnet1D` (Conv1dBlock, ConditionalResidualBlock1D with FiLM
scale and bias, sinusoidal step embedding), written out here so the core needs no torchvision/lerobot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from policies.config import PolicyConfig

# ----------------------------------------------------------------------------------------------------
# image encoder


class BasicBlock(nn.Module):
    """ResNet BasicBlock with GroupNorm in place of BatchNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups_divisor: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(c_out // groups_divisor, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(c_out // groups_divisor, c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(c_out // groups_divisor, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.relu(h + self.shortcut(x))


class SpatialSoftmax(nn.Module):
    """Feature maps (B, C, H, W) → expected keypoint coordinates (B, K * 2) in [-1, 1]."""

    def __init__(self, channels: int, num_keypoints: int):
        super().__init__()
        self.keypoint_conv = nn.Conv2d(channels, num_keypoints, 1)
        self.num_keypoints = num_keypoints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        attn = self.keypoint_conv(x).flatten(2).softmax(-1)  # (B, K, H*W)
        ys, xs = torch.meshgrid(
            torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype),
            torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype),
            indexing="ij",
        )
        grid = torch.stack([xs.flatten(), ys.flatten()], -1)  # (H*W, 2)
        return (attn @ grid).reshape(b, self.num_keypoints * 2)  # (B, K*2)


class ImageEncoder(nn.Module):
    """ResNet-style trunk (GroupNorm) → spatial softmax → Linear → ReLU: (B, 3, h, w) → (B, feature_dim)."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        g = cfg.encoder_groups_divisor
        c0 = cfg.encoder_channels[0]
        self.stem = nn.Sequential(
            nn.Conv2d(3, c0, 7, 2, 3, bias=False), nn.GroupNorm(c0 // g, c0), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        layers, c_in = [], c0
        for i, (c, n) in enumerate(zip(cfg.encoder_channels, cfg.encoder_blocks, strict=True)):
            for j in range(n):
                layers.append(BasicBlock(c_in, c, stride=2 if (i > 0 and j == 0) else 1, groups_divisor=g))
                c_in = c
        self.trunk = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, cfg.num_keypoints)
        self.out = nn.Linear(cfg.num_keypoints * 2, cfg.feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.out(self.pool(self.trunk(self.stem(x)))))


# ----------------------------------------------------------------------------------------------------
# 1-D conditional U-Net (Diffusion Policy's ConditionalUnet1D)


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        emb = t.float()[:, None] * freqs[None]  # (B, half)
        return torch.cat([emb.sin(), emb.cos()], -1)  # (B, dim)


class Conv1dBlock(nn.Sequential):
    """Conv1d → GroupNorm → Mish."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int):
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out),
            nn.Mish(),
        )


class ConditionalResidualBlock1D(nn.Module):
    """Two Conv1dBlocks; the condition sets a per-channel FiLM scale and bias between them."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel_size: int, n_groups: int):
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.block1(x)  # (B, C, T)
        scale, bias = self.cond_encoder(cond).reshape(-1, 2, self.c_out, 1).unbind(1)  # (B, C, 1) each
        h = self.block2(scale * h + bias)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """ε-network over action chunks: (B, T, Da), step (B,), global cond (B, G) → (B, T, Da)."""

    def __init__(self, cfg: PolicyConfig, global_cond_dim: int):
        super().__init__()
        dsed, k, g = cfg.diffusion_step_embed_dim, cfg.kernel_size, cfg.n_groups
        self.step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed)
        )
        cond_dim = dsed + global_cond_dim
        dims = [cfg.action_dim, *cfg.down_dims]
        in_out = list(zip(dims[:-1], dims[1:], strict=True))

        def block(a: int, b: int) -> ConditionalResidualBlock1D:
            return ConditionalResidualBlock1D(a, b, cond_dim, k, g)

        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            down = nn.Identity() if last else nn.Conv1d(b, b, 3, 2, 1)
            self.down.append(nn.ModuleList([block(a, b), block(b, b), down]))
        mid = cfg.down_dims[-1]
        self.mid = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.up = nn.ModuleList()
        for a, b in reversed(in_out[1:]):  # every up level undoes one of the len-1 downsamples
            self.up.append(nn.ModuleList([block(b * 2, a), block(a, a), nn.ConvTranspose1d(a, a, 4, 2, 1)]))
        start = cfg.down_dims[0]
        self.final = nn.Sequential(Conv1dBlock(start, start, k, g), nn.Conv1d(start, cfg.action_dim, 1))

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, global_cond: torch.Tensor
    ) -> torch.Tensor:
        x = sample.transpose(1, 2)  # (B, Da, T)
        if timestep.ndim == 0:
            timestep = timestep.expand(x.shape[0])
        cond = torch.cat([self.step_encoder(timestep.to(x.device)), global_cond], -1)  # (B, dsed + G)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], 1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)  # (B, T, Da)


# ----------------------------------------------------------------------------------------------------
# the policy


def make_scheduler(cfg: PolicyConfig, kind: str = "ddpm") -> DDPMScheduler | DDIMScheduler:
    """The training scheduler (`ddpm`) or the sampling one named by `cfg.sampler`."""
    common = dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        clip_sample=True,  # actions live in [-1, 1] after min-max normalisation
    )
    if kind == "ddpm":
        return DDPMScheduler(variance_type="fixed_small", **common)
    return DDIMScheduler(set_alpha_to_one=True, steps_offset=0, **common)


def random_crop(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Independent random crop per sample (the same for all obs steps of a sample): (B, To, C, H, W)."""
    b, _, _, h, w = images.shape
    tops = torch.randint(0, h - size + 1, (b,), generator=generator).tolist()
    lefts = torch.randint(0, w - size + 1, (b,), generator=generator).tolist()
    return torch.stack(
        [im[..., t : t + size, s : s + size] for im, t, s in zip(images, tops, lefts, strict=True)]
    )


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    h, w = images.shape[-2:]
    t, s = (h - size) // 2, (w - size) // 2
    return images[..., t : t + size, s : s + size]


class DiffusionPolicy(nn.Module):
    """Encoder + U-Net + noise scheduler. Works in normalised space: images and agent pos in [-1, 1].

    `compute_loss(batch)` is the training objective; `predict_action(images, agent_pos)` samples an
    action chunk (B, T, Da). Normalisation to and from world pixels is `policies.dataset.Normalizer`'s job.
    """

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = ImageEncoder(cfg)
        self.global_cond_dim = cfg.n_obs_steps * (cfg.feature_dim + cfg.state_dim)
        self.unet = ConditionalUnet1D(cfg, self.global_cond_dim)
        self.noise_scheduler = make_scheduler(cfg, "ddpm")
        self.sample_scheduler = make_scheduler(cfg, cfg.sampler)

    def global_cond(self, images: torch.Tensor, agent_pos: torch.Tensor, train: bool = False) -> torch.Tensor:
        """images (B, To, 3, H, W), agent_pos (B, To, Ds) → (B, To * (feature_dim + Ds))."""
        b, to = images.shape[:2]
        crop = self.cfg.crop_size
        images = random_crop(images, crop) if train else center_crop(images, crop)
        feats = self.encoder(images.flatten(0, 1)).reshape(b, to, -1)  # (B, To, F)
        return torch.cat([feats, agent_pos], -1).flatten(1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean ε-MSE. batch: image (B, To, 3, H, W), agent_pos (B, To, Ds), action (B, T, Da)."""
        cond = self.global_cond(batch["image"], batch["agent_pos"], train=True)
        action = batch["action"]
        k = self.cfg.noise_samples_per_obs
        if k > 1:  # several denoising targets per encoder pass (CPU time is mostly the encoder)
            cond, action = cond.repeat_interleave(k, 0), action.repeat_interleave(k, 0)
        noise = torch.randn_like(action)
        t = torch.randint(0, self.cfg.num_train_timesteps, (action.shape[0],), device=action.device)
        noisy = self.noise_scheduler.add_noise(action, noise, t)
        pred = self.unet(noisy, t, cond)
        target = noise if self.cfg.prediction_type == "epsilon" else action
        return F.mse_loss(pred, target)

    @torch.no_grad()
    def predict_action(
        self,
        images: torch.Tensor,
        agent_pos: torch.Tensor,
        generator: torch.Generator | None = None,
        num_inference_steps: int | None = None,
    ) -> torch.Tensor:
        """Sample the whole chunk (B, T, Da) in normalised space; executed steps are [To-1 : To-1+Ta]."""
        # 1. encode the observations
        cond = self.global_cond(images, agent_pos, train=False)
        # 2. prepare the initial noise
        shape = (images.shape[0], self.cfg.horizon, self.cfg.action_dim)
        x = torch.randn(shape, generator=generator, device="cpu").to(images.device, images.dtype)
        # 3. denoise
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(num_inference_steps or self.cfg.num_inference_steps)
        for t in scheduler.timesteps:
            eps = self.unet(x, t.to(x.device), cond)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return x

    def executed(self, chunk: torch.Tensor) -> torch.Tensor:
        """The Ta actions a policy call executes: chunk[:, To-1 : To-1+Ta]."""
        start = self.cfg.n_obs_steps - 1
        return chunk[:, start : start + self.cfg.n_action_steps]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
