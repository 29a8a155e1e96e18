"""Structure and semantic scores: zero for identical images, grow with the change they measure."""

import numpy as np
import pytest
import torch

from sim2real.errors import Sim2RealError
from sim2real.feedback.semantic import (
    DREAMSIM_FILES,
    DreamSimEncoder,
    TransformersImageEncoder,
    cosine_distance,
    get_encoder,
    semantic_score,
)
from sim2real.feedback.structure import CannyConfig, DepthStructure, boundary_band, canny_score, chamfer_score
from sim2real.feedback.texture import TextureEncoder


def scene(fg=(230, 120, 40), bg=(150, 110, 70), shift=0, size=48, b=2):
    """A square 'block' on a flat table, batch of b identical frames."""
    img = np.empty((b, size, size, 3), np.uint8)
    img[:] = bg
    img[:, 14 + shift : 34 + shift, 12:30] = fg
    return img


def stripes(c1, c2, period, size=48, b=1, vertical=True, phase=0):
    x = np.arange(size)
    band = ((x + phase) // period) % 2
    field = band[None, :] if vertical else band[:, None]
    field = np.broadcast_to(field, (size, size))
    img = np.where(field[..., None] == 1, np.array(c2, np.uint8), np.array(c1, np.uint8))
    return np.repeat(img[None], b, axis=0).astype(np.uint8)


# ---- structure ---------------------------------------------------------------------------------------


def test_canny_zero_for_identical_and_grows_with_change():
    a = scene()
    assert np.all(canny_score(a, a) == 0)
    small, big = scene(shift=3), scene(shift=10)
    s_small, s_big = canny_score(a, small), canny_score(a, big)
    assert np.all(s_small > 0) and np.all(s_big > s_small)
    assert canny_score(a, a).shape == (2,)


def test_canny_ignores_colour_change_that_keeps_edges():
    a = scene(fg=(230, 120, 40), bg=(150, 110, 70))
    recoloured = scene(fg=(40, 90, 220), bg=(200, 200, 200))  # every colour changes, the edges do not
    assert np.all(canny_score(a, recoloured) == 0)
    assert np.all(canny_score(a, scene(shift=2)) > 0)


def test_chamfer_forgives_one_pixel_shift_that_canny_punishes():
    a, shifted = scene(), scene(shift=1)
    assert np.all(canny_score(a, shifted) > 0.01)
    assert np.all(chamfer_score(a, shifted, tolerance_px=1.5) == 0)
    assert np.all(chamfer_score(a, a) == 0)
    far = chamfer_score(a, scene(shift=8), tolerance_px=1.5)
    assert np.all(far > 1.0)  # a real displacement still costs (pixels beyond the tolerance)
    flat = np.full_like(a, 120)
    assert np.allclose(
        chamfer_score(a, flat, max_px=10.0), 5.0
    )  # all edges missing, none spurious: (10 + 0) / 2


def test_canny_blur_and_thresholds_in_config():
    rng = np.random.default_rng(0)
    a = scene()
    noisy = np.clip(a.astype(int) + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    raw = canny_score(a, noisy, CannyConfig(blur_ksize=0, low=20, high=40))
    blurred = canny_score(a, noisy, CannyConfig(blur_ksize=5, low=50, high=150))
    assert np.all(blurred < raw)
    with pytest.raises(ValueError, match="blur_ksize"):
        CannyConfig(blur_ksize=4)
    with pytest.raises(ValueError, match="low <= high"):
        CannyConfig(low=200, high=100)


def test_structure_mask_restricts_the_average():
    a, b = scene(), scene(shift=3)
    labels = np.zeros(a.shape[:3], np.uint8)
    labels[:, 14:34, 12:30] = 1
    band = boundary_band(labels, width=2)
    far = np.zeros_like(band)
    far[:, :6, :6] = True  # a corner far from any edge
    assert np.all(canny_score(a, b, mask=band) > canny_score(a, b))
    assert np.all(canny_score(a, b, mask=far) == 0)


def test_depth_structure_with_tiny_random_model(tmp_path):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=28,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=4,
        reassemble_hidden_size=16,
    )
    DepthAnythingForDepthEstimation(cfg).save_pretrained(tmp_path / "depth")
    depth = DepthStructure.from_pretrained(tmp_path / "depth", input_size=28)
    a = scene(size=32)
    assert np.allclose(depth(a, a), 0)
    rng = np.random.default_rng(0)
    other = rng.integers(0, 255, a.shape, dtype=np.uint8)
    s = depth(a, other)
    assert s.shape == (2,) and np.all(s > 0)
    with pytest.raises(Sim2RealError, match="config.json"):
        DepthStructure.from_pretrained(tmp_path / "missing")


# ---- semantic ----------------------------------------------------------------------------------------


def full(b, size=48):
    return np.ones((b, size, size), bool)


def test_texture_encoder_identical_zero_and_orders_changes():
    enc = TextureEncoder()
    ref = stripes((150, 110, 70), (110, 80, 50), 4)
    same_other_phase = stripes((150, 110, 70), (110, 80, 50), 4, phase=2)
    other_colour = stripes((70, 110, 150), (50, 80, 110), 4)
    other_texture = stripes((150, 110, 70), (110, 80, 50), 12, vertical=False)
    e = enc.embed(np.concatenate([ref, same_other_phase, other_colour, other_texture]), full(4))
    d = cosine_distance(e[:1], e)[0]
    assert d[0] == pytest.approx(0, abs=1e-6)
    assert d[1] < d[2] and d[1] < d[3]


def test_texture_encoder_uses_only_masked_pixels():
    enc = TextureEncoder()
    a = stripes((150, 110, 70), (110, 80, 50), 4)
    b = a.copy()
    b[:, :, 24:] = (0, 200, 0)  # change only the right half
    left = np.zeros((1, 48, 48), bool)
    left[:, :, :20] = True
    assert np.allclose(enc.embed(a, left), enc.embed(b, left), atol=1e-6)
    assert not np.allclose(enc.embed(a, full(1)), enc.embed(b, full(1)), atol=1e-3)


def test_semantic_score_parts_and_reduce():
    enc = get_encoder("texture")
    inp = scene(b=2)
    m = np.zeros(inp.shape[:3], bool)
    m[:, :, 32:] = True  # the region the edit should repaint
    refs = stripes((90, 60, 40), (60, 40, 20), 3, b=3)
    ref_masks = full(3)
    good = inp.copy()
    good[:, :, 32:] = refs[0, :, 32:]
    leaky = good.copy()
    leaky[:, :, :32] = 255  # also repaints the part that must stay: the λ term notices
    s_inp = semantic_score(inp, inp, m, enc, refs, ref_masks)
    s_good = semantic_score(inp, good, m, enc, refs, ref_masks)
    parts = semantic_score(inp, leaky, m, enc, refs, ref_masks, lam=0.05, return_parts=True)
    assert np.all(s_good < s_inp)
    assert np.allclose(parts["sem"], parts["dist"] + 0.05 * parts["recon"])
    assert np.all(parts["recon"] > 0) and np.all(parts["sem"] > s_good)
    emb = enc.embed(refs, ref_masks)
    assert np.allclose(semantic_score(inp, good, m, enc, ref_embeddings=emb), s_good)
    s_min = semantic_score(inp, good, m, enc, ref_embeddings=emb, reduce="min")
    assert np.all(s_min <= s_good + 1e-9)
    # identical to the ref itself, nothing outside the mask: zero
    assert np.allclose(semantic_score(refs, refs, ref_masks, enc, refs, ref_masks)[0], 0, atol=1e-6)


class StandInDreamSim:
    """Mimics dreamsim's model: `.embed((B, 3, 224, 224) in [0, 1]) -> (B, D)`."""

    def __init__(self):
        self.seen = []

    def embed(self, x):
        self.seen.append(tuple(x.shape))
        assert x.min() >= 0 and x.max() <= 1
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_dreamsim_adapter_with_stand_in_model():
    model = StandInDreamSim()
    enc = DreamSimEncoder(model)
    a = scene(b=2)
    mask = np.zeros(a.shape[:3], bool)
    mask[:, 14:34, 12:30] = True
    e = enc.embed(a, mask)
    assert e.shape == (2, 6) and model.seen == [(2, 3, 224, 224)]
    b = a.copy()
    b[:, :5] = 0  # outside the mask: the model sees m ⊙ I, so nothing changes
    assert np.allclose(enc.embed(b, mask), e)


def test_dreamsim_missing_weights_error_lists_files(tmp_path):
    with pytest.raises(Sim2RealError) as err:
        get_encoder("dreamsim", path=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert all(f in msg for f in DREAMSIM_FILES)
    with pytest.raises(Sim2RealError, match="encoder_path"):
        get_encoder("dreamsim", path=None)


@pytest.mark.parametrize("kind", ["dinov2", "clip"])
def test_transformers_encoders_tiny_random(kind, tmp_path):
    torch.manual_seed(0)
    if kind == "dinov2":
        from transformers import Dinov2Config, Dinov2Model

        model = Dinov2Model(
            Dinov2Config(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=28,
                patch_size=14,
            )
        )
    else:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        model = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=16,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=32,
                image_size=28,
                patch_size=14,
                projection_dim=8,
            )
        )
    model.save_pretrained(tmp_path / kind)
    enc = get_encoder(kind, path=tmp_path / kind)
    assert isinstance(enc, TransformersImageEncoder) and enc.size == 28
    a = scene(b=2)
    e = enc.embed(a, full(2))
    assert e.shape == (2, 16 if kind == "dinov2" else 8) and np.isfinite(e).all()
    other = enc.embed(scene(fg=(0, 0, 255), bg=(255, 255, 255), b=2), full(2))
    assert cosine_distance(e, e).diagonal() == pytest.approx(0, abs=1e-5)
    assert np.all(cosine_distance(e, other).diagonal() > 0)
    with pytest.raises(Sim2RealError, match="config.json"):
        get_encoder(kind, path=tmp_path / "nothing")


