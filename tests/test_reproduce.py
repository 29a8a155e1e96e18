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
