"""HIVE's reward model: R(input image, instruction, edited image) → scalar, learned from rankings.

    from sim2real.training.reward_model import RewardModel, fit_reward_model, load_rankings
    data = load_rankings("rankings.json")           # human (or AI-feedback) rankings of k edits per input
    rm = RewardModel(pipe, RewardModelConfig())      # a small head on the editor's frozen codec + text encoder
    history = fit_reward_model(rm, data, val=None)   # Bradley–Terry over every ranked pair of each input
    rm.score(inputs, instructions, edits)            # (B,) float, higher = better

HIVE (Sec. 3.3) ranks K edits of one (input, instruction) and trains R with the Bradley–Terry loss
over all C(K, 2) pairs of each condition in one batch: L = −mean log σ(R(x_i, c) − R(x_j, c)) for
every pair where x_i is ranked above x_j. HIVE builds R on BLIP; we have no external weights, so R is
a small head on fixed, weight-free image features and the editor's own frozen text encoder (FiLM by
the instruction's mean hidden state). The default features (`features=stats`) are pooled statistics
of Lab colour, Sobel edge magnitude and their input→edit differences at three scales — what the
AI feedback's texture and Canny scores look at; `features=latents` is a conv head on the editor's
frozen codec latents instead (at chance on held-out inputs in docs/hive.md). The training epoch is
picked on inputs carved from the training set, never on held-out ones.
BT only fixes reward differences between edits of the SAME input; the offset per input is free.

Rankings file (`sim2real-rankings/1`), paths relative to the JSON file, images any size/mode:

    {"format": "sim2real-rankings/1",
     "groups": [
       {"input": "g0000/input.png",
        "instruction": "make the table look like a real wooden table",
        "edits": ["g0000/edit_0.png", "g0000/edit_1.png", "g0000/edit_2.png"],
        "ranking": [[2], [0, 1]]}
     ]}

`ranking` lists the edits' indices best first; an inner list is a tier of ties (a flat list
`[2, 0, 1]` is a strict order). Every edit appears exactly once; all groups have the same k.
`save_rankings` writes this layout (e.g. the AI-feedback rankings a specialist run collected), so a
person can re-rank the same edits as HIVE's annotators did and train a reward model from the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sim2real.errors import Sim2RealError

if TYPE_CHECKING:
    from sim2real.editing.pipeline import EditPipeline

logger = logging.getLogger(__name__)

RANKINGS_FORMAT = "sim2real-rankings/1"


# --- pure functions ---------------------------------------------------------------------------------------


def ranks_from_scores(
    scores: np.ndarray, tie_tol: float = 1e-6, higher_is_better: bool = False
) -> np.ndarray:
    """Scores `(N, k)` → ranks `(N, k)` int64: 0 = best, tied items share the best rank of their tier.

    Rank = number of items in the group strictly better (by more than `tie_tol`). AI-feedback totals
    are lower-is-better (default); rewards are higher-is-better.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"need scores of shape (N, k >= 2); got {s.shape}")
    s = -s if higher_is_better else s
    better = s[:, None, :] < s[:, :, None] - tie_tol  # [n, i, j]: j strictly better than i
    return better.sum(axis=2).astype(np.int64)


def _ranked_pairs(ranks: torch.Tensor) -> torch.Tensor:
    """`(N, k)` ranks → bool `(N, k, k)`: [n, i, j] is True when i is ranked strictly above j."""
    return ranks[:, :, None] < ranks[:, None, :]