def test_unknown_encoder():
    with pytest.raises(Sim2RealError, match="unknown encoder"):
        get_encoder("lpips")


# ---- bad inputs --------------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors():
    a = scene()
    with pytest.raises(Sim2RealError, match="image sizes differ"):
        canny_score(a, scene(size=40))
    with pytest.raises(Sim2RealError, match="batch sizes differ"):
        canny_score(a, scene(b=3))
    with pytest.raises(Sim2RealError, match="dtype"):
        canny_score(a.astype(np.int32), a)
    nan = a.astype(np.float32) / 255
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(Sim2RealError, match="NaN"):
        canny_score(nan, a)
    with pytest.raises(Sim2RealError, match=r"\[0, 1\]"):
        canny_score(a.astype(np.float32), a)
    with pytest.raises(Sim2RealError, match="channels-last"):
        canny_score(a.transpose(0, 3, 1, 2), a)
    enc = TextureEncoder()
    empty = np.zeros(a.shape[:3], bool)
    with pytest.raises(Sim2RealError, match="mask 0 is empty"):
        enc.embed(a, empty)
    with pytest.raises(Sim2RealError, match="image sizes differ"):
        enc.embed(a, np.ones((2, 40, 40), bool))
    with pytest.raises(Sim2RealError, match="bool"):
        enc.embed(a, np.full(a.shape[:3], 3, np.uint8))
    # float input in [0, 1] is accepted and equals the uint8 result
    assert np.allclose(canny_score(a.astype(np.float32) / 255, a), 0)


def test_stacked_filtering_matches_per_frame_opencv():
    import cv2

    from sim2real.feedback.texture import _BANK, _filter

    rng = np.random.default_rng(0)
    x = rng.random((3, 20, 17), dtype=np.float32)
    got = _filter(x, _BANK[:3])  # (B, K, h, w)
    for b in range(3):
        for k in range(3):
            want = cv2.filter2D(x[b], cv2.CV_32F, _BANK[k], borderType=cv2.BORDER_REFLECT_101)
            assert np.allclose(got[b, k], want, atol=1e-5)
