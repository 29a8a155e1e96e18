"""Sampler steps with log-probs against diffusers' own steps and a hand computation."""

import math

import pytest
import torch
from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

from sim2real.editing.samplers import (
    ddim_step_log_prob,
    euler_ancestral_step_log_prob,
    gaussian_log_prob,
    scale_model_input,
)

SHAPE = (2, 4, 3, 3)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core box two threads under load are ~10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _ddim(prediction_type="epsilon", beta_schedule="scaled_linear", **kw):
    s = DDIMScheduler(
        beta_schedule=beta_schedule,
        timestep_spacing="trailing",
        set_alpha_to_one=False,
        clip_sample=False,
        prediction_type=prediction_type,
        **kw,
    )
    s.set_timesteps(5)
    return s


def _euler(prediction_type="epsilon"):
    s = EulerAncestralDiscreteScheduler(beta_schedule="scaled_linear", prediction_type=prediction_type)
    s.set_timesteps(5)
    return s


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_matches_diffusers_step_with_same_noise(prediction_type, eta):
    sched = _ddim(prediction_type)
    torch.manual_seed(0)
    sample, out = torch.randn(SHAPE), torch.randn(SHAPE)
    for t in sched.timesteps:
        ours, _ = ddim_step_log_prob(sched, out, t, sample, eta, generator=torch.Generator().manual_seed(1))
        ref = sched.step(out, t, sample, eta=eta, generator=torch.Generator().manual_seed(1)).prev_sample
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_ddim_stays_finite_where_diffusers_gives_nan():
    # squaredcos_cap_v2 + trailing starts at alphas_cumprod[999] = 2e-9: at eta=1 the term
    # 1 - alpha_prev - std² rounds below zero and diffusers' step returns NaN; ours clamps it at 0
    sched = _ddim("sample", beta_schedule="squaredcos_cap_v2")
    torch.manual_seed(0)
    sample, out = torch.randn(SHAPE), torch.randn(SHAPE)
    for t in sched.timesteps:
        prev, lp = ddim_step_log_prob(sched, out, t, sample, 1.0, generator=torch.Generator().manual_seed(1))
        assert torch.isfinite(prev).all() and torch.isfinite(lp).all()
        ref = sched.step(out, t, sample, eta=1.0, generator=torch.Generator().manual_seed(1)).prev_sample
        ok = torch.isfinite(ref)
        torch.testing.assert_close(prev[ok], ref[ok], rtol=1e-5, atol=1e-5)


