"""Drive `sim2real <command>` in-process, through the real CLI and config system."""

from __future__ import annotations

import sys


def run_cli(monkeypatch, *args) -> int:
    """Run `sim2real *args` as the console script does; return its exit code."""
    from sim2real.cli import main

    monkeypatch.setenv("SIM2REAL_PROGRESS", "0")
    monkeypatch.setattr(sys, "argv", ["sim2real", *map(str, args)])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0
