"""HIVE's reward model: R(input image, instruction, edited image) → scalar, learned from rankings.

    from sim2real.training.reward_model import RewardModel, fit_reward_model, load_rankings
    data = load_rankings("rankings.json")           # human (or AI-feedback) rankings of k edits per input
    rm = RewardModel(pipe, RewardModelConfig())      # a small head on the editor's frozen codec + text encoder
    history = fit_reward_model(rm, data, val=None)   # Bradley–Terry over every ranked pair of each input
    rm.score(inputs, instructions, edits)            # (B,) float, higher = better

HIVE (Sec. 3.3) ranks K edits of one (input, instruction) and trains R with the Bradley–Terry loss
over all C(K, 2) pairs of each condition in one batch: L = −mean log σ(R(x_i, c) − R(x_j, c)) for
every pair where x_i is ranked above x_j. HIVE builds R on BLIP; we have no external weights, so R is
a small conv head on the *editor's own* frozen codec latents of the input and the edit (and their
difference), modulated (FiLM) by the frozen text encoder's mean hidden state of the instruction.
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

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
        """Disjoint (train, held-out) by input; held-out gets round(N·val_fraction) ≥ 1 groups."""
        if not 0.0 < val_fraction < 1.0 or len(self) < 2:
            raise Sim2RealError(f"cannot split {len(self)} groups with val_fraction={val_fraction}")
        perm = np.random.default_rng(seed).permutation(len(self))
        n_val = min(len(self) - 1, max(1, round(len(self) * val_fraction)))
        return self.subset(np.sort(perm[n_val:])), self.subset(np.sort(perm[:n_val]))


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
    """The reward head and its training. Fields you will change: `epochs`, `learning_rate`.

    hidden: channels of the conv head (and the text FiLM / MLP width).
    layers: 3×3 conv blocks on the latent grid after the 1×1 input projection.
    dropout: before the final linear layer.
    epochs, batch_groups: passes over the ranking groups and groups per batch (all C(k,2) pairs of a
        group are in its batch, as HIVE).
    learning_rate, weight_decay: AdamW (HIVE: 1e-4, 0.05 on BLIP's last layers).
    augment: apply one random dihedral view (flip/rotation) to input and edits together per group
        and batch; the AI-feedback scores of Push-T frames do not depend on orientation.
    seed: init and batch order.
    """

    hidden: int = 64
    layers: int = 2
    dropout: float = 0.1
    epochs: int = 60
    batch_groups: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 0.05
    augment: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden < 4 or self.layers < 0 or self.epochs < 0 or self.batch_groups < 1:
            raise ValueError(
                f"need hidden >= 4, layers >= 0, epochs >= 0, batch_groups >= 1; got {self.hidden=}, "
                f"{self.layers=}, {self.epochs=}, {self.batch_groups=}"
            )
        if not 0.0 <= self.dropout < 1.0 or self.learning_rate <= 0:
            raise ValueError(
                f"need 0 <= dropout < 1 and learning_rate > 0; got {self.dropout=}, {self.learning_rate=}"
            )


class RewardHead(nn.Module):
    """Latents of input and edit `(B, C, h, w)` each + pooled text `(B, D)` → reward `(B,)`."""

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

    def forward(self, z_in: torch.Tensor, z_edit: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.proj(torch.cat([z_in, z_edit, z_edit - z_in], dim=1)))  # (B, h, hh, ww)
        for block in self.blocks:
            x = x + block(x)
        gamma, beta = self.film(text).chunk(2, dim=-1)  # (B, h) each
        x = x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2h)
        return self.out(pooled).squeeze(-1)  # (B,)


class RewardModel(nn.Module):
    """R(input, instruction, edit): a trainable `RewardHead` on the editor's FROZEN codec and text encoder.

    Only the head is saved (`save_pretrained`); loading needs an editor with the same codec and
    text encoder (`from_pretrained(folder, pipe)`), e.g. the base editor the edits came from.
    """

    def __init__(self, pipe: EditPipeline, cfg: RewardModelConfig | None = None):
        super().__init__()
        self.cfg = cfg or RewardModelConfig()
        self.pipe = pipe  # not a submodule: its weights are neither trained nor saved here
        torch.manual_seed(self.cfg.seed)
        self.head = RewardHead(pipe.codec.latent_channels, pipe.text_encoder.config.hidden_size, self.cfg)
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

    def forward(self, inputs: np.ndarray, instructions: list[str], edits: np.ndarray) -> torch.Tensor:
        """Rewards `(B,)` with gradients into the head; images uint8 `(B, H, W, 3)`."""
        return self.head(self.latents(inputs), self.latents(edits), self.text_features(instructions))

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
        cfg = RewardModelConfig(**json.loads((folder / "reward_model.json").read_text())["config"])
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
    """Per-epoch train loss and agreement; held-out agreement when a val set is given."""

    loss: list[float] = field(default_factory=list)
    train_agreement: list[float] = field(default_factory=list)
    val_agreement: list[float] = field(default_factory=list)


def fit_reward_model(model: RewardModel, data: RankingSet, val: RankingSet | None = None) -> RewardFitHistory:
    """Train the head with the Bradley–Terry loss on `data` for `cfg.epochs`; agreement per epoch."""
    from sim2real.utils import tqdm

    cfg = model.cfg
    opt = torch.optim.AdamW(model.head.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    n, k = data.ranks.shape
    ranks = torch.as_tensor(data.ranks)
    hist = RewardFitHistory()
    for _ in tqdm(range(cfg.epochs), desc="reward model"):
        model.train()
        losses = []
        for idx in np.array_split(rng.permutation(n), max(1, -(-n // cfg.batch_groups))):
            view = int(rng.integers(8)) if cfg.augment else 0
            inp = _dihedral(data.inputs[idx], view)  # (b, H, W, 3)
            ed = _dihedral(data.edits[idx], view)  # (b, k, H, W, 3)
            r = model(
                np.repeat(inp, k, axis=0),
                [s for i in idx for s in [data.instructions[i]] * k],
                ed.reshape(len(idx) * k, *ed.shape[2:]),
            ).view(len(idx), k)
            loss = bradley_terry_loss(r, ranks[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        hist.loss.append(float(np.mean(losses)))
        hist.train_agreement.append(pairwise_agreement(model.score_groups(data), data.ranks))
        if val is not None:
            hist.val_agreement.append(pairwise_agreement(model.score_groups(val), val.ranks))
    return hist
