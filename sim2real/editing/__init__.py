"""The editor: InstructPix2Pix with a visual prompt, three-way guidance and log-prob samplers."""

from sim2real.editing.guidance import (
    GuidanceScales,
    conditioning_dropout,
    three_way_guidance,
    two_way_guidance,
)
from sim2real.editing.model import EditorConfig, build_editor
from sim2real.editing.pipeline import Conditions, EditPipeline, EditPipelineOutput
from sim2real.editing.samplers import ddim_step_log_prob, euler_ancestral_step_log_prob, step_log_prob

__all__ = [
    "Conditions",
    "EditPipeline",
    "EditPipelineOutput",
    "EditorConfig",
    "GuidanceScales",
    "build_editor",
    "conditioning_dropout",
    "ddim_step_log_prob",
    "euler_ancestral_step_log_prob",
    "step_log_prob",
    "three_way_guidance",
    "two_way_guidance",
]