def bradley_terry_loss(rewards: torch.Tensor, ranks: torch.Tensor) -> torch.Tensor:
    """HIVE's pairwise ranking loss, a scalar: mean over ranked pairs of −log σ(R_better − R_worse).

    rewards: `(N, k)` float, k edits of each of N conditions. ranks: `(N, k)` int, 0 = best; equal
    ranks are ties and form no pair. All C(k, 2) pairs of each condition share one batch (HIVE) and
    count equally. No ranked pair at all gives an exact 0 that keeps the graph.
    """
    if rewards.shape != ranks.shape or rewards.ndim != 2:
        raise ValueError(f"need (N, k) rewards and ranks; got {tuple(rewards.shape)=} {tuple(ranks.shape)=}")
    pairs = _ranked_pairs(ranks)  # (N, i, j)
    diff = rewards[:, :, None] - rewards[:, None, :]  # (N, i, j) R_i − R_j
    per = -F.logsigmoid(diff)
    w = pairs.to(per.dtype)
    return (per * w).sum() / w.sum().clamp_min(1.0)


def pairwise_agreement(rewards: np.ndarray | torch.Tensor, ranks: np.ndarray | torch.Tensor) -> float:
    """Share of ranked pairs whose reward order matches the ranking (a reward tie counts ½). NaN if none."""
    r = torch.as_tensor(np.asarray(rewards, dtype=np.float64))
    pairs = _ranked_pairs(torch.as_tensor(np.asarray(ranks)))
    d = r[:, :, None] - r[:, None, :]
    hit = (d > 0).double() + 0.5 * (d == 0).double()
    n = pairs.sum().item()
    return float((hit * pairs).sum().item() / n) if n else float("nan")


# --- rankings data ------------------------------------------------------------------------------------------


@dataclass
class RankingSet:
    """k ranked edits of each of N inputs: what the reward model learns from.

    inputs (N, H, W, 3) uint8; edits (N, k, H, W, 3) uint8; instructions: N strings;
    ranks (N, k) int64, 0 = best, ties share a rank.
    """

    inputs: np.ndarray
    edits: np.ndarray
    instructions: list[str]
    ranks: np.ndarray

    def __post_init__(self) -> None:
        n, k = self.ranks.shape
        if self.inputs.shape[0] != n or self.edits.shape[:2] != (n, k) or len(self.instructions) != n:
            raise ValueError(
                f"RankingSet sizes differ: {self.inputs.shape=} {self.edits.shape=} "
                f"{len(self.instructions)=} {self.ranks.shape=}"
            )

    def __len__(self) -> int:
        return len(self.ranks)

    def subset(self, idx: np.ndarray) -> RankingSet:
        return RankingSet(
            self.inputs[idx], self.edits[idx], [self.instructions[i] for i in idx], self.ranks[idx]
        )

    def split(self, val_fraction: float, seed: int = 0) -> tuple[RankingSet, RankingSet]:
        """Disjoint (train, held-out) by input IMAGE: groups with identical input pixels (the same frame
        drawn twice from a pool) land on the same side; held-out gets round(U·val_fraction) ≥ 1 of
        the U distinct inputs."""
        ids = _input_ids(self.inputs)
        n_unique = int(ids.max()) + 1 if len(ids) else 0
        if not 0.0 < val_fraction < 1.0 or n_unique < 2:
            raise Sim2RealError(
                f"cannot split {len(self)} groups ({n_unique} distinct inputs) with val_fraction={val_fraction}"
            )
        perm = np.random.default_rng(seed).permutation(n_unique)
        n_val = min(n_unique - 1, max(1, round(n_unique * val_fraction)))
        held = np.isin(ids, perm[:n_val])
        return self.subset(np.flatnonzero(~held)), self.subset(np.flatnonzero(held))

    def folds(self, n_folds: int, seed: int = 0) -> list[tuple[RankingSet, RankingSet]]:
        """`n_folds` (train, held-out) splits by input image (as `split`); each input is held out once."""
        ids = _input_ids(self.inputs)
        n_unique = int(ids.max()) + 1 if len(ids) else 0
        if not 2 <= n_folds <= n_unique:
            raise Sim2RealError(f"cannot make {n_folds} folds of {n_unique} distinct inputs")
        fold_of = np.empty(n_unique, np.int64)
        fold_of[np.random.default_rng(seed).permutation(n_unique)] = np.arange(n_unique) % n_folds
        held = [fold_of[ids] == f for f in range(n_folds)]
        return [(self.subset(np.flatnonzero(~h)), self.subset(np.flatnonzero(h))) for h in held]


