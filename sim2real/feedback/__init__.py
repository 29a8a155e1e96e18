"""AI feedback: structure scores, semantic encoders and score, region masks, ranking.

from sim2real.feedback import FeedbackConfig, FeedbackScorer
scorer = FeedbackScorer(FeedbackConfig(), refs, ref_labels)
out = scorer(inputs, edits, input_labels, edit="background")   # out["total"]: lower is better
"""

from sim2real.feedback.masks import auto_ref_masks, load_ref_masks, region_mask, write_mask_overlay
from sim2real.feedback.ranking import (
    advantages,
    combined_total,
    full_ordering,
    pairwise_preferences,
    pareto_preferences,
)
from sim2real.feedback.score import FeedbackConfig, FeedbackScorer, score_edits
from sim2real.feedback.semantic import get_encoder, semantic_score
from sim2real.feedback.structure import CannyConfig, DepthStructure, canny_score, chamfer_score

__all__ = [
    "CannyConfig",
    "DepthStructure",
    "FeedbackConfig",
    "FeedbackScorer",
    "advantages",
    "auto_ref_masks",
    "canny_score",
    "chamfer_score",
    "combined_total",
    "full_ordering",
    "get_encoder",
    "load_ref_masks",
    "pairwise_preferences",
    "pareto_preferences",
    "region_mask",
    "score_edits",
    "semantic_score",
    "write_mask_overlay",
]
