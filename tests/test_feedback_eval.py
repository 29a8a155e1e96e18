"""The measurements behind the feedback scores, at toy size: 2AFC triplets and auto masks on renders."""

import numpy as np

from sim2real.feedback.masks import auto_ref_masks, iou
from sim2real.feedback.texture import TextureEncoder
from sim2real.feedback.twoafc import (
    NEGATIVE_KINDS,
    ColourHistogramEncoder,
    RawPixelEncoder,
    correct,
    evaluate,
    make_triplets,
)


def test_triplets_shapes_kinds_and_masks():
    t = make_triplets(9, seed=3, size=48, kind_weights=(1, 1, 1))
    assert len(t) == 9 and t.ref.shape == (9, 48, 48, 3) and t.ref.dtype == np.uint8
    assert t.ref_mask.dtype == bool and t.ref_mask.any(axis=(1, 2)).all()
    assert set(t.kind) <= set(NEGATIVE_KINDS)
    # the negative shares the reference's state: same masks; the positive's state differs
    assert np.array_equal(t.ref_mask, t.neg_mask)
    assert not np.array_equal(t.ref_mask, t.pos_mask)
    colour = t.kind == "colour"
    assert np.all(t.delta_e[colour] >= 15)
    again = make_triplets(9, seed=3, size=48, kind_weights=(1, 1, 1))
    assert np.array_equal(t.ref, again.ref) and np.array_equal(t.neg, again.neg)  # seeded


def test_foreground_triplets_score_the_t_block():
    t = make_triplets(6, seed=2, size=64, kind_weights=(1, 1, 1), region="foreground")
    assert t.ref_mask.sum(axis=(1, 2)).max() < 0.1 * 64 * 64  # the T region, not the table
    assert np.array_equal(t.ref_mask, t.neg_mask)


def test_texture_encoder_beats_raw_pixels_on_triplets():
    t = make_triplets(24, seed=5, size=64)
    rows = {r["encoder"]: r for r in evaluate({"texture": TextureEncoder(), "raw": RawPixelEncoder()}, t)}
    assert rows["texture"]["all"] >= 0.8
    assert rows["texture"]["all"] > rows["raw"]["all"]
    ok = correct(ColourHistogramEncoder(), t)
    assert ok.shape == (24,) and ok.dtype == bool


def test_auto_masks_on_tabletop_renders():
    from envs.pusht.render import render_state

    rng = np.random.default_rng(0)
    states = [np.array([100, 400, 250, 200, a]) for a in (0.3, 1.5, -2.0)]
    frames = [render_state(s, "tabletop", size=96, rng=rng) for s in states]
    imgs, labels = np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames])
    pred = auto_ref_masks(imgs)
    # the renderer draws the T ~0.5 px fatter than its label map, which caps T IoU near 0.8 at 96 px
    assert np.all(iou(pred == 1, labels == 1) > 0.7)
    assert np.all(iou(pred == 0, labels == 0) > 0.95)
    assert np.all(iou(pred == 2, labels == 2) > 0.3)
