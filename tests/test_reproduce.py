"""The reproduction script: stage bookkeeping (fast) and every stage end to end at smoke size (slow)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_sim2real.py"


def _module():
    spec = importlib.util.spec_from_file_location("reproduce_sim2real", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_stage_runs_once_then_skips_and_failed_stage_reruns(tmp_path):
    st = _module().Stages(tmp_path)
    counter = tmp_path / "count.txt"
    bump = [
        sys.executable,
        "-c",
        f"p='{counter}'; import os; n=int(open(p).read()) if os.path.exists(p) else 0; open(p,'w').write(str(n+1))",
    ]
    st.run("a", counter, bump)
    st.run("a", counter, bump)
    assert counter.read_text() == "1"
    with pytest.raises(subprocess.CalledProcessError):
        st.run("b", counter, [sys.executable, "-c", "raise SystemExit(3)"])
    assert not (tmp_path / ".done" / "b").exists()  # an interrupted/failed stage is not marked done
    records = [json.loads(line) for line in (tmp_path / "stages.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["skipped"]) for r in records] == [("a", False), ("a", True)]


@pytest.mark.slow
def test_smoke_preset_produces_every_figure_and_rerun_skips(tmp_path):
    out = tmp_path / "repro"
    cmd = [sys.executable, str(SCRIPT), "--out", str(out), "--preset", "smoke", "--threads", "1"]
    subprocess.run(cmd, check=True, capture_output=True)
    figs = out / "figures"
    for name in (
        "fig7_edits.png",
        "fig8_policy.csv",
        "fig8_policy.png",
        "table1/table.csv",
        "table1/sweep.png",
    ):
        assert (figs / name).stat().st_size > 0, name
    rows = (figs / "fig8_policy.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["random", "sim", "edited"]
    subprocess.run(cmd, check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
    n = len(records) // 2
    assert all(not r["skipped"] for r in records[:n]) and all(r["skipped"] for r in records[n:])


def test_seed_study_needs_a_run_folder_and_aggregates_finished_seeds(tmp_path):
    """bg_specialist_seeds.py: a folder without refs is a one-line error; finished seeds are not
    retrained, their Table 1 rows are collected into one CSV."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bg_specialist_seeds.py"
    bad = subprocess.run([sys.executable, script, "--run", tmp_path], capture_output=True, text=True)
    assert bad.returncode != 0 and "has no refs" in bad.stderr
    run = tmp_path / "run"
    (run / "refs").mkdir(parents=True)
    (run / "refs" / "ref_0.png").write_bytes(b"")
    (run / "sim.zarr").mkdir()
    cols = "method,canny_all,chamfer_all,l2_outside,style_ba_texture,dE_ba,psnr_to_target\n"
    for seed, de in ((1, 4.0), (2, 8.0)):  # finished: their table exists, so nothing is trained
        table = run / "seeds" / f"ed_s{seed}" / "table1" / "table.csv"
        table.parent.mkdir(parents=True)
        table.write_text(cols + "base:bg,0.02,1,0,0.5,6.0,18\n" + f"bg,0.01,0.5,0,0.5,{de},19\n")
    (tmp_path / "ed").mkdir()
    ok = subprocess.run(
        [sys.executable, script, "--run", run, "--base", tmp_path / "ed"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    rows = (run / "seeds" / "table1_bg_seeds.csv").read_text().splitlines()
    assert rows[0].startswith("base_editor,seed,method") and len(rows) == 4
    assert rows[1].startswith("ed,-,base:bg") and rows[2].split(",")[-2:] == ["4.0", "19"]