def _input_ids(inputs: np.ndarray) -> np.ndarray:
    """`(N,)` int: equal ids for byte-identical input images, numbered by first appearance."""
    seen: dict[bytes, int] = {}
    return np.array(
        [seen.setdefault(hashlib.sha1(x.tobytes()).digest(), len(seen)) for x in inputs], np.int64
    )


def _tiers_to_ranks(ranking: list, k: int, where: str) -> np.ndarray:
    tiers = [t if isinstance(t, list) else [t] for t in ranking]
    flat = [int(i) for t in tiers for i in t]
    if sorted(flat) != list(range(k)):
        raise Sim2RealError(f"{where}: ranking must list each of the {k} edits exactly once; got {ranking}")
    ranks, pos = np.zeros(k, np.int64), 0
    for t in tiers:
        ranks[[int(i) for i in t]] = pos
        pos += len(t)
    return ranks


def load_rankings(path: str | Path, size: int = 96) -> RankingSet:
    """Read a `sim2real-rankings/1` JSON file (format in the module docstring); images to `size`²."""
    from sim2real.data.images import load_images

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise Sim2RealError(f"{path}: cannot read rankings ({e})") from e
    if doc.get("format") != RANKINGS_FORMAT or not doc.get("groups"):
        raise Sim2RealError(f"{path}: need format {RANKINGS_FORMAT!r} and a non-empty 'groups' list")
    groups = doc["groups"]
    k = len(groups[0].get("edits", []))
    if k < 2:
        raise Sim2RealError(f"{path}: each group needs at least 2 edits; group 0 has {k}")
    inputs, edits, instr, ranks = [], [], [], []
    for g_i, g in enumerate(groups):
        where = f"{path} group {g_i}"
        if len(g.get("edits", [])) != k or "input" not in g or "ranking" not in g:
            raise Sim2RealError(f"{where}: needs 'input', 'ranking' and {k} 'edits' like group 0")
        inputs.append(path.parent / g["input"])
        edits.extend(path.parent / e for e in g["edits"])
        instr.append(str(g.get("instruction", doc.get("instruction", ""))))
        ranks.append(_tiers_to_ranks(g["ranking"], k, where))
    n = len(groups)
    return RankingSet(
        load_images(inputs, size=size),
        load_images(edits, size=size).reshape(n, k, size, size, 3),
        instr,
        np.stack(ranks),
    )


def save_rankings(path: str | Path, data: RankingSet, scores: np.ndarray | None = None) -> Path:
    """Write PNGs under `<path's folder>/g0000/…` and the JSON index (optional `scores` kept per group)."""
    import cv2

    from sim2real.utils import atomic_path, write_json

    path = Path(path)
    groups = []
    for n in range(len(data)):
        sub = path.parent / f"g{n:04d}"
        sub.mkdir(parents=True, exist_ok=True)
        names = ["input.png"] + [f"edit_{j}.png" for j in range(data.edits.shape[1])]
        for name, img in zip(names, [data.inputs[n], *data.edits[n]], strict=True):
            with atomic_path(sub / name, suffix=".png") as tmp:
                cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        order = np.argsort(data.ranks[n], kind="stable")
        tiers: list[list[int]] = []
        for j in order:
            if tiers and data.ranks[n, tiers[-1][0]] == data.ranks[n, j]:
                tiers[-1].append(int(j))
            else:
                tiers.append([int(j)])
        g = {
            "input": f"{sub.name}/input.png",
            "instruction": data.instructions[n],
            "edits": [f"{sub.name}/{x}" for x in names[1:]],
            "ranking": tiers,
        }
        if scores is not None:
            g["scores"] = [float(v) for v in scores[n]]
        groups.append(g)
    write_json(path, {"format": RANKINGS_FORMAT, "groups": groups})
    return path


# --- the model ----------------------------------------------------------------------------------------------


