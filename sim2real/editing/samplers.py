"""Sampler steps that also return log p(x_{t-1} | x_t): what D3PO needs.

Each step is the Gaussian of diffusers' own step, `x_{t-1} ~ N(mean(x_t, model_output), std²·I)`,
computed from the scheduler's tables (`alphas_cumprod`, `sigmas`, `timesteps`; nothing is
re-derived). Given `prev_sample` the step only evaluates its log-prob, so a trainer can re-score a
stored trajectory under the current model (with gradients) and under the frozen reference.

* `log_prob` is averaged over the latent dimensions, shape (B,): a sum over 10⁴–10⁵ dimensions
  makes ratios overflow, and D3PO/SPIE use the mean too.
* A deterministic step (DDIM with η = 0, Euler-ancestral's last step into σ = 0) has no density;
  its log-prob is reported as 0, so it contributes a ratio of exactly 1 to D3PO.
* `timestep` may be a number or a (B,) tensor of per-example timesteps (all from
  `scheduler.timesteps`), so shuffled-timestep training batches work.
"""

from __future__ import annotations

import math

import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler
from diffusers.utils.torch_utils import randn_tensor

Scheduler = DDIMScheduler | EulerAncestralDiscreteScheduler


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Mean over non-batch dims of log N(x; mean, std²); 0 where std == 0 (deterministic step)."""
    std = std.expand_as(x)
    stochastic = std > 0
    safe_std = torch.where(stochastic, std, torch.ones_like(std))
    lp = -((x - mean) ** 2) / (2 * safe_std**2) - torch.log(safe_std) - 0.5 * math.log(2 * math.pi)
    lp = torch.where(stochastic, lp, torch.zeros_like(lp))
    return lp.mean(dim=tuple(range(1, x.ndim)))  # (B,)


def _per_example(timestep: int | float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(timestep, device=device)
    return t.expand(batch) if t.ndim == 0 else t  # (B,)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))  # (B, 1, 1, 1)


def scale_model_input(
    scheduler: Scheduler, sample: torch.Tensor, timestep: int | torch.Tensor
) -> torch.Tensor:
    """The UNet's input for `sample` at `timestep` (Euler divides by sqrt(σ² + 1); DDIM: identity).

    Stateless, unlike `scheduler.scale_model_input`, so it works for per-example timesteps.
    """
    if isinstance(scheduler, EulerAncestralDiscreteScheduler):
        sigma, _ = _euler_sigmas(scheduler, timestep, sample)
        return sample / (sigma**2 + 1) ** 0.5
    return sample


def _predict_x0_eps(
    prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor, alpha_t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    beta_t = 1 - alpha_t
    if prediction_type == "epsilon":
        eps = model_output
        x0 = (sample - beta_t**0.5 * eps) / alpha_t**0.5
    elif prediction_type == "sample":
        x0 = model_output
        eps = (sample - alpha_t**0.5 * x0) / beta_t**0.5
    elif prediction_type == "v_prediction":
        x0 = alpha_t**0.5 * sample - beta_t**0.5 * model_output
        eps = alpha_t**0.5 * model_output + beta_t**0.5 * sample
    else:
        raise ValueError(f"prediction_type must be epsilon, sample or v_prediction; got {prediction_type!r}")
    return x0, eps


def ddim_step_log_prob(
    scheduler: DDIMScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step x_t -> x_{t-1} as `DDIMScheduler.step`, plus its log-prob (B,).

    eta=1.0  # D3PO needs stochastic steps: the log-prob is undefined at eta 0
    With `prev_sample` given, nothing is sampled: its log-prob under this step is returned.
    """
    if scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(n) before stepping")
    if scheduler.config.thresholding:
        raise ValueError("dynamic thresholding is not supported by ddim_step_log_prob")
    t = _per_example(timestep, sample.shape[0], sample.device).long()  # (B,)
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod.to(sample.device)
    alpha_t = _bcast(alphas[t], sample)
    final = scheduler.final_alpha_cumprod.to(sample.device)
    alpha_prev = _bcast(torch.where(prev_t >= 0, alphas[prev_t.clamp(min=0)], final), sample)

    # 1. clean-sample and noise estimates from the model output
    x0, eps = _predict_x0_eps(scheduler.config.prediction_type, model_output, sample, alpha_t)
    if scheduler.config.clip_sample:
        r = scheduler.config.clip_sample_range
        x0 = x0.clamp(-r, r)  # as diffusers: ε is kept (use_clipped_model_output=False)
    # 2. the step's Gaussian: DDIM paper eq. 12 with σ_t = η·sqrt(variance)
    variance = (1 - alpha_prev) / (1 - alpha_t) * (1 - alpha_t / alpha_prev)
    std = eta * variance**0.5
    mean = alpha_prev**0.5 * x0 + (1 - alpha_prev - std**2).clamp(min=0) ** 0.5 * eps
    # 3. sample (diffusers draws noise only when eta > 0: same generator use, same noise)
    if prev_sample is None:
        prev_sample = mean
        if eta > 0:
            noise = randn_tensor(
                model_output.shape, generator=generator, device=sample.device, dtype=sample.dtype
            )
            prev_sample = mean + std * noise
    return prev_sample.to(model_output.dtype), gaussian_log_prob(prev_sample, mean, std)


