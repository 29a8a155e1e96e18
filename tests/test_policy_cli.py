"""`sim2real pretrain-policy` / `eval-policy` end to end through the real CLI and config system."""

from __future__ import annotations

import csv
import json
import sys

import pytest
import torch

from policies.checkpoint import load_policy
from policies.synthetic import write_synthetic_store

# small enough for seconds on a CPU; the architecture is the real one
TINY = [
    "policy.encoder_channels=[16,16,32,32]",
    "policy.encoder_blocks=[1,1,1,1]",
    "policy.num_keypoints=8",
    "policy.feature_dim=16",
    "policy.down_dims=[16,32]",
    "policy.diffusion_step_embed_dim=16",
    "policy.n_groups=4",
    "policy.num_inference_steps=2",
    "policy.batch_size=2",
    "policy.noise_samples_per_obs=1",
    "eval_batch_size=16",
    "val_windows=4",
]


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from sim2real.cli import main

    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    monkeypatch.setattr(sys, "argv", ["sim2real", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code or 0
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("stores")
    return write_synthetic_store(d / "sim.zarr", 2, length=12), write_synthetic_store(
        d / "real.zarr", 2, length=12, seed=1
    )


def run_cli(monkeypatch, capsys, *args) -> str:
    code, out, err = cli(monkeypatch, capsys, "pretrain-policy", *args, *TINY)
    assert code == 0, err
    return out


def test_pretrain_finetune_resume_then_evaluate_from_checkpoint(tmp_path, monkeypatch, capsys, stores):
    sim, real = stores
    run = tmp_path / "run"
    # 1. two steps, then one fine-tuning epoch on the real store
    run_cli(monkeypatch, capsys, "--train", sim, "--out", run, "steps=2", "log_every=1", "eval_every=1",
            f"finetune_real={real}", "finetune_eval_every=1")  # fmt: skip
    assert {"model.safetensors", "normalizer.json", "policy_config.json", "trainer.pt"} <= {
        p.name for p in (run / "checkpoint").iterdir()
    }
    rows = list(csv.DictReader(open(run / "finetune_curve.csv")))
    # one real episode is fine-tuned on (5 windows, batch 2 → 2 steps), the other held out; step 0 first
    assert [int(r["step"]) for r in rows] == [0, 1, 2] and all(float(r["mse"]) > 0 for r in rows)
    assert (run / "finetuned" / "checkpoint" / "model.safetensors").exists()

    # 2. the same command with more steps resumes from the checkpoint, then measures zero-shot MSE
    out = run_cli(
        monkeypatch, capsys, "--train", sim, "--out", run, "--eval-real", real, "steps=3", "log_every=1"
    )
    assert "zero_shot_mse" in out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3]
    assert any("val_mse" in r for r in records) and any("zero_shot_mse" in r for r in records)
    # the saved model is the EMA at the last step (not at the last periodic checkpoint)
    ema = torch.load(run / "checkpoint" / "trainer.pt", weights_only=False)["ema"]["shadow_params"]
    for a, b in zip(ema, load_policy(run)[0].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    zs = json.loads((run / "zero_shot.json").read_text())
    assert zs["n_windows"] == 2 * (12 - 16 + 7 + 2) and zs["zero_shot_mse"] > 0

    # 3. evaluation from the checkpoint (no training) gives the same number: the noise seed is fixed
    again = tmp_path / "again"
    run_cli(
        monkeypatch, capsys, "--train", sim, "--out", again, "--eval-real", real, "--init", run, "steps=0"
    )
    again_mse = json.loads((again / "zero_shot.json").read_text())["zero_shot_mse"]
    assert again_mse == pytest.approx(zs["zero_shot_mse"], rel=1e-5)

    # 4. closed loop in the simulator from the same checkpoint, with the random baseline
    code, out, err = cli(monkeypatch, capsys, "eval-policy", "--ckpt", run, "--episodes", "2", "--appearance", "tabletop",
                         "max_steps=9")  # fmt: skip
    assert code == 0, err
    report = json.loads((run / "eval.json").read_text())
    assert report["appearance"] == "tabletop" and len(report["policy"]["episodes"]) == 2
    assert [e["steps"] for e in report["policy"]["episodes"]] == [9, 9]  # two policy calls of Ta = 8
    assert 0 <= report["policy"]["mean_max_coverage"] <= 1 and "random" in report
    assert "mean max coverage" in out


def test_bad_inputs_exit_with_one_line(tmp_path, monkeypatch, capsys):
    bad = write_synthetic_store(tmp_path / "bad.zarr", 2, drop=("data/action",))
    code, out, err = cli(
        monkeypatch, capsys, "pretrain-policy", "--train", bad, "--out", tmp_path / "r", "steps=1", *TINY
    )
    assert (
        code == 2
        and err.strip().startswith("error:")
        and "data/action" in err
        and len(err.strip().splitlines()) == 1
    )
    code, _, err = cli(
        monkeypatch,
        capsys,
        "pretrain-policy",
        "--train",
        bad,
        "--out",
        tmp_path / "r",
        "policy.horizon=7",
        *TINY,
    )
    assert code == 2 and "horizon" in err
    code, _, err = cli(monkeypatch, capsys, "eval-policy", "--ckpt", tmp_path / "nothing", "--episodes", "1")
    assert code == 2 and "no policy checkpoint" in err
    code, _, err = cli(
        monkeypatch, capsys, "pretrain-policy", "--train", tmp_path / "nothing.zarr", "--out", tmp_path / "r"
    )
    assert code == 2 and "nothing.zarr" in err and len(err.strip().splitlines()) == 1


def test_repeated_nan_loss_stops_with_a_user_error(tmp_path, monkeypatch, capsys, stores):
    from policies.model import DiffusionPolicy

    monkeypatch.setattr(
        DiffusionPolicy, "compute_loss", lambda self, batch: torch.tensor(float("nan"), requires_grad=True)
    )
    sim, _ = stores
    code, _, err = cli(
        monkeypatch,
        capsys,
        "pretrain-policy",
        "--train",
        sim,
        "--out",
        tmp_path / "r",
        "steps=5",
        "max_nan_steps=3",
        *TINY,
    )
    assert code == 2 and "not finite for 3 steps" in err


@pytest.mark.slow
def test_rollout_loop_with_the_scripted_expert_reaches_the_goal():
    """The closed-loop machinery (reset seeds, stepping, coverage, success) with a policy known to work."""
    import numpy as np

    from envs.pusht.expert import ScriptedExpert
    from policies.rollout import make_envs, rollout, summarize

    envs = make_envs(2, "sim", 96)
    experts = [ScriptedExpert() for _ in envs]
    for i, e in enumerate(experts):
        e.reset(seed=100000 + i)

    def expert_policy(pixels, agent_pos):  # (B, 1, 2): one action per call, from the true state
        live = [i for i, env in enumerate(envs) if not done_flags[i]]
        return np.stack([[experts[i].act(envs[i].unwrapped.sim.state())] for i in live])

    done_flags = [False, False]
    # rollout() steps every live env; mark envs done as soon as rollout stops asking for them
    orig_step = [env.step for env in envs]
    for i, env in enumerate(envs):

        def step(a, i=i):
            out = orig_step[i](a)
            done_flags[i] = bool(out[2])
            return out

        env.step = step
    res = summarize(rollout(expert_policy, envs, [100000, 100001], n_obs_steps=2, max_steps=300))
    assert res["success_rate"] == 1.0 and res["mean_max_coverage"] > 0.95