@dataclass
class RewardModelConfig:
    """The reward head and its training. Fields you will change: `features`, `hidden`, `epochs`.

    features: what the head sees.
        `stats` (default): pooled statistics of fixed pixel maps of input and edit at `scales` —
        CIE Lab of the edit, Sobel gradient magnitude of its lightness and chroma, and the absolute
        input→edit differences of all of them; masked-free mean and standard deviation over the
        frame, standardised on the training set. No learned image weights: the k edits of one input
        differ in colour/texture statistics and edges, which is what the AI feedback scores (texture
        encoder distance, Canny edges), and a few hundred ranked inputs cannot teach a conv net that.
        `latents`: a conv head on the editor's frozen codec latents of input, edit and their
        difference (the first version; at chance on held-out inputs with 48 ranked inputs).
    scales: average-pooling factors of the `stats` maps (1 = full resolution).
    edges: `stats` also see Canny edge agreement of input and edit (`edge_statistics`): the AI
        feedback's structure score is Canny based, and these four numbers raised held-out agreement
        the most (docs/hive.md).
    hidden: `stats`: width of the one hidden layer (0 = a linear reward of the statistics);
        `latents`: channels of the conv head (and the text FiLM / MLP width).
    layers: `latents` only: 3×3 conv blocks on the latent grid after the 1×1 input projection.
    dropout: before the final linear layer.
    epochs, batch_groups: passes over the ranking groups and groups per batch (all C(k,2) pairs of a
        group are in its batch, as HIVE).
    learning_rate, weight_decay: AdamW (HIVE: 1e-4, 0.05 on BLIP's last layers).
    early_stopping: share of the TRAINING inputs set aside to pick the epoch (lowest Bradley–Terry
        loss there; the model of that epoch is kept); 0 = keep the last epoch. Never the held-out set.
    augment: `latents` only: one random dihedral view (flip/rotation) of input and edits per group
        and batch (the `stats` are (nearly) invariant to these views already).
    seed: init, batch order and the early-stopping split.
    """

    features: Literal["stats", "latents"] = "stats"
    scales: list[int] = field(default_factory=lambda: [1, 2, 4])
    edges: bool = True
    hidden: int = 16
    layers: int = 2
    dropout: float = 0.1
    epochs: int = 200
    batch_groups: int = 32
    learning_rate: float = 3e-3
    weight_decay: float = 0.05
    early_stopping: float = 0.2
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features not in ("stats", "latents"):
            raise ValueError(f"features must be stats or latents; got {self.features=}")
        if self.features == "latents" and self.hidden < 4:
            raise ValueError(f"features=latents needs hidden >= 4; got {self.hidden=}")
        if not self.scales or any(s < 1 for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of pooling factors >= 1; got {self.scales=}")
        if self.hidden < 0 or self.layers < 0 or self.epochs < 0 or self.batch_groups < 1:
            raise ValueError(
                f"need hidden >= 0, layers >= 0, epochs >= 0, batch_groups >= 1; got {self.hidden=}, "
                f"{self.layers=}, {self.epochs=}, {self.batch_groups=}"
            )
        if not 0.0 <= self.dropout < 1.0 or self.learning_rate <= 0 or not 0.0 <= self.early_stopping < 1.0:
            raise ValueError(
                f"need 0 <= dropout < 1, learning_rate > 0, 0 <= early_stopping < 1; got {self.dropout=}, "
                f"{self.learning_rate=}, {self.early_stopping=}"
            )


_LAB_SCALE = torch.tensor([50.0, 30.0, 30.0])[:, None, None]  # L 0..100 → ±1, a/b ±~100 → ±3
_LAB_CENTRE = torch.tensor([50.0, 0.0, 0.0])[:, None, None]
_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8


def lab_maps(images: np.ndarray) -> torch.Tensor:
    """uint8 RGB `(B, H, W, 3)` → CIE Lab `(B, 3, H, W)` float, about unit range."""
    import cv2

    b, h, w, _ = images.shape
    tall = np.ascontiguousarray(images.reshape(b * h, w, 3), dtype=np.float32) / 255.0
    lab = torch.from_numpy(cv2.cvtColor(tall, cv2.COLOR_RGB2LAB)).view(b, h, w, 3).permute(0, 3, 1, 2)
    return (lab - _LAB_CENTRE) / _LAB_SCALE


def sobel_magnitude(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude `(B, 1, H, W)` of `(B, C, H, W)` maps (channels summed in quadrature)."""
    b, c, h, w = x.shape
    flat = F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate")
    gx, gy = F.conv2d(flat, _SOBEL_X[None, None]), F.conv2d(flat, _SOBEL_X.T[None, None])
    return (gx**2 + gy**2).view(b, c, h, w).sum(dim=1, keepdim=True).sqrt()


EDGE_BAND_PX = 3  # the AI feedback's default structure band (`FeedbackConfig.band_px`)


def edge_statistics(inputs: np.ndarray, edits: np.ndarray) -> torch.Tensor:
    """Canny edge agreement of (input, edit) pairs, uint8 `(B, H, W, 3)` each → `(B, 4)`.

    Canny with the feedback's default settings (`CannyConfig()`) on both; the band is the input's
    edges dilated by `EDGE_BAND_PX` (on a flat sim render the input's edges ARE the object outlines).
    Columns: share of disagreeing edge pixels inside the band, over the frame, the edit's edge
    density, and the edit's edge density outside the band (new texture/structure).
    """
    import cv2

    from sim2real.feedback.structure import CannyConfig, canny_edges

    e_in, e_ed = canny_edges(inputs, CannyConfig()), canny_edges(edits, CannyConfig())  # (B, H, W) bool
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * EDGE_BAND_PX + 1,) * 2)
    band = np.stack([cv2.dilate(e.astype(np.uint8), kernel) for e in e_in]).astype(bool)
    differ = e_in != e_ed
    in_band = (differ & band).sum(axis=(1, 2)) / np.maximum(band.sum(axis=(1, 2)), 1)
    cols = [in_band, differ.mean(axis=(1, 2)), e_ed.mean(axis=(1, 2)), (e_ed & ~band).mean(axis=(1, 2))]
    return torch.tensor(np.stack(cols, axis=1), dtype=torch.float32)


def pixel_statistics(
    inputs: np.ndarray, edits: np.ndarray, scales: list[int], edges: bool = True
) -> torch.Tensor:
    """The `stats` features of (input, edit) pairs: uint8 `(B, H, W, 3)` each → `(B, 20·len(scales) + 4·edges)`.

    Per scale s (average pooling by s): ten maps — Lab of the edit (3), Sobel magnitude of its L and
    of its (a, b) chroma (2), |Lab(edit) − Lab(input)| (3), |ΔSobel L| and |ΔSobel chroma| (2) — each
    reduced to its mean and standard deviation over the frame; then `edge_statistics` if `edges`.
    Invariant to flips and 90° rotations (the Canny columns up to a few edge pixels).
    """
    x_in, x_ed = lab_maps(inputs), lab_maps(edits)  # (B, 3, H, W) each
    out = []
    for s in scales:
        a, e = (F.avg_pool2d(x_in, s), F.avg_pool2d(x_ed, s)) if s > 1 else (x_in, x_ed)
        ga = torch.cat([sobel_magnitude(a[:, :1]), sobel_magnitude(a[:, 1:])], dim=1)  # (B, 2, h, w)
        ge = torch.cat([sobel_magnitude(e[:, :1]), sobel_magnitude(e[:, 1:])], dim=1)
        maps = torch.cat([e, ge, (e - a).abs(), (ge - ga).abs()], dim=1)  # (B, 10, h, w)
        out += [maps.mean(dim=(2, 3)), maps.std(dim=(2, 3))]
    if edges:
        out.append(edge_statistics(inputs, edits))
    return torch.cat(out, dim=1)  # (B, 20·S + 4·edges)


class StatsHead(nn.Module):
    """Pixel statistics `(B, F)` + pooled text `(B, D)` → reward `(B,)`: standardise, text FiLM, MLP.

    The standardisation (`mean`, `std` buffers) is set from the training set by `fit_reward_model`
    and saved with the head. FiLM starts as the identity (zero init).
    """

    def __init__(self, n_features: int, text_dim: int, cfg: RewardModelConfig):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.film = nn.Linear(text_dim, 2 * n_features)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        h = cfg.hidden
        self.out = (
            nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(n_features, 1))
            if h == 0
            else nn.Sequential(nn.Linear(n_features, h), nn.SiLU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))
        )

    def set_standardisation(self, features: torch.Tensor) -> None:
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(self, features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = (features - self.mean) / self.std  # (B, F)
        gamma, beta = self.film(text).chunk(2, dim=-1)  # (B, F) each
        return self.out(x * (1 + gamma) + beta).squeeze(-1)  # (B,)


class RewardHead(nn.Module):
    """`latents` head: latents of input, edit and their difference `(B, 3C, h, w)` + text `(B, D)` → `(B,)`."""

    def __init__(self, latent_channels: int, text_dim: int, cfg: RewardModelConfig):
        super().__init__()
        h = cfg.hidden
        self.proj = nn.Conv2d(3 * latent_channels, h, 1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(h, h, 3, padding=1), nn.GroupNorm(min(8, h // 4) or 1, h), nn.SiLU())
            for _ in range(cfg.layers)
        )
        self.film = nn.Linear(text_dim, 2 * h)
        self.out = nn.Sequential(nn.Linear(2 * h, h), nn.SiLU(), nn.Dropout(cfg.dropout), nn.Linear(h, 1))

    def forward(self, z: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.proj(z))  # (B, h, hh, ww)
        for block in self.blocks:
            x = x + block(x)
        gamma, beta = self.film(text).chunk(2, dim=-1)  # (B, h) each
        x = x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2h)
        return self.out(pooled).squeeze(-1)  # (B,)


class RewardModel(nn.Module):
    """R(input, instruction, edit): a trainable head on fixed image features and the editor's FROZEN
    text encoder (and, for `features=latents`, its frozen codec).

    Only the head is saved (`save_pretrained`); loading needs an editor with the same text encoder
    (and codec) (`from_pretrained(folder, pipe)`), e.g. the base editor the edits came from.
    """

    def __init__(self, pipe: EditPipeline, cfg: RewardModelConfig | None = None):
        super().__init__()
        self.cfg = cfg or RewardModelConfig()
        self.pipe = pipe  # not a submodule: its weights are neither trained nor saved here
        torch.manual_seed(self.cfg.seed)
        text_dim = pipe.text_encoder.config.hidden_size
        if self.cfg.features == "stats":
            n_features = 20 * len(self.cfg.scales) + 4 * self.cfg.edges
            self.head = StatsHead(n_features, text_dim, self.cfg)
        else:
            self.head = RewardHead(pipe.codec.latent_channels, text_dim, self.cfg)
        self._text_cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def text_features(self, instructions: list[str]) -> torch.Tensor:
        """Mean hidden state of each instruction under the frozen text encoder: `(B, D)`."""
        missing = [s for s in dict.fromkeys(instructions) if s not in self._text_cache]
        if missing:
            emb = self.pipe.encode_prompt(missing).mean(dim=1).float().cpu()  # (M, D)
            self._text_cache.update(zip(missing, emb, strict=True))
        return torch.stack([self._text_cache[s] for s in instructions])

    @torch.no_grad()
    def latents(self, images: np.ndarray) -> torch.Tensor:
        """Frozen codec latents `(B, C, h, w)` of uint8 images `(B, H, W, 3)`."""
        return self.pipe.encode_image(images).float().cpu()

    @torch.no_grad()
    def image_features(self, inputs: np.ndarray, edits: np.ndarray) -> torch.Tensor:
        """What the head sees of each (input, edit): `(B, F)` statistics or `(B, 3C, h, w)` latents."""
        if self.cfg.features == "stats":
            return pixel_statistics(inputs, edits, self.cfg.scales, self.cfg.edges)
        z_in, z_ed = self.latents(inputs), self.latents(edits)
        return torch.cat([z_in, z_ed, z_ed - z_in], dim=1)

    def forward(self, inputs: np.ndarray, instructions: list[str], edits: np.ndarray) -> torch.Tensor:
        """Rewards `(B,)` with gradients into the head; images uint8 `(B, H, W, 3)`."""
        return self.head(self.image_features(inputs, edits), self.text_features(instructions))

    @torch.no_grad()
    def score(
        self, inputs: np.ndarray, instructions: list[str] | str, edits: np.ndarray, batch: int = 64
    ) -> np.ndarray:
        """Rewards `(B,)` float64 (eval mode), higher = better."""
        if isinstance(instructions, str):
            instructions = [instructions] * len(inputs)
        self.eval()
        out = [
            self(inputs[s : s + batch], instructions[s : s + batch], edits[s : s + batch]).double().numpy()
            for s in range(0, len(inputs), batch)
        ]
        return np.concatenate(out) if out else np.zeros(0)

    def score_groups(self, data: RankingSet) -> np.ndarray:
        """Rewards `(N, k)` of every edit in a ranking set."""
        n, k = data.ranks.shape
        flat = data.edits.reshape(n * k, *data.edits.shape[2:])
        instr = [s for s in data.instructions for _ in range(k)]
        return self.score(np.repeat(data.inputs, k, axis=0), instr, flat).reshape(n, k)

    def save_pretrained(self, folder: str | Path) -> Path:
        from sim2real.utils import atomic_path, write_json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "reward_head.pt", suffix=".pt") as tmp:
            torch.save(self.head.state_dict(), tmp)
        write_json(folder / "reward_model.json", {"config": self.cfg.__dict__})
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, pipe: EditPipeline) -> RewardModel:
        folder = Path(folder)
        if not (folder / "reward_model.json").exists():
            raise Sim2RealError(f"{folder} is not a reward model folder (no reward_model.json)")
        saved = json.loads((folder / "reward_model.json").read_text())["config"]
        saved.setdefault("features", "latents")  # folders written before `stats` existed
        cfg = RewardModelConfig(**saved)
        model = cls(pipe, cfg)
        try:
            model.head.load_state_dict(torch.load(folder / "reward_head.pt", map_location="cpu"))
        except RuntimeError as e:
            raise Sim2RealError(f"{folder}: reward head does not fit this editor's codec/text encoder") from e
        return model.eval()


# --- training -----------------------------------------------------------------------------------------------


def _dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """One of the 8 flips/rotations of `(..., H, W, 3)` images."""
    out = np.rot90(images, view % 4, axes=(-3, -2))
    return np.ascontiguousarray(out[..., ::-1, :] if view >= 4 else out)


@dataclass
class RewardFitHistory:
    """Per-epoch train loss and agreement, the early-stopping split's loss and agreement, held-out
    agreement when a val set is given (a curve for the record: it never picks anything), and the
    epoch whose model was kept (1-based)."""

    loss: list[float] = field(default_factory=list)
    train_agreement: list[float] = field(default_factory=list)
    stop_loss: list[float] = field(default_factory=list)
    stop_agreement: list[float] = field(default_factory=list)
    val_agreement: list[float] = field(default_factory=list)
    chosen_epoch: int = 0
    stop_groups: int = 0


class _Groups:
    """A ranking set with its image features computed once (the `stats` features, or any features when
    there is no augmentation); with augmentation the latents are recomputed per batch and view."""

    def __init__(self, model: RewardModel, data: RankingSet, cache: bool):
        self.model, self.data, self.k = model, data, data.ranks.shape[1]
        self.ranks = torch.as_tensor(data.ranks)
        self.text = model.text_features([s for s in data.instructions for _ in range(self.k)])
        self.features = self._compute(np.arange(len(data)), 0) if cache else None

    def _compute(self, idx: np.ndarray, view: int) -> torch.Tensor:
        inp = _dihedral(self.data.inputs[idx], view)  # (b, H, W, 3)
        ed = _dihedral(self.data.edits[idx], view)  # (b, k, H, W, 3)
        return self.model.image_features(np.repeat(inp, self.k, axis=0), ed.reshape(-1, *ed.shape[2:]))

    def rewards(self, idx: np.ndarray, view: int = 0) -> torch.Tensor:
        """`(len(idx), k)` rewards with gradients into the head."""
        rows = torch.as_tensor((idx[:, None] * self.k + np.arange(self.k)).reshape(-1))
        feats = self.features[rows] if self.features is not None else self._compute(idx, view)
        return self.model.head(feats, self.text[rows]).view(len(idx), self.k)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        """(Bradley–Terry loss, pairwise agreement) of the whole set in eval mode."""
        self.model.eval()
        r = torch.cat(
            [self.rewards(i) for i in np.array_split(np.arange(len(self.data)), -(-len(self.data) // 64))]
        )
        return bradley_terry_loss(r, self.ranks).item(), pairwise_agreement(r.numpy(), self.data.ranks)


def fit_reward_model(model: RewardModel, data: RankingSet, val: RankingSet | None = None) -> RewardFitHistory:
    """Train the head with the Bradley–Terry loss on `data` for `cfg.epochs`.

    With `cfg.early_stopping > 0` that share of `data`'s inputs is set aside and the epoch with the
    lowest Bradley–Terry loss on it is kept. `val` (held-out inputs) is only evaluated, never used.
    """
    with torch.random.fork_rng(devices=[]):  # dropout draws from a seeded stream; the caller's is kept
        torch.manual_seed(model.cfg.seed)
        return _fit(model, data, val)


def _fit(model: RewardModel, data: RankingSet, val: RankingSet | None) -> RewardFitHistory:
    from sim2real.utils import tqdm

    cfg = model.cfg
    stop = None
    if cfg.early_stopping > 0 and len(np.unique(_input_ids(data.inputs))) >= 4:
        data, stop = data.split(cfg.early_stopping, seed=cfg.seed + 1)
    augment = cfg.augment and cfg.features == "latents"
    sets = [_Groups(model, d, cache=not augment) for d in (data, stop, val) if d is not None]
    fit_set, stop_set = sets[0], (sets[1] if stop is not None else None)
    val_set = sets[-1] if val is not None else None
    if cfg.features == "stats":
        model.head.set_standardisation(fit_set.features)
    opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    n = len(data)
    hist = RewardFitHistory(stop_groups=0 if stop is None else len(stop))
    best = (math.inf, None)
    for epoch in tqdm(range(cfg.epochs), desc="reward model"):
        losses = []
        for idx in np.array_split(rng.permutation(n), max(1, -(-n // cfg.batch_groups))):
            model.train()
            loss = bradley_terry_loss(
                fit_set.rewards(idx, int(rng.integers(8)) if augment else 0), fit_set.ranks[idx]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        hist.loss.append(float(np.mean(losses)))
        hist.train_agreement.append(fit_set.evaluate()[1])
        if stop_set is not None:
            s_loss, s_agree = stop_set.evaluate()
            hist.stop_loss.append(s_loss)
            hist.stop_agreement.append(s_agree)
            if s_loss < best[0]:
                best = (s_loss, {k: v.clone() for k, v in model.head.state_dict().items()})
                hist.chosen_epoch = epoch + 1
        if val_set is not None:
            hist.val_agreement.append(val_set.evaluate()[1])
    if best[1] is not None:
        model.head.load_state_dict(best[1])
    else:
        hist.chosen_epoch = cfg.epochs
    model.eval()
    return hist