def _euler_sigmas(
    scheduler: EulerAncestralDiscreteScheduler, timestep: int | torch.Tensor, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """σ at `timestep` and σ at the next (lower-noise) step, broadcast to `like`."""
    if scheduler.timesteps is None or scheduler.num_inference_steps is None:
        raise ValueError("call scheduler.set_timesteps(n) before stepping")
    t = _per_example(timestep, like.shape[0], like.device).to(scheduler.timesteps.dtype)  # (B,)
    table = scheduler.timesteps.to(like.device)
    match = t[:, None] == table[None, :]  # (B, S)
    if not bool(match.any(dim=1).all()):
        raise ValueError(f"timestep {timestep} is not in scheduler.timesteps")
    index = match.float().argmax(dim=1).cpu()  # first match; the timesteps are unique
    sigmas = scheduler.sigmas.cpu()
    return _bcast(sigmas[index], like), _bcast(sigmas[index + 1], like)


def euler_ancestral_step_log_prob(
    scheduler: EulerAncestralDiscreteScheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler-ancestral step as `EulerAncestralDiscreteScheduler.step`, plus its log-prob (B,).

    Euler-ancestral is always stochastic (η = 1) except its last step into σ = 0. Unlike diffusers'
    step it also accepts `prediction_type="sample"` (then x0 is the model output itself).
    """
    sigma, sigma_to = _euler_sigmas(scheduler, timestep, sample)
    sample = sample.to(torch.float32)
    # 1. clean-sample estimate (Karras' σ parameterisation: x = x0 + σ·ε)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        x0 = sample - sigma * model_output
    elif kind == "v_prediction":
        x0 = model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    elif kind == "sample":
        x0 = model_output
    else:
        raise ValueError(f"prediction_type must be epsilon, sample or v_prediction; got {kind!r}")
    # 2. ancestral split of the step: deterministic down to σ_down, fresh noise of size σ_up
    sigma_up = (sigma_to**2 * (sigma**2 - sigma_to**2) / sigma**2) ** 0.5
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    mean = sample + (sample - x0) / sigma * (sigma_down - sigma)
    # 3. sample (diffusers always draws the noise, also on the last step)
    if prev_sample is None:
        noise = randn_tensor(
            model_output.shape, dtype=model_output.dtype, device=sample.device, generator=generator
        )
        prev_sample = mean + noise * sigma_up
    return prev_sample.to(model_output.dtype), gaussian_log_prob(prev_sample, mean, sigma_up)


def step_log_prob(
    scheduler: Scheduler,
    model_output: torch.Tensor,
    timestep: int | torch.Tensor,
    sample: torch.Tensor,
    eta: float = 1.0,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch on the scheduler type (`eta` only matters for DDIM)."""
    if isinstance(scheduler, DDIMScheduler):
        return ddim_step_log_prob(scheduler, model_output, timestep, sample, eta, prev_sample, generator)
    if isinstance(scheduler, EulerAncestralDiscreteScheduler):
        return euler_ancestral_step_log_prob(
            scheduler, model_output, timestep, sample, prev_sample, generator
        )
    raise TypeError(
        f"scheduler must be DDIMScheduler or EulerAncestralDiscreteScheduler; got {type(scheduler).__name__}"
    )
