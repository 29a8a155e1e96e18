"""The base editor: edit-pair generator, training recipe, shipped weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.pusht.appearance import in_held_out_band
from sim2real.data.pairs import (
    BACKGROUND_TEMPLATES,
    FOREGROUND_TEMPLATES,
    EditPairGenerator,
    edit_coverage,
    edit_region,
    instruction_vocabulary,
)
from sim2real.editing.model import EditorConfig
from sim2real.training.base_editor import (
    PairStream,
    PretrainEditorConfig,
    _protect_mask,
    eval_pairs,
    export,
    load_base_editor,
    setup,
    train_step,
)
from sim2real.training.editor_metrics import pair_metrics


def test_pairs_are_deterministic_and_masked():
    a, b = EditPairGenerator(seed=3).batch(6), EditPairGenerator(seed=3).batch(6)
    for key in ("input", "target", "labels", "edit_mask"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["instruction"] == b["instruction"]
    c = EditPairGenerator(seed=4).batch(6)
    assert not np.array_equal(a["input"], c["input"])
    for i, kind in enumerate(a["kind"]):
        np.testing.assert_array_equal(a["edit_mask"][i], edit_region(a["labels"][i], kind))
        outside = ~a["edit_mask"][i]
        # everything outside the edited region is the same rendering (shared noise, same lighting);
        # only anti-aliased / blurred boundary pixels may differ
        diff = np.abs(a["input"][i].astype(int) - a["target"][i].astype(int)).max(-1)
        assert (diff[outside] > 8).mean() < 0.05
        assert (diff[a["edit_mask"][i]] > 8).mean() > 0.2  # the edit region really changes


def test_instructions_cover_both_edit_kinds_and_name_the_change():
    gen = EditPairGenerator(seed=0, kinds=("background", "foreground"))
    pairs = [gen.sample() for _ in range(40)]
    kinds = {p.kind for p in pairs}
    assert kinds == {"background", "foreground"}
    for p in pairs:
        words = p.instruction.split()
        if p.kind == "background":
            assert any(w in p.instruction for w in ("table", "background", "surface"))
        else:
            assert any(w in words for w in ("t", "block", "t-shaped"))
    assert len(BACKGROUND_TEMPLATES) >= 3 and len(FOREGROUND_TEMPLATES) >= 3
    vocab = set(instruction_vocabulary())
    for p in pairs:
        assert set(p.instruction.split()) <= vocab | {
            w for p in pairs for w in p.instruction.split() if "-" in w
        }


def test_fine_words_change_only_the_instruction():
    coarse = EditPairGenerator(seed=5, fine_words=0.0).batch(12)
    fine = EditPairGenerator(seed=5, fine_words=1.0).batch(12)
    mixed = EditPairGenerator(seed=5).batch(12)
    for key in ("input", "target", "labels", "edit_mask"):  # same states, looks and renderings
        np.testing.assert_array_equal(coarse[key], fine[key])
        np.testing.assert_array_equal(coarse[key], mixed[key])
    assert set(coarse["detail"]) == {"coarse"} and set(fine["detail"]) == {"fine"}
    assert set(mixed["detail"]) == {"coarse", "fine"}
    for i, d in enumerate(mixed["detail"]):
        assert mixed["instruction"][i] == (coarse if d == "coarse" else fine)["instruction"][i]
    # fine words say more: some instructions differ, and they use words the coarse ones never do
    assert sum(c != f for c, f in zip(coarse["instruction"], fine["instruction"], strict=True)) >= 6
    extra = {"very", "muted", "bright"}
    assert not extra & {w for t in coarse["instruction"] for w in t.split()}
    assert extra & {w for t in fine["instruction"] for w in t.split()}
    assert extra <= set(instruction_vocabulary())
    with pytest.raises(ValueError, match="fine_words"):
        EditPairGenerator(fine_words=1.5)


def test_only_the_edited_parts_share_of_a_pixel_changes():
    # a table edit changes nothing else: not the T's pattern (its seed used to follow the table's),
    # not the goal marker (the shadow falling on it used to be redrawn with the table)
    gen = EditPairGenerator(seed=2, kinds=("background", "both"), with_coverage=True)
    seen = {"textured t": 0, "shadow": 0, "walls changed": 0}
    for _ in range(60):
        p = gen.sample()
        assert p.coverage.shape == (2, 96, 96) and p.coverage.dtype == np.float32
        assert 0 <= p.coverage.min() and p.coverage.max() <= 1
        if p.kind == "background":
            assert p.coverage[1].max() == 0  # the T is not part of a table edit
            seen["textured t"] += p.source.t_texture != "none"
            seen["shadow"] += p.source.shadow_strength > 0
            seen["walls changed"] += p.source.wall_color != p.target_appearance.wall_color
        untouched = p.coverage.sum(0) == 0
        diff = np.abs(p.input.astype(int) - p.target.astype(int)).max(-1)
        if p.kind == "background":
            assert diff[untouched].max() <= 1, p.instruction  # rounding only
        else:  # a T edit may add an edge line, which reaches half a pixel past the T's outline
            assert (diff[untouched] > 1).mean() < 0.02, p.instruction
        share = p.coverage.sum(0)
        assert ((share > 0.02) & (share < 0.98)).sum() > 20  # rims are fractions
        # the 0/1 edit region is the share rounded, up to the rims (walls count as table)
        assert ((share > 0.5) == p.edit_mask).mean() > 0.97
    assert seen["textured t"] >= 2 and seen["shadow"] >= 2 and seen["walls changed"] >= 2
    # asking for coverage draws nothing extra: the same pairs
    a = EditPairGenerator(seed=2, kinds=("background", "both")).batch(3)
    b = EditPairGenerator(seed=2, kinds=("background", "both"), with_coverage=True).batch(3)
    for key in ("input", "target", "labels"):
        np.testing.assert_array_equal(a[key], b[key])
    assert b["coverage"].shape == (3, 2, 96, 96)
    p = EditPairGenerator(seed=2, kinds=("foreground",)).sample()
    with pytest.raises(ValueError, match="kind must be one of"):
        edit_coverage(np.zeros(5), p.source, "nothing")


def test_training_generator_never_samples_the_held_out_band():
    gen = EditPairGenerator(seed=11)
    for _ in range(150):
        p = gen.sample()
        assert not in_held_out_band(p.target_appearance)
        assert not in_held_out_band(p.source)


def test_protect_mask_marks_unedited_objects_only():
    labels = np.array([[0, 1, 2, 3]], np.uint8)
    np.testing.assert_array_equal(_protect_mask(labels, labels == 0), [[0, 1, 1, 1]])
    np.testing.assert_array_equal(_protect_mask(labels, labels == 1), [[0, 0, 1, 1]])


def _tiny_cfg(tmp_path, **kw) -> PretrainEditorConfig:
    editor = EditorConfig(resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32)
    return PretrainEditorConfig(
        out=str(tmp_path), editor=editor, batch_size=4, lr=3e-3, warmup_steps=0, dropout_p=0.0, **kw
    )


def test_one_training_step_lowers_the_loss_on_a_fixed_batch(tmp_path):
    torch.manual_seed(0)
    cfg = _tiny_cfg(tmp_path, style_prob=0.5)
    state = setup(cfg)
    batch = next(iter(torch.utils.data.DataLoader(PairStream(cfg), batch_size=4)))

    def loss_at_fixed_noise() -> float:
        torch.manual_seed(123)  # same timesteps and noise for both measurements
        with torch.no_grad():
            pipe = state.pipe
            z_in, z_tgt = pipe.codec.encode(batch["input"]), pipe.codec.encode(batch["target"])
            x0 = pipe.to_diffusion_space(z_tgt, z_in)
            text = pipe.encode_prompt(list(batch["instruction"]))
            t = torch.randint(0, 1000, (4,))
            z_t = pipe.scheduler.add_noise(x0, torch.randn_like(x0), t)
            pred = pipe.model_output(z_t, t, z_in, None, text)
            return float(((pred - x0) ** 2).mean())

    before = loss_at_fixed_noise()
    for _ in range(3):
        info = train_step(cfg, state, batch)
        assert np.isfinite(info["loss"])
    assert loss_at_fixed_noise() < before


def test_shipped_base_editor_edits_a_frame_on_cpu():
    from envs.pusht.render import render_state

    pipe = load_base_editor()
    assert pipe.config.parameterization == "residual"
    assert pipe.refiner is not None  # the full-resolution refiner ships with it
    assert pipe.refiner.text_film is not None  # and reads the instruction
    frame, _ = render_state(np.array([120.0, 380.0, 250.0, 260.0, 0.6]), "sim")
    out = pipe(
        frame,
        "turn the t-shaped block orange",
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    ).images
    assert out.shape == (1, 96, 96, 3) and out.dtype == np.uint8
    assert np.abs(out[0].astype(int) - frame.astype(int)).mean() > 0.5  # it did something


def test_missing_base_editor_folder_is_a_clear_error(tmp_path):
    from sim2real.errors import Sim2RealError

    with pytest.raises(Sim2RealError, match="no base editor"):
        load_base_editor(tmp_path / "nope")


def test_refiner_starts_as_identity_and_trains_alone(tmp_path):
    """A refiner added to a trained editor changes nothing at first; training it leaves the rest frozen."""
    from sim2real.editing.model import build_editor

    torch.manual_seed(0)
    base_cfg = _tiny_cfg(tmp_path / "base", style_prob=0.0)
    base = build_editor(base_cfg.editor)
    base.save_pretrained(tmp_path / "init")
    record = {"history": [{"stage": 1, "what": "unet"}], "total_steps": 7, "note": "made here"}
    (tmp_path / "init" / "TRAINING.json").write_text(json.dumps(record))
    cfg = _tiny_cfg(
        tmp_path / "run",
        style_prob=0.0,
        init=str(tmp_path / "init"),
        train_modules=["refiner"],
        protect_pixels=True,
    )
    cfg.editor.refiner_channels = 8
    state = setup(cfg)
    pipe = state.pipe
    assert pipe.refiner is not None and pipe.config.refiner_channels == 8
    frames = EditPairGenerator(seed=1, size=32).batch(2)

    def edit(p):
        return p(
            frames["input"],
            frames["instruction"],
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(0),
            progress=False,
        ).images

    np.testing.assert_array_equal(edit(pipe), edit(base))  # zero-initialised output: identity
    frozen = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    refiner_before = {k: v.clone() for k, v in pipe.refiner.state_dict().items()}
    batch = next(iter(torch.utils.data.DataLoader(PairStream(cfg), batch_size=4)))
    for _ in range(2):
        assert np.isfinite(train_step(cfg, state, batch)["loss"])
    for k, v in pipe.unet.state_dict().items():
        torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert any(not torch.equal(v, refiner_before[k]) for k, v in pipe.refiner.state_dict().items())
    # the exported editor keeps the init editor's record and appends this stage
    state.step = 2
    info = json.loads((export(cfg, state, tmp_path / "out") / "TRAINING.json").read_text())
    assert [h["stage"] for h in info["history"]] == [1, 2] and info["note"] == "made here"
    assert info["history"][-1]["what"].startswith("refiner") and info["total_steps"] == 7 + 2


def test_text_refiner_grows_from_a_text_blind_one_and_reads_the_instruction(tmp_path):
    """`editor.refiner_text=true` on an editor with a trained text-blind refiner keeps its weights
    (same edits at first); once the text path has learned, the instruction changes the correction."""
    from sim2real.editing.model import build_editor
    from sim2real.editing.pipeline import EditPipeline

    torch.manual_seed(0)
    ecfg = EditorConfig(
        resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32, refiner_channels=8
    )
    base = build_editor(ecfg)
    torch.nn.init.normal_(base.refiner.conv_out.weight, std=0.1)  # a "trained" text-blind refiner
    base.save_pretrained(tmp_path / "init")
    cfg = _tiny_cfg(tmp_path / "run", style_prob=0.0, init=str(tmp_path / "init"), train_modules=["refiner"])
    cfg.editor.refiner_channels, cfg.editor.refiner_text = 8, True
    pipe = setup(cfg).pipe
    assert pipe.config.refiner_text and pipe.refiner.text_film is not None
    for k, v in base.refiner.state_dict().items():
        torch.testing.assert_close(pipe.refiner.state_dict()[k], v, rtol=0, atol=0)
    z = torch.randn(2, 48, 8, 8)
    texts = pipe.encode_prompt(["make the table dark wood", "make the t red"])
    torch.testing.assert_close(pipe.refine(z, z, 500, texts), base.refine(z, z, 500), rtol=0, atol=0)

    torch.nn.init.normal_(pipe.refiner.text_film.weight, std=0.5)  # the text path has learned
    same_text = torch.cat([texts[:1], texts[:1]])
    a, b = pipe.refine(z[:1].repeat(2, 1, 1, 1), z[:1].repeat(2, 1, 1, 1), 500, texts).unbind(0)
    assert not torch.allclose(a, b)  # same residual and image, different instruction
    with pytest.raises(ValueError, match="text_embeds"):
        pipe.refiner(z, z, 500)
    loaded = EditPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "ed"))
    assert loaded.config.refiner_text
    torch.testing.assert_close(loaded.refine(z, z, 500, same_text), pipe.refine(z, z, 500, same_text))


def test_refiner_round_trips_through_save_and_load(tmp_path):
    from sim2real.editing.model import build_editor
    from sim2real.editing.pipeline import EditPipeline

    pipe = build_editor(
        EditorConfig(resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32, refiner_channels=8)
    )
    torch.nn.init.normal_(pipe.refiner.conv_out.weight, std=0.1)  # not the identity any more
    loaded = EditPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "ed"))
    assert loaded.refiner is not None
    for k, v in pipe.refiner.state_dict().items():
        torch.testing.assert_close(loaded.refiner.state_dict()[k], v)
    z = torch.randn(2, 48, 8, 8)
    torch.testing.assert_close(loaded.refine(z, z, 500), pipe.refine(z, z, 500))
    assert not torch.allclose(pipe.refine(z, z, 500), z)


def test_editor_folder_missing_its_refiner_is_a_clear_error(tmp_path):
    import shutil

    from sim2real.editing.model import build_editor
    from sim2real.editing.pipeline import EditPipeline
    from sim2real.errors import Sim2RealError

    cfg = EditorConfig(resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32, refiner_channels=8)
    folder = build_editor(cfg).save_pretrained(tmp_path / "ed")
    shutil.rmtree(folder / "refiner")
    with pytest.raises(Sim2RealError, match="incomplete editor folder"):
        EditPipeline.from_pretrained(folder)


def test_refiner_needs_the_unshuffle_codec_and_sample_prediction():
    with pytest.raises(ValueError, match="refiner"):
        EditorConfig(refiner_channels=8, codec="kl")
    with pytest.raises(ValueError, match="refiner"):
        EditorConfig(refiner_channels=8, prediction_type="epsilon")
    with pytest.raises(ValueError, match="train_modules"):
        PretrainEditorConfig(out="x", train_modules=["vae"])
    with pytest.raises(ValueError, match="refiner_text needs a refiner"):
        EditorConfig(refiner_text=True)


def test_a_refiner_width_that_contradicts_the_init_editor_is_a_clear_error(tmp_path):
    from sim2real.editing.model import build_editor
    from sim2real.errors import Sim2RealError

    ecfg = EditorConfig(
        resolution=32, codec_factor=4, unet_channels=[32, 32], text_dim=32, refiner_channels=8
    )
    build_editor(ecfg).save_pretrained(tmp_path / "init")
    cfg = _tiny_cfg(tmp_path / "run", style_prob=0.0, init=str(tmp_path / "init"), train_modules=["refiner"])
    cfg.editor.refiner_channels = 16  # the init editor's refiner is 8 wide
    with pytest.raises(Sim2RealError, match="already has a refiner of 8 channels"):
        setup(cfg)


def test_edit_metrics_pass_the_exact_target_and_fail_identity_and_noise():
    """The metric's sanity: the exact target rendering is a success on every held-out pair (also
    where the agent disk's anti-aliased rim mixes in the new table), the identity never moves the
    colour, and grey noise inside the edit region keeps the outside but misses the colour."""
    pairs = eval_pairs(80)  # pairs 60, 77 and 78 are such table+T edits
    inp, tgt, mask, labels = pairs["input"], pairs["target"], pairs["edit_mask"], pairs["labels"]
    exact = pair_metrics(inp, tgt, tgt, mask, labels)
    assert exact.success.all()
    assert (exact.psnr_outside_vs_input < 25).any()  # why the reference is the target
    same = pair_metrics(inp, inp.copy(), tgt, mask, labels)
    assert not (same.lab_ratio <= 0.5).any() and (same.boundary_f1 == 1).all()
    noise = np.where(mask[..., None], 128, inp).astype(np.uint8)
    grey = pair_metrics(inp, noise, tgt, mask, labels)
    assert np.median(grey.psnr_outside) > 25 and grey.success.mean() < 0.5


def test_eval_script_writes_metrics_per_pair_rows_and_a_paired_comparison(tmp_path, monkeypatch, capsys):
    import csv
    import runpy
    import sys

    out = tmp_path / "eval"
    argv = [
        "eval_base_editor.py",
        "--out",
        str(out),
        "--pairs",
        "2",
        "--setting",
        "2",
        "1.5",
        "1.5",
        "--words",
        "fine",
    ]
    root = Path(__file__).resolve().parents[1]
    monkeypatch.setattr(sys, "argv", [*argv, "--compare", str(root / "sim2real" / "assets" / "base_editor")])
    runpy.run_path(str(root / "scripts" / "eval_base_editor.py"), run_name="__main__")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert [r["editor"] for r in rows] == ["identity", "untrained", "base", "compare"]
    pairs = list(csv.DictReader(open(out / "pairs.csv")))
    assert len(pairs) == 4 * 2 and {p["pair"] for p in pairs} == {"0", "1"}
    assert {p["detail"] for p in pairs} == {"fine"} and "success_coarse_words" not in rows[0]
    assert rows[2]["success_fine_words"] == rows[2]["success"]
    base = [p for p in pairs if p["editor"] == "base"]
    assert float(rows[2]["success"]) == sum(int(p["success"]) for p in base) / 2
    # the same editor against itself: no pair differs
    assert "only base: 0, only compare: 0 (sign test p = 1.00)" in capsys.readouterr().out
    assert (out / "grid.png").exists()


def test_eval_script_measures_validation_pairs_on_request(tmp_path, monkeypatch):
    import csv
    import runpy
    import sys

    from sim2real.training.base_editor import eval_pairs
    from sim2real.training.editor_metrics import summary

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "eval_base_editor.py")
    out = tmp_path / "val"
    argv = ["x", "--out", str(out), "--pairs", "1", "--setting", "1", "1.5", "1.5", "--split", "validation"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(script, run_name="__main__")
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert {r["split"] for r in rows} == {"validation"} and rows[-1]["editor"] == "base"
    # what was measured are the validation pairs (seed 20 000), not the test pairs: the identity's
    # outside PSNR is the validation pair's, and differs from the test pair's
    psnr = {}
    for seed in (20_000, 10_000):
        p = eval_pairs(1, seed=seed)
        m = pair_metrics(p["input"], p["input"].copy(), p["target"], p["edit_mask"], p["labels"])
        psnr[seed] = summary(m)["psnr_outside_median"]
    assert psnr[20_000] != pytest.approx(psnr[10_000], abs=1e-3)
    assert float(rows[0]["psnr_outside_median"]) == pytest.approx(psnr[20_000], abs=1e-3)
    monkeypatch.setattr(sys, "argv", [*argv, "--sweep"])  # the sweep picks on validation pairs
    with pytest.raises(SystemExit):
        runpy.run_path(script, run_name="__main__")


def test_matte_composite_script_matches_the_full_evaluation_and_refuses_other_decoders(tmp_path, monkeypatch):
    import csv
    import runpy
    import sys

    root = Path(__file__).resolve().parents[1]
    common = ["--pairs", "3", "--setting", "2", "1.5", "1.5", "--words", "fine"]
    monkeypatch.setattr(sys, "argv", ["x", "--out", str(tmp_path / "full"), *common])
    runpy.run_path(str(root / "scripts" / "eval_base_editor.py"), run_name="__main__")
    full = {r["editor"]: r for r in csv.DictReader(open(tmp_path / "full" / "metrics.csv"))}["base"]

    script = str(root / "scripts" / "eval_matte_composite.py")
    out = tmp_path / "scores.csv"
    argv = ["x", "shipped", "--split", "test", *common, "--cache", str(tmp_path / "cache"), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*argv, "--toggle-rims", "--oracle"])
    runpy.run_path(script, run_name="__main__")
    rows = list(csv.DictReader(open(out)))
    assert [r["editor"] for r in rows] == ["shipped", "shipped", "exact shares", "exact shares"]
    assert {rows[0]["variant"], rows[1]["variant"]} == {"rim transfer on", "rim transfer off"}
    for key in ("success", "colour_ok", "outside_ok", "boundary_f1"):  # the same decodes, the same scores
        assert float(rows[0][key]) == pytest.approx(float(full[key]), abs=1e-4)
    cache = list((tmp_path / "cache").glob("*.npz"))
    assert len(cache) == 1  # decoded once, cached

    from sim2real.editing.model import build_editor

    other = build_editor(EditorConfig(matte_channels=[8, 8])).save_pretrained(tmp_path / "other")
    monkeypatch.setattr(sys, "argv", [argv[0], argv[1], str(other), *argv[2:]])
    with pytest.raises(SystemExit, match="decodes differently"):
        runpy.run_path(script, run_name="__main__")
    cache[0].write_bytes(b"not an npz")  # a damaged cache is named, not silently used
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="unreadable"):
        runpy.run_path(script, run_name="__main__")


def test_colour_head_script_scores_both_kinds_of_words_and_names_a_missing_editor(tmp_path, monkeypatch):
    import csv
    import runpy
    import sys

    script = str(Path(__file__).resolve().parents[1] / "scripts" / "eval_colour_head.py")
    out = tmp_path / "heads.csv"
    monkeypatch.setattr(sys, "argv", ["x", "shipped", "--pairs", "3", "--out", str(out)])
    runpy.run_path(script, run_name="__main__")
    rows = list(csv.DictReader(open(out)))
    assert [(r["editor"], r["words"]) for r in rows] == [("shipped", "coarse"), ("shipped", "fine")]
    assert all(0 <= float(r["colour_ok"]) <= 1 and float(r["iou_share"]) > 0.5 for r in rows)
    monkeypatch.setattr(sys, "argv", ["x", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="error: .*nope"):
        runpy.run_path(script, run_name="__main__")
