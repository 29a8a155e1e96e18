"""One call for the trainer: structure + semantic scores of a batch of edits, and their z-normalised total.

    cfg = FeedbackConfig()                                   # configs/feedback/default.yaml
    scorer = FeedbackScorer(cfg, refs, ref_labels)           # embeds the reference frames once
    out = scorer(inputs, edits, input_labels, edit="background")
    out["total"]                                             # (B,) Â_struct + α·Â_sem, lower is better

`score_edits(...)` is the same as a single function (it re-embeds the refs on each call).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from sim2real.errors import Sim2RealError
from sim2real.feedback._checks import as_labels, as_uint8_images, same_batch
from sim2real.feedback.masks import EditKind, region_mask
from sim2real.feedback.ranking import advantages
from sim2real.feedback.semantic import ENCODERS, Encoder, get_encoder, semantic_score
from sim2real.feedback.structure import CannyConfig, DepthStructure, boundary_band, canny_score, chamfer_score
from sim2real.feedback.texture import TextureEncoderConfig

logger = logging.getLogger(__name__)


@dataclass
class FeedbackConfig:
    """How edits are scored. The fields you will change: `structure`, `encoder`/`encoder_path`, `lam`, `alpha`.

    structure: `canny` (paper, sim-to-real), `chamfer` (shift-tolerant Canny), `depth` (photos; needs
        `depth_path`).
    structure_region: `frame` scores the whole image (paper); `boundary` only a band of
        `band_px` around the label outlines of the input, so texture edges inside the table are free.
    canny: edge detector settings (pre-blur, thresholds), used by `canny` and `chamfer`.
    chamfer_tolerance_px / chamfer_max_px: free edge displacement, and the cap on the per-edge cost.
    depth_path: local Depth-Anything folder for `structure=depth`.
    encoder: semantic encoder (`texture` needs no weights). encoder_path: DreamSim cache_dir or the
        DINOv2/CLIP folder. texture: block weights of the `texture` encoder.
    lam: λ of the pixel reconstruction term outside the edited region (paper 0.05; SPIE's code 0.5).
    alpha: α in `Â_struct + α·Â_sem`.
    reduce_refs: combine the distances to the R reference frames by `mean` or `min`.
    eps: ε of the z-normalisation.
    """

    structure: Literal["canny", "chamfer", "depth"] = "canny"
    structure_region: Literal["frame", "boundary"] = "frame"
    band_px: int = 3
    canny: CannyConfig = field(default_factory=CannyConfig)
    chamfer_tolerance_px: float = 1.5
    chamfer_max_px: float = 10.0
    depth_path: str | None = None
    encoder: Literal["texture", "dreamsim", "dinov2", "clip"] = "texture"
    encoder_path: str | None = None
    texture: TextureEncoderConfig = field(default_factory=TextureEncoderConfig)
    lam: float = 0.05
    alpha: float = 1.0
    reduce_refs: Literal["mean", "min"] = "mean"
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.structure not in ("canny", "chamfer", "depth"):
            raise ValueError(f"structure must be canny, chamfer or depth; got {self.structure=}")
        if self.structure == "depth" and not self.depth_path:
            raise ValueError("structure=depth needs depth_path (a local Depth-Anything folder)")
        if self.structure_region not in ("frame", "boundary"):
            raise ValueError(f"structure_region must be frame or boundary; got {self.structure_region=}")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}; got {self.encoder=}")
        if self.encoder != "texture" and not self.encoder_path:
            raise ValueError(f"encoder={self.encoder} needs encoder_path (local weights folder)")
        if self.lam < 0 or self.alpha < 0 or self.band_px < 1:
            raise ValueError(
                f"need lam >= 0, alpha >= 0, band_px >= 1; got {self.lam=}, {self.alpha=}, {self.band_px=}"
            )
        if self.reduce_refs not in ("mean", "min"):
            raise ValueError(f"reduce_refs must be mean or min; got {self.reduce_refs=}")


class FeedbackScorer:
    """Holds the encoder, the depth model (if any) and the reference embeddings per edit kind."""

    def __init__(self, cfg: FeedbackConfig, refs: Any, ref_labels: Any, encoder: Encoder | None = None):
        self.cfg = cfg
        self.refs = as_uint8_images(refs, "refs")
        self.ref_labels = as_labels(ref_labels, "ref_labels")
        same_batch(self.refs, self.ref_labels, "refs vs ref_labels")
        self.encoder = encoder or get_encoder(cfg.encoder, cfg.encoder_path, texture=cfg.texture)
        self.depth = DepthStructure.from_pretrained(cfg.depth_path) if cfg.structure == "depth" else None
        self._ref_emb: dict[str, np.ndarray] = {}

    def ref_embeddings(self, edit: EditKind) -> np.ndarray:
        if edit not in self._ref_emb:
            self._ref_emb[edit] = self.encoder.embed(self.refs, region_mask(self.ref_labels, edit))
        return self._ref_emb[edit]

    def structure(self, inputs: np.ndarray, edits: np.ndarray, input_labels: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        mask = boundary_band(input_labels, cfg.band_px) if cfg.structure_region == "boundary" else None
        if cfg.structure == "canny":
            return canny_score(inputs, edits, cfg.canny, mask=mask)
        if cfg.structure == "chamfer":
            return chamfer_score(inputs, edits, cfg.canny, mask, cfg.chamfer_tolerance_px, cfg.chamfer_max_px)
        return self.depth(inputs, edits, mask=mask)

    def __call__(self, inputs: Any, edits: Any, input_labels: Any, edit: EditKind) -> dict[str, np.ndarray]:
        """Scores of B edits. Returns dict of `(B,)` float64 arrays:

        struct, sem (= dist + λ·recon), dist, recon, adv_struct, adv_sem, total (= adv_struct + α·adv_sem).
        Advantages are z-normalised over this batch, so pass every sample that is being compared at once.
        """
        inputs = as_uint8_images(inputs, "inputs")
        edits = as_uint8_images(edits, "edits")
        labels = as_labels(input_labels, "input_labels")
        same_batch(inputs, edits, "inputs vs edits")
        same_batch(inputs, labels, "inputs vs input_labels")
        in_masks = region_mask(labels, edit)
        struct = self.structure(inputs, edits, labels)
        parts = semantic_score(
            inputs,
            edits,
            in_masks,
            self.encoder,
            ref_embeddings=self.ref_embeddings(edit),
            lam=self.cfg.lam,
            reduce=self.cfg.reduce_refs,
            return_parts=True,
        )
        adv_struct = advantages(struct, self.cfg.eps)
        adv_sem = advantages(parts["sem"], self.cfg.eps)
        return {
            "struct": struct,
            **parts,
            "adv_struct": adv_struct,
            "adv_sem": adv_sem,
            "total": adv_struct + self.cfg.alpha * adv_sem,
        }


def score_edits(
    inputs: Any,
    edits: Any,
    input_labels: Any,
    refs: Any,
    ref_labels: Any,
    edit: EditKind,
    cfg: FeedbackConfig | None = None,
) -> dict[str, np.ndarray]:
    """Score a batch of edits against the reference frames; see `FeedbackScorer.__call__`."""
    if edit not in ("background", "foreground"):
        raise Sim2RealError(f"edit must be 'background' or 'foreground'; got {edit!r}")
    return FeedbackScorer(cfg or FeedbackConfig(), refs, ref_labels)(inputs, edits, input_labels, edit)
