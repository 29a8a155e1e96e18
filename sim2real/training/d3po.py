"""D3PO: preference optimisation of a diffusion editor from AI feedback, one step at a time.

The losses are pure functions of per-timestep log-probabilities (`log p(x_{t-1} | x_t)` of the
recorded trajectory, averaged over latent dimensions as the samplers return them):

    log r = log clamp(p_θ / p_ref, 1 − clip, 1 + clip)         # D3PO's "clipped Q"
    pairs      L = −log σ(β·(log r_w − log r_l))                 # Eq. 7 of the specialists paper
    listwise   L = −Σ_i [β log r_(i) − log Σ_{j ≥ i} exp(β log r_(j))]   # Plackett–Luce, best first

Facts taken from D3PO's released code (yk7333/d3po, scripts/train_d3po.py) and SPIE's
(ebenarous/SPIE, scripts/train.py):
* the ratio is clamped, not the log-ratio's gradient: outside 1 ± clip the term has no gradient
  (a trust region, like PPO's clip). We clamp `logp − ref_logp` to [log(1−clip), log(1+clip)],
  which is the same function with the same gradient but cannot overflow `exp` into NaN;
* sign: a preference of +1 for the winner and −1 for the loser, 0 for a tie, so the argument of σ
  is β·(log r_w − log r_l); the loss falls when the winner's likelihood rises relative to the
  reference and the loser's falls;
* D3PO keeps tied pairs in the mean (they add the constant log 2); here ties carry no gradient
  and are left out of the mean (`mask`), so a batch of ties gives loss 0;
* SPIE's listwise form raises each clamped ratio to the power β and sums the Plackett–Luce stage
  terms over positions (best first); with k = 2 it equals the pairwise loss (tested).

The trainer that produces these log-probs lives further down in this module.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def clamped_log_ratio(logp: torch.Tensor, ref_logp: torch.Tensor, clip: float = 0.1) -> torch.Tensor:
    """log clamp(exp(logp − ref_logp), 1 − clip, 1 + clip), computed without `exp` overflow."""
    if not 0.0 < clip < 1.0:
        raise ValueError(f"clip must be in (0, 1); got {clip=}")
    return torch.clamp(logp - ref_logp, math.log1p(-clip), math.log1p(clip))


def d3po_loss(
    logp_w: torch.Tensor,
    logp_l: torch.Tensor,
    ref_logp_w: torch.Tensor,
    ref_logp_l: torch.Tensor,
    beta: float = 0.1,
    clip: float = 0.1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pairwise D3PO loss at one (or several) denoising steps; a scalar.

    All inputs share one shape, e.g. `(B,)` for one timestep or `(B, T)` for several: the log-prob
    of the winner's / loser's step under the current model (with gradients) and under the frozen
    reference (without). `mask` (bool, broadcastable to that shape) marks real preferences;
    False entries (ties) give no gradient and are left out of the mean.
    """
    if not (logp_w.shape == logp_l.shape == ref_logp_w.shape == ref_logp_l.shape):
        raise ValueError(
            f"log-prob shapes differ: {tuple(logp_w.shape)=} {tuple(logp_l.shape)=} "
            f"{tuple(ref_logp_w.shape)=} {tuple(ref_logp_l.shape)=}"
        )
    z = beta * (clamped_log_ratio(logp_w, ref_logp_w, clip) - clamped_log_ratio(logp_l, ref_logp_l, clip))
    per = -F.logsigmoid(z)
    if mask is None:
        return per.mean()
    weight = torch.broadcast_to(mask, per.shape).to(per.dtype)
    # clamp_min(1): a batch of ties gives an exact 0 that still belongs to the graph
    return (per * weight).sum() / weight.sum().clamp_min(1.0)


def plackett_luce_loss(
    logps: torch.Tensor,
    ref_logps: torch.Tensor,
    order: torch.Tensor,
    beta: float = 0.1,
    clip: float = 0.1,
    scores: torch.Tensor | None = None,
) -> torch.Tensor:
    """Listwise (Plackett–Luce) D3PO loss for k ≥ 2 samples per condition; a scalar.

    logps, ref_logps: `(B, k)` step log-probs of the k samples (current model / frozen reference).
    order: `(B, k)` long, sample indices best first (e.g. `argsort` of a lower-is-better score).
    scores: optional `(B, k)` lower-is-better scores in the samples' own order; when given, tied
    samples carry no preference between them: stage i only competes against samples *strictly*
    worse than the i-th best, and a stage with none left contributes 0. With k = 2 this is
    exactly `d3po_loss` with ties masked.
    """
    if logps.ndim != 2 or logps.shape != ref_logps.shape or order.shape != logps.shape:
        raise ValueError(
            f"need (B, k) tensors; got {tuple(logps.shape)=} {tuple(ref_logps.shape)=} {tuple(order.shape)=}"
        )
    k = logps.shape[1]
    if k < 2:
        raise ValueError(f"need at least 2 samples per condition; got {k=}")
    s = beta * clamped_log_ratio(logps, ref_logps, clip)  # (B, k)
    s = torch.gather(s, 1, order)  # (B, k) best first
    later = torch.ones(k, k, dtype=torch.bool, device=s.device).triu()  # j ≥ i
    competes = later.expand(s.shape[0], k, k)  # (B, i, j)
    if scores is not None:
        sc = torch.gather(scores, 1, order)  # (B, k) best first
        strictly_worse = sc[:, None, :] > sc[:, :, None]  # (B, i, j): item j worse than item i
        eye = torch.eye(k, dtype=torch.bool, device=s.device)
        competes = competes & (strictly_worse | eye)
    logits = s[:, None, :].expand(-1, k, -1).masked_fill(~competes, float("-inf"))  # (B, i, j)
    stage = s - torch.logsumexp(logits, dim=-1)  # (B, k); 0 where a stage has no competitor
    return -stage.sum(dim=1).mean()


def preference_accuracy(
    log_ratio_w: torch.Tensor, log_ratio_l: torch.Tensor, mask: torch.Tensor | None = None
) -> float:
    """Share of pairs where the model's implicit reward (log ratio) already favours the winner."""
    hit = (log_ratio_w > log_ratio_l).float()
    if mask is None:
        return hit.mean().item()
    m = torch.broadcast_to(mask, hit.shape).float()
    return ((hit * m).sum() / m.sum().clamp_min(1.0)).item()