def test_ddim_clip_sample_matches_diffusers():
    sched = DDIMScheduler(clip_sample=True, prediction_type="epsilon")
    sched.set_timesteps(4)
    torch.manual_seed(0)
    sample, out = 3 * torch.randn(SHAPE), torch.randn(SHAPE)
    t = sched.timesteps[1]
    ours, _ = ddim_step_log_prob(sched, out, t, sample, 1.0, generator=torch.Generator().manual_seed(2))
    ref = sched.step(out, t, sample, eta=1.0, generator=torch.Generator().manual_seed(2)).prev_sample
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_ddim_log_prob_against_hand_computation():
    sched = _ddim("epsilon")
    torch.manual_seed(0)
    sample, eps, prev = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    eta = 1.0
    t = int(sched.timesteps[2])
    t_prev = t - 1000 // 5
    a, ap = float(sched.alphas_cumprod[t]), float(sched.alphas_cumprod[t_prev])
    # DDIM paper eq. 12, by hand in float64
    x0 = (sample.double() - math.sqrt(1 - a) * eps.double()) / math.sqrt(a)
    std = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    mean = math.sqrt(ap) * x0 + math.sqrt(1 - ap - std**2) * eps.double()
    hand = (-((prev.double() - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)).mean(
        (1, 2, 3)
    )
    by_dist = torch.distributions.Normal(mean, std).log_prob(prev.double()).mean((1, 2, 3))

    got_prev, got = ddim_step_log_prob(sched, eps, t, sample, eta, prev_sample=prev)
    assert torch.equal(got_prev, prev)  # given prev_sample: evaluate only, sample nothing
    torch.testing.assert_close(got.double(), hand, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.double(), by_dist, rtol=1e-4, atol=1e-4)
    assert got.shape == (2,)
    # the mean is diffusers' step with zero noise
    ref_mean = sched.step(eps, t, sample, eta=eta, variance_noise=torch.zeros(SHAPE)).prev_sample
    torch.testing.assert_close(ref_mean.double(), mean, rtol=1e-4, atol=1e-4)


def test_ddim_sampled_then_rescored_log_prob_agrees_and_prefers_the_mean():
    sched = _ddim("epsilon")
    torch.manual_seed(0)
    sample, eps = torch.randn(SHAPE), torch.randn(SHAPE)
    t = sched.timesteps[1]
    prev, lp = ddim_step_log_prob(sched, eps, t, sample, 1.0, generator=torch.Generator().manual_seed(0))
    _, lp_again = ddim_step_log_prob(sched, eps, t, sample, 1.0, prev_sample=prev)
    torch.testing.assert_close(lp, lp_again)
    mean, _ = ddim_step_log_prob(sched, eps, t, sample, 0.0)
    _, lp_mean = ddim_step_log_prob(sched, eps, t, sample, 1.0, prev_sample=mean)
    assert (lp_mean > lp).all()


def test_ddim_per_example_timesteps_match_single_calls():
    sched = _ddim("sample")
    torch.manual_seed(0)
    sample, out, prev = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    ts = sched.timesteps[[0, 3]]
    _, lp = ddim_step_log_prob(sched, out, ts, sample, 1.0, prev_sample=prev)
    for i in range(2):
        _, lp_i = ddim_step_log_prob(
            sched, out[i : i + 1], ts[i], sample[i : i + 1], 1.0, prev_sample=prev[i : i + 1]
        )
        torch.testing.assert_close(lp[i : i + 1], lp_i)


def test_deterministic_steps_have_zero_log_prob():
    sched = _ddim("epsilon")
    torch.manual_seed(0)
    _, lp = ddim_step_log_prob(sched, torch.randn(SHAPE), sched.timesteps[0], torch.randn(SHAPE), eta=0.0)
    assert torch.equal(lp, torch.zeros(2))
    euler = _euler()
    x = torch.randn(SHAPE) * euler.init_noise_sigma
    _, lp_last = euler_ancestral_step_log_prob(euler, torch.randn(SHAPE), euler.timesteps[-1], x)
    assert torch.equal(lp_last, torch.zeros(2))


def test_last_ddim_step_stays_stochastic_without_set_alpha_to_one():
    sched = _ddim("epsilon")
    torch.manual_seed(0)
    _, lp = ddim_step_log_prob(sched, torch.randn(SHAPE), sched.timesteps[-1], torch.randn(SHAPE), eta=1.0)
    assert (lp != 0).all() and torch.isfinite(lp).all()


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_ancestral_matches_diffusers_and_normal_log_prob(prediction_type):
    ours_s, ref_s = _euler(prediction_type), _euler(prediction_type)
    torch.manual_seed(0)
    x = torch.randn(SHAPE) * ref_s.init_noise_sigma
    for t in ref_s.timesteps[:-1]:
        out = torch.randn(SHAPE)
        torch.testing.assert_close(scale_model_input(ours_s, x, t), ref_s.scale_model_input(x, t))
        ours, lp = euler_ancestral_step_log_prob(
            ours_s, out, t, x, generator=torch.Generator().manual_seed(3)
        )
        ref = ref_s.step(out, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        # hand: sigma_up from the tables, noise as diffusers drew it
        i = int((ref_s.timesteps == t).nonzero())
        s, s_to = float(ref_s.sigmas[i]), float(ref_s.sigmas[i + 1])
        s_up = math.sqrt(s_to**2 * (s**2 - s_to**2) / s**2)
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
        mean = ref - noise * s_up
        expected = torch.distributions.Normal(mean.double(), s_up).log_prob(ref.double()).mean((1, 2, 3))
        torch.testing.assert_close(lp.double(), expected, rtol=1e-4, atol=1e-4)
        x = ref


def test_euler_sample_prediction_is_supported():
    sched = _euler("sample")
    torch.manual_seed(0)
    x0 = torch.randn(SHAPE)
    t = sched.timesteps[-1]  # last step: deterministic, lands exactly on the predicted x0
    x = x0 + sched.sigmas[-2] * torch.randn(SHAPE)
    prev, _ = euler_ancestral_step_log_prob(sched, x0, t, x)
    torch.testing.assert_close(prev, x0, rtol=1e-5, atol=1e-5)


def test_gaussian_log_prob_zero_std_and_bad_timestep():
    x = torch.randn(SHAPE)
    assert torch.equal(gaussian_log_prob(x, x + 1, torch.zeros(2, 1, 1, 1)), torch.zeros(2))
    with pytest.raises(ValueError, match="not in scheduler.timesteps"):
        euler_ancestral_step_log_prob(_euler(), x, 12345, x)
