"""The diffusion policy's configuration: one typed dataclass, two presets (`quick`, `paper`).

Paper-to-code glossary (Chi et al., Diffusion Policy):

    observation horizon  To | n_obs_steps     obs (B, To, 3, H, W) and (B, To, 2)
    action horizon       Ta | n_action_steps  the actions executed per policy call
    prediction horizon   T  | horizon         the action chunk the U-Net denoises, (B, T, Da)

The executed actions are `action[:, To-1 : To-1+Ta]`: the chunk starts at the first observation step,
so the first `To-1` predicted actions lie in the past and are dropped (Diffusion Policy's indexing).

Presets live in `configs/policy/<name>.yaml`; `policy=paper` selects one, `policy.down_dims=[…]` changes
a field. OmegaConf 2.3 does not accept `Literal` annotations, so string choices are typed `str` and
checked in `__post_init__` against the tuples below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ENCODER_NORMS = ("group",)
SAMPLERS = ("ddpm", "ddim")
BETA_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")
PREDICTION_TYPES = ("epsilon", "sample")
# fields that fix the network's shape and meaning: taken from the checkpoint when training starts from one
ARCH_FIELDS = (
    "n_obs_steps", "n_action_steps", "horizon", "image_size", "crop_size", "encoder_channels", "encoder_blocks",
    "encoder_groups_divisor", "num_keypoints", "feature_dim", "state_dim", "action_dim", "down_dims",
    "diffusion_step_embed_dim", "kernel_size", "n_groups", "num_train_timesteps", "beta_schedule", "prediction_type",
)  # fmt: skip


@dataclass
class PolicyConfig:
    """Hyper-parameters of the CNN diffusion policy (model + optimisation).

    Fields you will change: `encoder_channels`, `down_dims` (model size), `batch_size`,
    `num_inference_steps` / `sampler` (sampling cost), `noise_samples_per_obs` (CPU speed-up).

    Model
        n_obs_steps: To, observation steps fed to the encoder (Diffusion Policy: 2).
        n_action_steps: Ta, actions executed per policy call (8).
        horizon: T, length of the denoised action chunk (16); a multiple of 2**(len(down_dims)-1).
        image_size: side of the stored frames (96); other sizes are refused at load time.
        crop_size: random crop in training, centre crop at eval (84).
        encoder_channels: widths of the four ResNet stages ((64, 128, 256, 512) = ResNet-18).
        encoder_blocks: BasicBlocks per stage ((2, 2, 2, 2) = ResNet-18).
        encoder_groups_divisor: GroupNorm groups = channels // this (Diffusion Policy: 16).
        num_keypoints: spatial-softmax keypoints (32); the encoder outputs `feature_dim` features.
        feature_dim: image feature size per step after the keypoint projection (64).
        state_dim: agent position size appended to the image features (2).
        action_dim: Da (2).
        down_dims: U-Net widths ((256, 512, 1024) in the paper).
        diffusion_step_embed_dim: sinusoidal step embedding width (256 in the paper).
        kernel_size, n_groups: U-Net conv kernel (5) and GroupNorm groups (8).
    Diffusion
        num_train_timesteps: DDPM steps (100); beta_schedule (squaredcos_cap_v2); prediction_type (epsilon).
        sampler: `ddpm` or `ddim` for inference; num_inference_steps: its number of steps.
    Optimisation
        lr (1e-4), weight_decay (1e-6), betas, lr_warmup_steps (500 in the paper), lr_scheduler
        (any name of diffusers.optimization.get_scheduler), batch_size, ema_power / ema_max_decay
        (EMAModel's warm-up schedule), grad_clip (0 = off).
        noise_samples_per_obs: draws of (noise, t) per encoded observation; >1 reuses one encoder pass
            for several denoising targets, which is where a CPU spends its time (1 = Diffusion Policy).
    """

    n_obs_steps: int = 2
    n_action_steps: int = 8
    horizon: int = 16
    image_size: int = 96
    crop_size: int = 84
    encoder_channels: tuple[int, ...] = (64, 128, 256, 512)
    encoder_blocks: tuple[int, ...] = (2, 2, 2, 2)
    encoder_groups_divisor: int = 16
    num_keypoints: int = 32
    feature_dim: int = 64
    state_dim: int = 2
    action_dim: int = 2
    down_dims: tuple[int, ...] = (256, 512, 1024)
    diffusion_step_embed_dim: int = 256
    kernel_size: int = 5
    n_groups: int = 8
    num_train_timesteps: int = 100
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    sampler: str = "ddpm"
    num_inference_steps: int = 100
    lr: float = 1e-4
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    lr_warmup_steps: int = 500
    lr_scheduler: str = "cosine"
    batch_size: int = 64
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    grad_clip: float = 0.0
    noise_samples_per_obs: int = 1
    extra: dict = field(default_factory=dict)  # free-form notes saved with the checkpoint

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(self.encoder_channels)
        self.encoder_blocks = tuple(self.encoder_blocks)
        self.down_dims = tuple(self.down_dims)
        self.betas = tuple(self.betas)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}; got {self.sampler=}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}; got {self.beta_schedule=}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}; got {self.prediction_type=}"
            )
        if len(self.encoder_channels) != len(self.encoder_blocks) or not self.encoder_channels:
            raise ValueError(
                f"encoder_channels and encoder_blocks need the same non-zero length; got "
                f"{self.encoder_channels=}, {self.encoder_blocks=}"
            )
        if any(c % self.encoder_groups_divisor for c in self.encoder_channels):
            raise ValueError(
                f"every encoder channel count must divide by encoder_groups_divisor; got "
                f"{self.encoder_channels=}, {self.encoder_groups_divisor=}"
            )
        if any(d % self.n_groups for d in self.down_dims):
            raise ValueError(f"down_dims must divide by n_groups; got {self.down_dims=}, {self.n_groups=}")
        factor = 2 ** (len(self.down_dims) - 1)
        if self.horizon % factor:
            raise ValueError(
                f"horizon must be a multiple of 2**(len(down_dims)-1)={factor}; got {self.horizon=}"
            )
        if self.n_obs_steps < 1 or self.n_action_steps < 1:
            raise ValueError(
                f"n_obs_steps and n_action_steps must be >= 1; got {self.n_obs_steps=}, {self.n_action_steps=}"
            )
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f"n_obs_steps - 1 + n_action_steps must fit in horizon; got "
                f"{self.n_obs_steps=}, {self.n_action_steps=}, {self.horizon=}"
            )
        if not 0 < self.crop_size <= self.image_size:
            raise ValueError(
                f"crop_size must be in (0, image_size]; got {self.crop_size=}, {self.image_size=}"
            )
        if not 0 < self.num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, num_train_timesteps]; got "
                f"{self.num_inference_steps=}, {self.num_train_timesteps=}"
            )
        if self.batch_size < 1 or self.noise_samples_per_obs < 1:
            raise ValueError(f"batch_size and noise_samples_per_obs must be >= 1; got {self.batch_size=}")
        if self.diffusion_step_embed_dim % 2:
            raise ValueError(f"diffusion_step_embed_dim must be even; got {self.diffusion_step_embed_dim=}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PolicyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown policy config keys {unknown}")
        return cls(**d)
